"""Real-data feature statistics, cached where every node of a job can read them.

Keyed by a hash of (data content, detector id incl. its weights, sample count, input size,
sampling seed); stored as .npz with a checksum at a local path or on the job's object
storage, written whole or not at all (temp file + os.replace, or one PUT), so concurrent
writers can only ever leave a whole file. A file that fails its checksum is recomputed,
never trusted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from distgan import storage
from distgan.data.reader import load_all, normalize
from distgan.data.schema import DataError, DatasetInfo, inspect
from distgan.metrics.detectors import Detector, batched_features
from distgan.metrics.frechet import feature_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealStats:
    features: torch.Tensor
    """float32 (N, D): what KID and precision/recall compare against."""
    mu: torch.Tensor
    sigma: torch.Tensor
    """float64 mean and covariance: the Fréchet distance's reference."""
    class_hist: np.ndarray
    """Class histogram of the labels, the reference for class KL."""
    pred: np.ndarray
    """The detector's class prediction per sample (empty when it has no classifier)."""
    key: str
    source: str = field(default="computed", compare=False)
    """'computed' or 'cache': how this process got them."""

    def to(self, device: torch.device | str) -> "RealStats":
        return replace(self, features=self.features.to(device), mu=self.mu.to(device), sigma=self.sigma.to(device))


def default_cache_dir() -> str:
    return str(Path(os.environ.get("DISTGAN_CACHE", Path.home() / ".cache" / "distgan")) / "stats")


def cache_key(fingerprint: str, detector_id: str, n: int, sample_shape: tuple[int, ...], seed: int) -> str:
    raw = f"{fingerprint}|{detector_id}|{n}|{'x'.join(map(str, sample_shape))}|seed{seed}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def _arrays(s: RealStats) -> dict[str, np.ndarray]:
    return {"features": s.features.cpu().numpy(), "mu": s.mu.cpu().numpy(), "sigma": s.sigma.cpu().numpy(),
            "class_hist": s.class_hist, "pred": s.pred}


def read(location: str, key: str) -> RealStats | None:
    try:
        raw = storage.read_bytes(location)
    except FileNotFoundError:
        return None
    try:
        with np.load(io.BytesIO(raw)) as z:
            arrays = {k: z[k] for k in z.files if k != "checksum"}
            stored = str(z["checksum"])
        if stored != _checksum(arrays):
            raise ValueError("checksum mismatch")
        return RealStats(torch.from_numpy(arrays["features"]), torch.from_numpy(arrays["mu"]),
                         torch.from_numpy(arrays["sigma"]), arrays["class_hist"], arrays["pred"], key, "cache")
    except Exception as e:
        log.warning("reference statistics %s are corrupt (%s): recomputing", location, e)
        return None


def write(location: str, stats: RealStats) -> None:
    arrays = _arrays(stats)
    buf = io.BytesIO()
    np.savez(buf, checksum=np.array(_checksum(arrays)), **arrays)
    storage.write_bytes(location, buf.getvalue())


def compute(info: DatasetInfo, detector: Detector, n: int, seed: int = 0, batch: int = 500,
            device: torch.device | str = "cpu", progress: bool = False, key: str = "",
            allow_repeat: bool = False) -> RealStats:
    """Statistics of n real samples (a fixed seeded subset, with repeats when n exceeds the
    data and `allow_repeat`), on `device`: reals and fakes go through the same detector,
    device and precision."""
    x, y, _ = load_all(info.location, raw=True)
    if n > len(x) and not allow_repeat:  # a split at read time leaves fewer rows than the footers count
        raise DataError(f"{info.location}: n={n} is larger than the data set's {len(x)} training rows; "
                        f"use a smaller n or --allow-repeat")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:n] if n <= len(x) else torch.randint(len(x), (n,), generator=g)
    feats, preds = batched_features(lambda xb, _: normalize(xb.to(device)), x[idx], None, detector, batch, progress)
    mu, sigma = feature_stats(feats)
    hist = np.bincount(y[idx].clamp(min=0).numpy(), minlength=max(1, info.num_classes)).astype(np.float64)
    return RealStats(feats.float(), mu, sigma, hist, preds.cpu().numpy() if preds is not None else np.zeros(0, np.int64),
                     key)


def real_stats(data_dir: str, detector: Detector, n: int, cache_dir: str | None = None, allow_repeat: bool = False,
               batch: int = 500, seed: int = 0, device: torch.device | str = "cpu", progress: bool = False
               ) -> RealStats:
    """Statistics of n real samples from the cache when present, else computed and cached.
    `source` on the result says which; `cache_dir` may be a URI (the job's storage)."""
    info = inspect(data_dir)
    if n < 2:
        raise DataError(f"n={n}: statistics need at least 2 samples")
    if n > info.num_rows and not allow_repeat:
        raise DataError(f"{data_dir}: n={n} is larger than the data set ({info.num_rows} rows); "
                        f"use a smaller n or --allow-repeat")
    key = cache_key(info.fingerprint, detector.id, n, info.sample_shape, seed)
    location = storage.join(cache_dir or default_cache_dir(), f"{key}.npz")
    cached = read(location, key)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    stats = compute(info, detector, n, seed, batch, device, progress, key, allow_repeat)
    write(location, stats)
    log.info("real statistics %s computed in %.1f s", location, time.perf_counter() - t0)
    return stats


def location_of(cache_dir: str | None, key: str) -> str:
    return storage.join(cache_dir or default_cache_dir(), f"{key}.npz")
