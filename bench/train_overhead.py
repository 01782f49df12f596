"""Ray Train overhead: images/s of the same model and batch in a plain PyTorch loop and
inside Ray Train (Ray Data streaming the Parquet), measured side by side in one run.

    .venv/bin/python bench/train_overhead.py [--preset mnist] [--steps 400] [--window 100]

Steady state only: the first window (start-up, Ray Data warm-up) is dropped; evaluation
time is excluded on both sides (the loop's img_per_s does not count it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import ray
import torch

from distgan import presets
from distgan.data import prepare
from distgan.data.reader import epoch_batches, load_all
from distgan.data.schema import inspect
from distgan.engine import GANEngine
from distgan.launch import await_real_stats, build_trainer, real_stats
from distgan.worker import WorkerSpec


def plain_loop(cfg, data_dir: str, threads: int, steps: int, window: int) -> float:
    torch.set_num_threads(threads)
    x, y, _ = load_all(data_dir)
    engine = GANEngine.from_config(cfg)
    batches = epoch_batches(x, y, cfg.train.batch_size * cfg.train.n_d, cfg.train.seed)
    rates = []
    for _ in range(steps // window):
        t = time.perf_counter()
        for _ in range(window):
            engine.step(*next(batches))
        rates.append(window * cfg.train.batch_size * cfg.train.n_d / (time.perf_counter() - t))
    return statistics.median(rates[1:])


def ray_run(cfg, data_dir: str, storage: str, workers: int) -> tuple[float, float, int]:
    cfg = cfg.with_overrides({"scaling.num_workers": workers})
    info = inspect(data_dir)
    spec = WorkerSpec(cfg, info, await_real_stats(real_stats(cfg, info, f"{storage}/stats")))
    result = build_trainer(spec, f"{storage}/overhead-{workers}").fit()
    df = result.metrics_dataframe.sort_values("step")
    return (statistics.median(df["img_per_s"].tolist()[1:]), statistics.median(df["data_wait_frac"].tolist()[1:]),
            int(df["torch_threads"].iloc[-1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="mnist")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--window", type=int, default=100)
    a = p.parse_args()
    cfg = presets.get(a.preset).with_overrides({"train.steps": a.steps, "train.eval_every": a.window,
                                                 "eval.num_samples": 500,
                                                 "train.keep_checkpoints": a.steps // a.window})
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = f"{tmp}/data"
        prepare.mnist_embedded(data_dir)
        ray.init(address="local", log_to_driver=False)
        ray1, wait1, threads = ray_run(cfg, data_dir, tmp, 1)
        ray2, wait2, _ = ray_run(cfg, data_dir, tmp, 2)
        plain = plain_loop(cfg, data_dir, threads, a.steps, a.window)
    print(f"preset {a.preset}, batch {cfg.train.batch_size} per worker, {threads} torch thread(s) per worker, "
          f"{ray.cluster_resources().get('CPU', 0):g} CPUs")
    print(f"plain PyTorch loop : {plain:8.0f} img/s")
    print(f"Ray Train 1 worker : {ray1:8.0f} img/s   ratio to plain {ray1 / plain:.3f}   "
          f"waiting for data {wait1:.0%} of the time")
    print(f"Ray Train 2 workers: {ray2:8.0f} img/s   ratio to 1 worker {ray2 / ray1:.3f} (global batch x2)   "
          f"waiting for data {wait2:.0%}")


if __name__ == "__main__":
    main()
