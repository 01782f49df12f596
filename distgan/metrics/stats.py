"""Real-data feature statistics, cached on disk.

Keyed by a hash of (data content, detector id incl. its weights, sample count, input size),
stored as .npz with a checksum, written via a temp file + os.replace so concurrent writers
(several Tune trials starting at once) can only ever leave a whole file. A file that fails
its checksum is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distgan.data.reader import load_all
from distgan.data.schema import DataError, inspect
from distgan.metrics.detectors import Detector, batched_features
from distgan.metrics.frechet import feature_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealStats:
    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    class_hist: np.ndarray
    """Class histogram of the labels, the reference for class KL."""
    pred: np.ndarray
    """The detector's class prediction per sample (empty when it has no classifier)."""
    key: str


def default_cache_dir() -> Path:
    return Path(os.environ.get("DISTGAN_CACHE", Path.home() / ".cache" / "distgan")) / "stats"


def data_fingerprint(directory: str | Path) -> str:
    h = hashlib.sha256()
    for f in inspect(directory).files:
        h.update(Path(f).name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cache_key(fingerprint: str, detector_id: str, n: int, sample_shape: tuple[int, ...]) -> str:
    raw = f"{fingerprint}|{detector_id}|{n}|{'x'.join(map(str, sample_shape))}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def _read(path: Path, key: str) -> RealStats | None:
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "checksum"}
            stored = str(z["checksum"])
        if stored != _checksum(arrays):
            raise ValueError("checksum mismatch")
        return RealStats(**arrays, key=key)
    except FileNotFoundError:
        return None
    except Exception as e:
        log.warning("reference statistics %s are corrupt (%s): recomputing", path, e)
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, checksum=np.array(_checksum(arrays)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def real_stats(data_dir: str | Path, detector: Detector, n: int, cache_dir: str | Path | None = None,
               allow_repeat: bool = False, batch: int = 500, seed: int = 0, progress: bool = False) -> RealStats:
    """Statistics of n real samples (a fixed seeded subset), from the cache when present."""
    info = inspect(data_dir)
    if n > info.num_rows and not allow_repeat:
        raise DataError(f"{data_dir}: n={n} is larger than the data set ({info.num_rows} rows); "
                         f"use a smaller n or --allow-repeat")
    key = cache_key(data_fingerprint(data_dir), detector.id, n, info.sample_shape)
    path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
    cached = _read(path, key)
    if cached is not None:
        return cached
    x, y, info = load_all(data_dir)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:n] if n <= len(x) else torch.randint(len(x), (n,), generator=g)
    feats, preds = batched_features(lambda xb, _: xb, x[idx], None, detector, batch, progress)
    mu, sigma = feature_stats(feats)
    hist = np.bincount(y[idx].clamp(min=0).numpy(), minlength=max(1, info.num_classes)).astype(np.float64)
    arrays = {"features": feats.astype(np.float32), "mu": mu, "sigma": sigma, "class_hist": hist,
              "pred": preds if preds is not None else np.zeros(0, np.int64)}
    _write(path, arrays)
    return RealStats(**arrays, key=key)
