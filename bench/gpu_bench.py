"""The engine and one evaluation on one device, with plain torch (no Ray, MLflow or Optuna):
how much each option of a step near the hardware buys, side by side in one run.

    python bench/gpu_bench.py                              # CUDA: cifar10_dcgan and celeba64, bf16, fid10k
    python bench/gpu_bench.py --device cpu --steps 3 --warmup 1 --batch 8 --fid-n 64 --amp off --variants eager all

Per preset and variant: GANEngine steps x batch = real images/s (n_D D updates + one G update
per step, timed after warm-up, synchronized), on uint8 batches of the preset's shape handed
over from pinned host memory (normalized on the device, as a worker does). Variants: eager
(every option off), each option alone (channels_last, fused_adam, cudnn_benchmark), all
of them (the CUDA default), and all + torch.compile of the D and G loss computations. Then
the wall time of one evaluation of --fid-n samples with the Inception detector (the
standard TF-2015 weights, TF-exact resize, TF32 off): generation, features, statistics and
the Fréchet distance (the default metrics), then the same with KID and PRDC added.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from distgan import presets
from distgan.data.schema import DatasetInfo
from distgan.engine import GANEngine
from distgan.metrics import detectors
from distgan.metrics.evaluate import Evaluator
from distgan.metrics.frechet import feature_stats
from distgan.metrics.stats import RealStats

OPTIONS = ("channels_last", "fused_optim", "cudnn_benchmark")
VARIANTS = {"eager": {}, "channels_last": {"channels_last": "on"}, "fused_adam": {"fused_optim": "on"},
            "cudnn_benchmark": {"cudnn_benchmark": "on"}, "all": {k: "on" for k in OPTIONS},
            "compiled": {**{k: "on" for k in OPTIONS}, "compile": "on"}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_images_per_s(preset: str, variant: str, device: torch.device, steps: int, batch: int | None, amp: str,
                        warmup: int) -> float:
    options = {f"train.{k}": "off" for k in (*OPTIONS, "compile")}
    options.update({f"train.{k}": v for k, v in VARIANTS[variant].items()})
    cfg = presets.get(preset).with_overrides({"train.amp": amp, **options,
                                              **({"train.batch_size": batch} if batch else {})})
    torch.backends.cudnn.benchmark = False  # each variant sets it itself
    engine = GANEngine.from_config(cfg, device)
    m = cfg.model
    rows = cfg.train.batch_size * cfg.train.n_d
    x = torch.randint(0, 256, (rows, m.channels, m.resolution, m.resolution), dtype=torch.uint8)
    y = torch.randint(0, m.num_classes, (rows,))
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    for _ in range(warmup):
        engine.step(x, y)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        stats = engine.step(x, y)
    float(stats["loss_d"])  # the one host sync a log window has
    sync(device)
    return steps * rows / (time.perf_counter() - t0)


def evaluation_seconds(preset: str, device: torch.device, n: int, batch: int, metrics: list[str]) -> float:
    """One evaluation of n samples in Inception features against real statistics of n
    (random) images: what a trial spends at each eval_every."""
    cfg = presets.get(preset).with_overrides({"eval.num_samples": n, "eval.batch_size": batch, "eval.metrics": metrics,
                                              "eval.detector": "inception"})
    m = cfg.model
    engine = GANEngine.from_config(cfg, device)
    det = detectors.build("inception", (m.channels, m.resolution, m.resolution), device=device)
    reals = torch.rand(n, m.channels, m.resolution, m.resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1
    feats = torch.cat([det(reals[i:i + batch].to(device))[0] for i in range(0, n, batch)])
    mu, sigma = feature_stats(feats)
    real = RealStats(feats, mu, sigma, np.ones(max(1, m.num_classes)), np.zeros(0, np.int64), "bench")
    info = DatasetInfo("bench", "png", m.num_classes, m.resolution, m.resolution, m.channels, n, ())
    evaluator = Evaluator.build(cfg, info, device, real=real)
    sync(device)
    t0 = time.perf_counter()
    out = evaluator(engine.G_ema, index=None)
    sync(device)
    assert out[evaluator.fd_key] == out[evaluator.fd_key], "FID is NaN"
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--presets", nargs="+", default=["cifar10_dcgan", "celeba64"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
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
        for variant in a.variants:
            ips = engine_images_per_s(preset, variant, device, a.steps, a.batch, a.amp, min(a.warmup, a.steps))
            rows.append({"preset": preset, "variant": variant, "img_per_s": ips})
    fid = {}
    for preset in a.presets:
        batch = min(a.fid_batch, a.fid_n)
        fid[preset] = (evaluation_seconds(preset, device, a.fid_n, batch, ["fd", "modes"]),
                       evaluation_seconds(preset, device, a.fid_n, batch, ["fd", "modes", "kd", "prdc"]))
    print(f"device {name}, torch {torch.__version__}, amp {a.amp}, {a.steps} timed steps, evaluation of {a.fid_n} samples")
    print(f"{'preset':<16}{'variant':<17}{'real img/s':>12}{'vs eager':>10}")
    for r in rows:
        eager = next((q["img_per_s"] for q in rows if q["preset"] == r["preset"] and q["variant"] == "eager"), None)
        ratio = f"{r['img_per_s'] / eager:.2f}" if eager else "-"
        print(f"{r['preset']:<16}{r['variant']:<17}{r['img_per_s']:>12.0f}{ratio:>10}")
    print(f"{'preset':<16}{'fid (fd+modes) s':>18}{'+ kd + prdc s':>15}")
    for preset, (plain, full) in fid.items():
        print(f"{preset:<16}{plain:>18.1f}{full:>15.1f}")
        rows.append({"preset": preset, "fid_s": plain, "fid_full_s": full})
    return rows


if __name__ == "__main__":
    main()
