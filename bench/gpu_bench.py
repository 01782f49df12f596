"""Engine throughput and FID time on one device, with plain torch (no Ray, MLflow or Optuna).

    python bench/gpu_bench.py                       # CUDA: cifar10_dcgan and celeba64 at bf16, fid10k
    python bench/gpu_bench.py --device cpu --steps 3 --batch 8 --fid-n 64 --amp off   # a smoke run

Per preset: GANEngine steps per second x batch = images/s (n_D D updates + one G update
per step, timed after warm-up, synchronized), on random batches of the preset's shape (the
engine is measured, not the input pipeline). Then the time of one FID: generating fid-n
samples with G_ema, Inception features (the standard TF-2015 weights, TF-exact resize) and
the Fréchet distance to the statistics of a second set.
"""

from __future__ import annotations

import argparse
import time

import torch

from distgan import presets
from distgan.engine import GANEngine
from distgan.metrics import detectors
from distgan.metrics.detectors import batched_features
from distgan.metrics.evaluate import EVAL_SEED, fixed_latents
from distgan.metrics.frechet import feature_stats, frechet_distance


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_images_per_s(preset: str, device: torch.device, steps: int, batch: int | None, amp: str,
                        warmup: int) -> tuple[float, GANEngine]:
    cfg = presets.get(preset).with_overrides({"train.amp": amp, **({"train.batch_size": batch} if batch else {})})
    engine = GANEngine.from_config(cfg, device)
    m = cfg.model
    b = cfg.train.batch_size * cfg.train.n_d
    x = torch.rand(b, m.channels, m.resolution, m.resolution, device=device) * 2 - 1
    y = torch.randint(0, m.num_classes, (b,), device=device)
    for _ in range(warmup):
        engine.step(x, y)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step(x, y)
    sync(device)
    return steps * cfg.train.batch_size / (time.perf_counter() - t0), engine


def fid_seconds(engine: GANEngine, n: int, batch: int, detector: detectors.Detector) -> float:
    """Wall time of one FID of n generated samples, through the pieces evaluate() uses:
    batched generation + features, then statistics and the Fréchet distance."""
    G = engine.G_ema
    z, y = fixed_latents(n, G.z_dim, G.num_classes, EVAL_SEED)
    reference = feature_stats(batched_features(engine.generate, z.flip(0), y, detector, batch)[0])
    sync(engine.device)
    t0 = time.perf_counter()
    feats, _ = batched_features(engine.generate, z, y, detector, batch)
    fid = frechet_distance(*feature_stats(feats), *reference)
    sync(engine.device)
    assert fid == fid, "FID is NaN"
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--presets", nargs="+", default=["cifar10_dcgan", "celeba64"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, help="override the preset's batch size")
    p.add_argument("--amp", default="bf16", choices=["bf16", "off"])
    p.add_argument("--fid-n", type=int, default=10000)
    p.add_argument("--fid-batch", type=int, default=500)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for preset in a.presets:
        ips, engine = engine_images_per_s(preset, device, a.steps, a.batch, a.amp, min(a.warmup, a.steps))
        det = detectors.build("inception", (engine.cfg.model.channels, engine.cfg.model.resolution,
                                            engine.cfg.model.resolution), device=device)
        rows.append({"preset": preset, "img_per_s": ips,
                     "fid_s": fid_seconds(engine, a.fid_n, min(a.fid_batch, a.fid_n), det)})
    print(f"device {name}, torch {torch.__version__}, amp {a.amp}, {a.steps} timed steps, FID of {a.fid_n} samples")
    print(f"{'preset':<16}{'img/s':>10}{'fid time (s)':>14}")
    for r in rows:
        print(f"{r['preset']:<16}{r['img_per_s']:>10.0f}{r['fid_s']:>14.1f}")
    return rows


if __name__ == "__main__":
    main()
