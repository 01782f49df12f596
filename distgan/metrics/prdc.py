"""Improved precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Precision: share of fakes inside the real manifold (union of k-NN balls of real samples) —
quality. Recall: share of reals inside the fake manifold — diversity; mode collapse lowers
recall while precision stays high. Density and coverage are the outlier-robust variants.
"""

from __future__ import annotations

import numpy as np
import torch


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _ball_counts(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """counts[i] = how many balls (centres, radii) contain query i."""
    counts = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i:i + chunk], centres)
        counts.append((d <= radii[None, :]).sum(1))
    return torch.cat(counts)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per side")
    r_rad, f_rad = _kth_radius(r, k, chunk), _kth_radius(f, k, chunk)
    fake_in_real = _ball_counts(f, r, r_rad, chunk)
    real_in_fake = _ball_counts(r, f, f_rad, chunk)
    # coverage: real samples whose own k-NN ball contains at least one fake
    nearest_fake = torch.cat([torch.cdist(r[i:i + chunk], f).min(1).values for i in range(0, len(r), chunk)])
    return {"precision": float((fake_in_real > 0).float().mean()),
            "recall": float((real_in_fake > 0).float().mean()),
            "density": float(fake_in_real.float().sum() / (k * len(f))),
            "coverage": float((nearest_fake <= r_rad).float().mean())}
