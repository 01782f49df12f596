"""Do InfoGAN codes learn to steer stroke width and slant, and what do they cost in quality?
`mnist` on the embedded digits, one process: no codes vs 2 continuous codes with the mutual
information term (λ = loss.info_weight) vs the same codes with λ = 0 (fed to G, never asked
for: what an arbitrary latent direction does), at equal steps.

    .venv/bin/python bench/latent_control.py [--steps 1500] [--seed 0] [--grid docs/infogan_vary.png]
        [--variants "unconditional, 10 categories"]

Printed per variant: the best fd_lenet2k, the ratio to no codes' (the issue's bound is 1.5),
and at that best checkpoint each code's |Spearman ρ| with ink, slant, height and width over
a sweep of the code (distgan.metrics.control); `--grid` writes the coded run's best
checkpoint's sweep grid (each block one code from -2 to 2, one row per class). The optional
variant "unconditional, 10 categories" drops the labels and adds a 10-valued categorical
code: its clustering accuracy against the LeNet detector's classes says whether the code
found the digits by itself.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from distgan import presets
from distgan.data import prepare
from distgan.data.reader import epoch_batches, load_all
from distgan.engine import GANEngine
from distgan.loop import train
from distgan.metrics.control import ATTRIBUTES
from distgan.metrics.evaluate import Evaluator
from distgan.plots import sample_grid

VARIANTS = {"no codes": {}, "codes": {"model.codes": 2}, "codes, λ=0": {"model.codes": 2, "loss.info_weight": 0.0},
            # no labels: can a 10-valued category find the digit classes by itself?
            "unconditional, 10 categories": {"model.conditional": False, "model.codes": 2,
                                             "model.code_categories": 10}}
DEFAULT = ["no codes", "codes", "codes, λ=0"]


def run(name: str, steps: int, seed: int, weight: float, data_dir: str, cache: str) -> dict:
    overrides = {**VARIANTS[name], "train.steps": steps, "train.seed": seed, "stop.saturation_evals": 0}
    if name in ("codes", "unconditional, 10 categories"):
        overrides["loss.info_weight"] = weight
    cfg = presets.get("mnist").with_overrides(overrides)
    x, y, info = load_all(data_dir, raw=True)
    evaluator = Evaluator.build(cfg, info, torch.device("cpu"), cache_dir=cache)
    engine = GANEngine.from_config(cfg)
    best: dict = {}

    def keep_best(m: dict) -> None:
        if not best or m[evaluator.fd_key] < best["metrics"][evaluator.fd_key]:
            best.update(metrics=dict(m), G=copy.deepcopy(engine.G_ema))

    t0 = time.perf_counter()
    train(engine, epoch_batches(x, y, cfg.train.batch_size, seed), cfg, evaluator, keep_best, progress=False)
    return {"name": name, "metrics": best["metrics"], "G": best["G"], "latent": engine.latent,
            "fd_key": evaluator.fd_key, "s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--info-weight", type=float, default=0.1, help="λ of the coded run")
    ap.add_argument("--variants", nargs="+", default=DEFAULT, choices=list(VARIANTS))
    ap.add_argument("--grid", help="write the coded run's sweep grid here (PNG)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare.mnist_embedded(f"{tmp}/data")
        for name in a.variants:
            r = run(name, a.steps, a.seed, a.info_weight, f"{tmp}/data", f"{tmp}/stats")
            results.append(r)
            m = r["metrics"]
            print(f"{name}: best {r['fd_key']} {m[r['fd_key']]:.2f} at step {int(m['step'])} ({r['s']:.0f} s)", flush=True)
            if name == "codes" and a.grid:
                sample_grid(r["G"], "dcgan", 100, a.grid, torch.device("cpu"), latent=r["latent"])
                print(f"wrote {a.grid}")
    base = next((r["metrics"][r["fd_key"]] for r in results if r["name"] == "no codes"), None)
    print(f"\nmnist, {a.steps} steps, seed {a.seed}, λ {a.info_weight}")
    print("| variant | best fd_lenet2k | / no codes' | code | " + " | ".join(f"|ρ| {x}" for x in ATTRIBUTES) + " |")
    print("|---|---|---|---|" + "---|" * len(ATTRIBUTES))
    for r in results:
        m, fd = r["metrics"], r["metrics"][r["fd_key"]]
        ratio = f"{fd / base:.2f}" if base else "-"
        codes = range(1, r["latent"].codes + 1) or [None]
        for c in codes:
            cells = [f"{m[f'info_rho_c{c}_{x}']:.2f}" for x in ATTRIBUTES] if c else ["-"] * len(ATTRIBUTES)
            print(f"| {r['name']} | {fd:.2f} | {ratio} | {f'c{c}' if c else '-'} | " + " | ".join(cells) + " |")
    for r in results:
        if "info_acc" in r["metrics"]:
            print(f"{r['name']}: the category's clustering accuracy against LeNet's classes "
                  f"{r['metrics']['info_acc']:.3f} (chance 0.1)")


if __name__ == "__main__":
    main()
