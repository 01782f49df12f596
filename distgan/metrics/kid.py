"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic
polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets. Unlike FID it
is unbiased in the sample count, so its std says how far a difference can be trusted.

Float64 on the features' device; the subsets are drawn on the host with numpy's seeded
generator, so a number is the same on CPU and GPU and across versions of this code."""

from __future__ import annotations

import numpy as np
import torch


def _cubic_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a bᵀ / d + 1)³ in place: one product matrix and one copy, no temporaries per power."""
    k = a @ b.T
    k.div_(a.shape[1]).add_(1)
    base = k.clone()
    return k.mul_(k).mul_(base)


def subset_size_for(subset_size: int, n_real: int, n_fake: int, num_subsets: int) -> int:
    """Several subsets as large as the smaller set would all be that set, and their spread
    would read ~0: they get half of it instead (the estimate is unbiased at any size)."""
    m = min(subset_size, n_real, n_fake)
    return m // 2 if num_subsets > 1 and m == min(n_real, n_fake) else m


def kid(real, fake, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    real, fake = (torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t) for t in (real, fake))
    real, fake = real.to(torch.float64), fake.to(real.device, torch.float64)
    m = subset_size_for(subset_size, len(real), len(fake), num_subsets)
    if m < 2:
        raise ValueError(f"KID needs at least {2 if num_subsets == 1 else 4} samples on each side, got {len(real)} "
                         f"and {len(fake)}")
    rng = np.random.default_rng(seed)
    values = torch.empty(num_subsets, dtype=torch.float64, device=real.device)
    for i in range(num_subsets):
        x = fake[torch.from_numpy(rng.choice(len(fake), m, replace=False)).to(fake.device)]
        y = real[torch.from_numpy(rng.choice(len(real), m, replace=False)).to(real.device)]
        kxx, kyy, kxy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
        values[i] = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                     + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())
    return float(values.mean()), float(values.std(unbiased=False))
