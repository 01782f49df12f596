"""Does augmentation keep D from memorizing a small data set? `mnist` on 1,000 of the
embedded digits, no augmentation vs DiffAugment vs ADA, at equal steps, over seeds.

    .venv/bin/python bench/small_data.py [--seeds 0 1 2] [--steps 3000] [--digits 1000] [--set KEY=VALUE] [--trace]

Each run trains in this process (distgan's engine, loop and evaluator; no Ray) on the
first `--digits` of a seeded shuffle of the 5,000 embedded digits and is measured against
all 5,000 (so a G that copies its training digits is not rewarded). Printed per run as it
ends, then per method: the median best fd_lenet2k, the median r_t over the last
evaluation window, and the median step at which the distance bottomed; and each method's
median best distance as a ratio to no augmentation's, seed by seed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from distgan import presets
from distgan.config import parse_set
from distgan.data import prepare
from distgan.data.reader import epoch_batches, load_all
from distgan.engine import GANEngine
from distgan.loop import train
from distgan.metrics.evaluate import Evaluator

METHODS = {"none": {"aug.kind": "none"},
           "diffaug": {"aug.kind": "diffaug", "aug.policy": "translation"},
           "diffaug-tc": {"aug.kind": "diffaug", "aug.policy": "translation,cutout"},
           "ada": {"aug.kind": "ada", "aug.policy": "translation,cutout", "aug.ada_kimg": 20.0}}


def run(method: str, seed: int, steps: int, digits: int, data_dir: str, cache: str, sets: dict,
        trace: bool = False) -> dict:
    cfg = presets.get("mnist").with_overrides({**sets, **METHODS[method], "train.steps": steps,
                                                "train.eval_every": 250, "train.seed": seed,
                                                "stop.saturation_evals": 0})
    x, y, info = load_all(data_dir, raw=True)
    keep = np.random.default_rng(seed).permutation(len(x))[:digits]
    evaluator = Evaluator.build(cfg, info, torch.device("cpu"), cache_dir=cache)
    engine = GANEngine.from_config(cfg)
    batches = epoch_batches(x.numpy()[keep], y.numpy()[keep], cfg.train.batch_size, seed)
    t0 = time.perf_counter()

    def show(m: dict) -> None:
        if trace:
            print(f"  {method} seed {seed} step {int(m['step'])}: {evaluator.fd_key} {m[evaluator.fd_key]:.2f}, "
                  f"r_t {m['r_t']:.2f}, p {m.get('aug_p', float('nan')):.2f}", flush=True)

    history = train(engine, batches, cfg, evaluator, show, progress=False)
    best = min(history, key=lambda h: h[evaluator.fd_key])
    return {"method": method, "seed": seed, "best": best[evaluator.fd_key], "best_step": int(best["step"]),
            "final": history[-1][evaluator.fd_key], "r_t": history[-1]["r_t"],
            "p": history[-1].get("aug_p", float("nan")), "s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--digits", type=int, default=1000)
    ap.add_argument("--methods", nargs="+", default=["none", "diffaug", "ada"], choices=list(METHODS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run (e.g. a stronger D: --set model.d_width=64)")
    ap.add_argument("--trace", action="store_true", help="print every evaluation")
    a = ap.parse_args()
    sets = parse_set(a.set)
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare.mnist_embedded(f"{tmp}/data")
        for seed in a.seeds:
            for method in a.methods:
                r = run(method, seed, a.steps, a.digits, f"{tmp}/data", f"{tmp}/stats", sets, a.trace)
                rows.append(r)
                print(f"{method:8s} seed {seed}: best fd_lenet2k {r['best']:.2f} at step {r['best_step']}, final "
                      f"{r['final']:.2f}, r_t {r['r_t']:.2f}, p {r['p']:.2f} ({r['s']:.0f} s)", flush=True)
    print(f"\n{a.digits} digits, {a.steps} steps, seeds {a.seeds}" + (f", {' '.join(a.set)}" if a.set else ""))
    print("| method | median best fd_lenet2k | median final | median r_t (end) | median best step | "
          "best / none's, per seed |")
    print("|---|---|---|---|---|---|")
    base = {r["seed"]: r["best"] for r in rows if r["method"] == "none"}
    for method in a.methods:
        mine = [r for r in rows if r["method"] == method]
        ratios = [r["best"] / base[r["seed"]] for r in mine if r["seed"] in base]
        print(f"| {method} | {statistics.median(r['best'] for r in mine):.2f} | "
              f"{statistics.median(r['final'] for r in mine):.2f} | {statistics.median(r['r_t'] for r in mine):.2f} | "
              f"{statistics.median(r['best_step'] for r in mine):.0f} | {' '.join(f'{q:.2f}' for q in ratios)} |")


if __name__ == "__main__":
    main()
