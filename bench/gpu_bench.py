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

Correctness (--check N, per model family): each option trains N steps from the same
initial weights on the same batches as eager fp32 (every option off, amp off), and the
table gives the largest loss difference over the N steps (relative to max(1, |loss|)) and
the relative L2 distance of G's and D's weights at the end, against a stated tolerance:
TOLERANCE for the fp32 options (the same arithmetic in another order), looser for bf16.
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


#: (loss, weights) tolerances of --check: fp32 options reorder sums (Adam, dividing by sqrt(v), turns
#: that into up to ~lr on a weight whose gradient is near 0); bf16 keeps 8 mantissa bits.
TOLERANCE = {"fp32": (1e-3, 1e-3), "bf16": (5e-2, 1e-2)}
CHECKS = {"bf16": {"train.amp": "bf16"}, "channels_last": {"train.channels_last": "on"},
          "fused_adam": {"train.fused_optim": "on"}, "compiled": {"train.compile": "on"}}


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


def train_steps(cfg, device: torch.device, steps: int) -> tuple[list[tuple[float, float]], torch.Tensor]:
    """(loss_d, loss_g) per step and every weight of G and D, flattened, after `steps` steps."""
    engine = GANEngine.from_config(cfg, device)
    m, rows = cfg.model, cfg.train.batch_size * cfg.train.n_d
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        x = torch.randint(0, 256, (rows, m.channels, m.resolution, m.resolution), dtype=torch.uint8, generator=g)
        y = torch.randint(0, max(m.num_classes, 1), (rows,), generator=g)
        s = engine.step(x, y)
        losses.append((float(s["loss_d"]), float(s["loss_g"])))
    weights = torch.cat([p.detach().float().flatten().cpu() for net in (engine.G, engine.D) for p in net.parameters()])
    return losses, weights


def check_options(preset: str, device: torch.device, steps: int, batch: int | None, checks: list[str]) -> list[dict]:
    """Each option against eager fp32 over the same steps (see the module's docstring)."""
    off = {f"train.{k}": "off" for k in (*OPTIONS, "compile", "amp")}
    base = presets.get(preset).with_overrides({**off, **({"train.batch_size": batch} if batch else {})})
    ref_losses, ref_w = train_steps(base, device, steps)
    rows = []
    for name in checks:
        losses, w = train_steps(base.with_overrides(CHECKS[name]), device, steps)
        loss_diff = max(abs(a - b) / max(1.0, abs(b)) for pair, ref in zip(losses, ref_losses) for a, b in zip(pair, ref))
        weight_diff = float((w - ref_w).norm() / ref_w.norm())
        tol = TOLERANCE["bf16" if name == "bf16" else "fp32"]
        rows.append({"preset": preset, "check": name, "loss_diff": loss_diff, "weight_diff": weight_diff,
                     "tolerance": tol, "ok": loss_diff <= tol[0] and weight_diff <= tol[1]})
    return rows


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
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="none: no speed rows")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, help="override the preset's batch size")
    p.add_argument("--amp", default="bf16", choices=["bf16", "off"])
    p.add_argument("--fid-n", type=int, default=10000, help="0: no evaluation timing")
    p.add_argument("--fid-batch", type=int, default=500)
    p.add_argument("--check", type=int, default=20, metavar="N", help="steps of the correctness check (0: none)")
    p.add_argument("--check-presets", nargs="+", default=["cifar10_dcgan", "cifar10_resnet", "celeba64_stylegan2"],
                   help="one per model family")
    p.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for preset in a.presets:
        for variant in a.variants:
            ips = engine_images_per_s(preset, variant, device, a.steps, a.batch, a.amp, min(a.warmup, a.steps))
            rows.append({"preset": preset, "variant": variant, "img_per_s": ips})
    fid = {}
    for preset in a.presets if a.fid_n else []:
        batch = min(a.fid_batch, a.fid_n)
        fid[preset] = (evaluation_seconds(preset, device, a.fid_n, batch, ["fd", "modes"]),
                       evaluation_seconds(preset, device, a.fid_n, batch, ["fd", "modes", "kd", "prdc"]))
    print(f"device {name}, torch {torch.__version__}, amp {a.amp}, {a.steps} timed steps, evaluation of {a.fid_n} samples")
    print(f"{'preset':<16}{'variant':<17}{'real img/s':>12}{'vs eager':>10}" if rows else "(no speed rows)")
    for r in rows:
        eager = next((q["img_per_s"] for q in rows if q["preset"] == r["preset"] and q["variant"] == "eager"), None)
        ratio = f"{r['img_per_s'] / eager:.2f}" if eager else "-"
        print(f"{r['preset']:<16}{r['variant']:<17}{r['img_per_s']:>12.0f}{ratio:>10}")
    if fid:
        print(f"{'preset':<16}{'fid (fd+modes) s':>18}{'+ kd + prdc s':>15}")
    for preset, (plain, full) in fid.items():
        print(f"{preset:<16}{plain:>18.1f}{full:>15.1f}")
        rows.append({"preset": preset, "fid_s": plain, "fid_full_s": full})
    if a.check:
        checks = [r for preset in a.check_presets for r in check_options(preset, device, a.check, a.batch, a.checks)]
        print(f"correctness: {a.check} steps against eager fp32 (tolerance: loss, weights)")
        print(f"{'preset':<23}{'option':<15}{'max loss diff':>14}{'weight diff':>13}{'tolerance':>16}  ok")
        for r in checks:
            tol = f"{r['tolerance'][0]:.0e}, {r['tolerance'][1]:.0e}"
            print(f"{r['preset']:<23}{r['check']:<15}{r['loss_diff']:>14.2e}{r['weight_diff']:>13.2e}{tol:>16}  "
                  f"{'yes' if r['ok'] else 'NO'}")
        rows.extend(checks)
    return rows


if __name__ == "__main__":
    main()
