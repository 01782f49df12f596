"""Generation-side evaluation: a fixed latent set -> detector features -> every metric.

Samples are generated in batches and only features are kept, so 50k samples never sit in
memory as images. The latent set is a pure function of (seed, n), so successive
evaluations of one trial measure the same z's and their FIDs are comparable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from distgan.metrics.detectors import Detector, batched_features
from distgan.metrics.frechet import feature_stats, frechet_distance
from distgan.metrics.kid import kid
from distgan.metrics.modes import class_coverage, mixture_coverage
from distgan.metrics.prdc import prdc
from distgan.metrics.stats import RealStats

#: FID reported for a generator whose samples are not finite: large and finite, because ASHA
#: never stops a NaN trial and Optuna drops NaN objectives (DESIGN.md).
DIVERGED_FID = 1e4
#: Seed of the fixed evaluation latents.
EVAL_SEED = 12345


def protocol(n: int) -> str:
    """The sample count as metric names carry it: 2000 -> '2k', 500 -> '500'."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def fid_name(n: int) -> str:
    """The FID metric of the n-sample protocol: every place that reads or writes it uses this."""
    return f"fid{protocol(n)}"


def fixed_latents(n: int, z_dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents for evaluation; conditional models get balanced labels (i mod K)."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % num_classes if num_classes else None
    return z, y


def compute_metrics(fake: np.ndarray, fake_pred: np.ndarray | None, real: RealStats, detector: Detector,
                    prdc_k: int = 5, kid_subsets: int = 100, mixture: tuple[np.ndarray, float] | None = None,
                    ) -> dict[str, float]:
    """Every metric of one evaluation; FID and KID are named for their protocol (sample count)."""
    n = len(fake)
    p = protocol(n)
    mu, sigma = feature_stats(fake)
    kid_mean, kid_std = kid(real.features, fake, num_subsets=kid_subsets)
    out = {fid_name(n): frechet_distance(mu, sigma, real.mu, real.sigma),
           f"kid{p}": kid_mean, f"kid{p}_std": kid_std,
           **prdc(real.features, fake, k=prdc_k)}
    if fake_pred is not None and detector.has_classes:
        out.update(class_coverage(fake_pred, len(real.class_hist), real.class_hist))
    if mixture is not None:
        out.update(mixture_coverage(fake, *mixture))
    return out


def evaluate(generator: torch.nn.Module, n: int, batch: int, detector: Detector, real: RealStats,
             device: torch.device | str = "cpu", mixture: tuple[np.ndarray, float] | None = None,
             rank: int = 0, world_size: int = 1, gather: Callable[[np.ndarray], np.ndarray] | None = None,
             seed: int = EVAL_SEED, progress: bool = False) -> dict[str, float]:
    """Metrics of a generator (G_ema) on the fixed latent set. Under DDP each rank makes its
    contiguous share and `gather` concatenates features in rank order, so every rank
    computes the numbers one process would."""
    z, y = fixed_latents(n, generator.z_dim, generator.num_classes, seed)
    share = slice(rank * n // world_size, (rank + 1) * n // world_size)
    was_training = generator.training
    generator.eval()

    @torch.no_grad()
    def generate(zb, yb):
        out = generator(zb.to(device), yb.to(device) if yb is not None else None).float()
        return out.clamp(-1, 1) if out.dim() == 4 else out

    feats, preds = batched_features(generate, z[share], y[share] if y is not None else None, detector, batch,
                                      progress)
    generator.train(was_training)
    if gather is not None:
        feats = gather(feats)
        preds = gather(preds) if preds is not None else None
    if not np.isfinite(feats).all():
        return {fid_name(n): DIVERGED_FID, "diverged": 1.0}
    return {**compute_metrics(feats, preds, real, detector, mixture=mixture), "diverged": 0.0}
