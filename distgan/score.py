"""`distgan fid`: score a Parquet data set or a checkpoint's G_ema against real data."""

from __future__ import annotations

from pathlib import Path

import torch

from distgan import checkpoint
from distgan.data.prepare import mixture_modes
from distgan.data.schema import inspect
from distgan.engine import GANEngine
from distgan.metrics import detectors
from distgan.metrics.evaluate import compute_metrics, evaluate, fid_name
from distgan.metrics.stats import real_stats


def score(real: str | Path, fake: str | Path, detector: str = "auto", n: int = 2000, allow_repeat: bool = False,
          batch: int = 250, device: str | None = None, progress: bool = True) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = inspect(real)
    det = detectors.build(detector, info.sample_shape, device=dev)
    ref = real_stats(real, det, n, allow_repeat=allow_repeat, batch=batch, progress=progress)
    mixture = mixture_modes(info.name)
    if checkpoint.is_checkpoint(fake):
        state, cfg, _ = checkpoint.load(fake, map_location=dev)
        engine = GANEngine.from_config(cfg, dev)
        engine.load_state_dict(state)
        metrics = evaluate(engine.G_ema, n, batch, det, ref, device=dev, mixture=mixture, progress=progress)
    else:
        # Features of n seeded samples of the fake data set: the same path as real statistics.
        other = real_stats(fake, det, n, allow_repeat=allow_repeat, batch=batch, seed=1, progress=progress)
        metrics = compute_metrics(other.features, other.pred if det.has_classes else None, ref, det,
                                  mixture=mixture)
    return {"detector": det.id, "n": n, "protocol": fid_name(n), **metrics}
