"""How often a 2-D mixture preset (ring8, grid25) finds its modes: the preset trained from
many seeds (the seed draws G's and D's first weights and their latents), beside each
`--variant` of it, side by side in one run. A collapsed run is one whose samples sit
together between the modes while its losses look healthy: only coverage shows it.

    .venv/bin/python bench/ring8_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --variant optim.beta1=0.5

Prints each run as it ends, then per arm how many seeds found the modes (at least 7 of 8
modes for ring8, 90 % for grid25, and half the samples near one), the median of the modes
covered and of the share of samples near a mode.
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from distgan import presets
from distgan.config import parse_set
from distgan.data.prepare import mixture_arrays, mixture_centres
from distgan.engine import GANEngine
from distgan.metrics.modes import mixture_coverage


def modes_after(preset: str, overrides: dict, steps: int) -> tuple[float, float, int]:
    """Modes covered, the share of samples near a mode, and the modes there are, after
    `steps` steps of the preset on 20,000 points."""
    cfg = presets.get(preset).with_overrides({"train.steps": steps, **overrides})
    points, _ = mixture_arrays(cfg.data.builtin, 20000, seed=0)
    data = torch.from_numpy(points)
    engine = GANEngine.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(data), (cfg.train.batch_size * cfg.train.n_d,), generator=g)
        engine.step(data[idx])
    z = torch.randn(2000, cfg.model.z_dim, generator=torch.Generator().manual_seed(1))
    centres, std = mixture_centres(cfg.data.builtin)
    cov = mixture_coverage(engine.generate(z).numpy(), centres, std)
    return cov["modes_covered"], cov["hq_share"], len(centres)


def found(modes: float, hq: float, total: int) -> bool:
    return modes >= (7 if total == 8 else 0.9 * total) and hq >= 0.5


def _one_thread() -> None:
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> dict[str, list[tuple[int, float, float, int]]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ring8", choices=["ring8", "grid25"])
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--steps", type=int, default=None, help="default: the preset's")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="an arm beside the preset (repeatable)")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    steps = a.steps or presets.get(a.preset).train.steps
    arms = {"preset": {}, **{v: parse_set(v.split(",")) for v in a.variant}}
    rows: dict[str, list[tuple[int, float, float, int]]] = {arm: [] for arm in arms}
    with ProcessPoolExecutor(a.jobs, initializer=_one_thread) as pool:
        runs = {pool.submit(modes_after, a.preset, {**over, "train.seed": s}, steps): (arm, s)
                for arm, over in arms.items() for s in a.seeds}
        for f in as_completed(runs):
            arm, s = runs[f]
            modes, hq, total = f.result()
            rows[arm].append((s, modes, hq, total))
            print(f"{arm} seed {s}: {modes:.0f} of {total} modes, {hq:.2f} of samples near one", flush=True)
    print(f"\n{a.preset}, {steps} steps, seeds {a.seeds}")
    for arm, runs in rows.items():
        runs.sort()
        ok = [s for s, m, hq, total in runs if found(m, hq, total)]
        missed = [s for s in a.seeds if s not in ok]
        print(f"{arm:<24} found the modes on {len(ok)} of {len(runs)} seeds (missed: {missed or 'none'}); median: "
              f"{statistics.median(m for _, m, _, _ in runs):.1f} modes, "
              f"{statistics.median(hq for _, _, hq, _ in runs):.2f} of samples near one")
    return rows


if __name__ == "__main__":
    main()
