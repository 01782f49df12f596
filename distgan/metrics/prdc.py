"""Improved precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Precision: share of fakes inside the real manifold (union of k-NN balls of real samples) —
quality. Recall: share of reals inside the fake manifold — diversity; mode collapse lowers
recall while precision stays high. Density and coverage are the outlier-robust variants.
Float64 on the features' device (a radius comparison is a threshold: float32 rounding would
move samples across it), in chunks so no N×N matrix is held whole. A ball is open (`<`,
as in the reference implementation of Naeem et al.).
"""

from __future__ import annotations

import numpy as np
import torch


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for i in range(0, len(x), chunk):
        radii.append(torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values)  # +1: the point itself
    return torch.cat(radii)


def prdc(real, fake, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    r = torch.as_tensor(np.asarray(real) if not isinstance(real, torch.Tensor) else real).to(torch.float64)
    f = torch.as_tensor(np.asarray(fake) if not isinstance(fake, torch.Tensor) else fake).to(r.device, torch.float64)
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per side")
    r_rad, f_rad = _kth_radius(r, k, chunk), _kth_radius(f, k, chunk)
    fake_in_real, real_in_fake, nearest_fake = [], torch.zeros(len(r), dtype=torch.long, device=r.device), []
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i:i + chunk], r)  # fakes x reals
        fake_in_real.append((d < r_rad[None, :]).sum(1))
        real_in_fake += (d < f_rad[i:i + chunk, None]).sum(0)
        nearest_fake.append(d.min(0).values)
    counts = torch.cat(fake_in_real)
    nearest = torch.stack(nearest_fake).min(0).values  # each real's nearest fake
    return {"precision": float((counts > 0).double().mean()),
            "recall": float((real_in_fake > 0).double().mean()),
            "density": float(counts.double().sum() / (k * len(f))),
            "coverage": float((nearest < r_rad).double().mean())}
