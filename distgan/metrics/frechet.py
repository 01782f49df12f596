"""The Fréchet distance between two Gaussians, the F in FID.

d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½). With S1 = L Lᵀ, the eigenvalues of
Lᵀ S2 L (symmetric, PSD) are those of S1 S2, so tr((S1 S2)^½) = Σ sqrt(eig(Lᵀ S2 L)):
one factorization and one symmetric eigenvalue solve replace scipy's general sqrtm
(the pytorch-fid formula), ~5x faster at 2048-d, real by construction, and it runs on the
GPU when the statistics live there.

A distance measured on N samples is itself noisy: `bootstrap_se` is its standard error over
the generated side (the real statistics are the fixed reference every evaluation shares), so
a change smaller than it is no change (the scheduler's noise margins).
"""

from __future__ import annotations

import numpy as np
import torch


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Float64 throughout; a singular S1 (fewer samples than dimensions) is factored through
    its eigendecomposition instead of Cholesky, so the result stays exact and finite."""
    mu1, sigma1, mu2, sigma2 = (_as_f64(a) for a in (mu1, sigma1, mu2, sigma2))
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics disagree in shape: sigma {tuple(sigma1.shape)}/{tuple(sigma2.shape)}")
    return _distance(mu1, _psd_factor(sigma1), torch.trace(sigma1), mu2, sigma2)


def features_distance(features, mu2, sigma2, weights: torch.Tensor | None = None) -> float:
    """The distance of N feature vectors (each counted `weights` times: a bootstrap resample)
    to the statistics (mu2, sigma2). With N <= D their covariance is (scaled) centred
    features times their transpose: that D x N factor makes the eigenvalue solve N x N
    instead of D x D (16 Inception features on a 2-core CPU: 0.007 s instead of 1.9 s)."""
    f = _as_f64(features)
    n, d = f.shape
    w = torch.ones(n, dtype=f.dtype, device=f.device) if weights is None else weights.to(f)
    mu = w @ f / n
    scaled = (f - mu) * (w / (n - 1)).sqrt()[:, None]  # S1 = scaled^T scaled
    if n <= d:
        return _distance(mu, scaled.T, (scaled * scaled).sum(), mu2, sigma2)
    sigma = scaled.T @ scaled
    return _distance(mu, _psd_factor(sigma), torch.trace(sigma), mu2, sigma2)


def _distance(mu1: torch.Tensor, factor: torch.Tensor, trace1: torch.Tensor, mu2, sigma2) -> float:
    """From a factor L of S1 (L Lᵀ = S1, D x k) and tr(S1)."""
    mu2, sigma2 = (_as_f64(a).to(factor.device) for a in (mu2, sigma2))
    d = mu1.numel()
    if mu2.shape != mu1.shape or sigma2.shape != (d, d) or factor.shape[0] != d:
        raise ValueError(f"statistics disagree in shape: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                         f"sigma ({d}, {d})/{tuple(sigma2.shape)}")
    middle = factor.T @ sigma2 @ factor
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = eig.clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    d2 = diff @ diff + trace1 + torch.trace(sigma2) - 2 * tr_covmean
    value = float(d2)
    if not np.isfinite(value):
        raise FloatingPointError("Fréchet distance is not finite: the statistics contain NaN or inf")
    return max(value, 0.0)  # a distance; rounding can leave -1e-6 when the Gaussians coincide


def _as_f64(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.to(torch.float64)


def _psd_factor(sigma: torch.Tensor) -> torch.Tensor:
    """L with L Lᵀ = sigma: Cholesky when positive definite, else V·sqrt(max(λ, 0))."""
    L, info = torch.linalg.cholesky_ex(sigma)
    if int(info) == 0:
        return L
    lam, V = torch.linalg.eigh((sigma + sigma.T) / 2)
    return V * lam.clamp(min=0).sqrt()


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (np.cov's convention, as the reference), float64, on the
    features' own device: statistics of GPU features never visit the host."""
    f = _as_f64(features)
    if f.dim() != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {tuple(f.shape)}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def bootstrap_se(features, mu_real, sigma_real, rounds: int, seed: int = 0) -> float:
    """The standard deviation of the distance over `rounds` resamples (with replacement) of the
    generated features; each resample is a multinomial weighting, so no copy of the features is made."""
    f = _as_f64(features)
    n = len(f)
    gen = torch.Generator().manual_seed(seed)
    values = [features_distance(f, mu_real, sigma_real, torch.bincount(torch.randint(n, (n,), generator=gen), minlength=n))
              for _ in range(rounds)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
