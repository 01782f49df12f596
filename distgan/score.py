"""`distgan fid`: score a Parquet data set or a checkpoint's G_ema against real data, with
every registered metric (the Fréchet distance named for its feature space, KID, precision/
recall/density/coverage, mode coverage)."""

from __future__ import annotations

from pathlib import Path

import torch

from distgan import checkpoint
from distgan.config import ConfigError, RunConfig
from distgan.data.schema import DataError, inspect
from distgan.engine import GANEngine, pick_device
from distgan.metrics import detectors, registry
from distgan.metrics.evaluate import REAL_SEED, Evaluator
from distgan.metrics.stats import real_stats

FAKE_SEED = 1  # the fake set's subset: another draw than the real one's, even from the same files


def score(real: str, fake: str, detector: str = "auto", n: int = 2000, allow_repeat: bool = False,
          batch: int = 250, device: str | None = None, progress: bool = True) -> dict:
    if n < 6:
        raise ConfigError(f"--n {n}: expected at least 6 samples (precision/recall use 5 neighbours)")
    if batch < 1:
        raise ConfigError(f"--batch {batch}: expected at least 1")
    dev = pick_device(device)
    info = inspect(real)
    # both sides are checked before anything is computed
    generator = checkpoint.is_checkpoint(fake)
    run_cfg = RunConfig()
    if generator:
        state, run_cfg, _ = checkpoint.load(fake, map_location=dev)
        if run_cfg.model.sample_shape != tuple(info.sample_shape):
            raise ConfigError(f"--fake {fake}: the generator makes {run_cfg.model.sample_shape} samples, --real {real} holds "
                              f"{tuple(info.sample_shape)}")
    else:
        if Path(str(fake)).exists() and not Path(str(fake)).is_dir():
            raise ConfigError(f"--fake {fake}: expected a Parquet directory or a checkpoint directory")
        other_info = inspect(fake)
        if tuple(other_info.sample_shape) != tuple(info.sample_shape):
            raise ConfigError(f"--fake {fake}: holds {tuple(other_info.sample_shape)} samples, --real {real} holds "
                              f"{tuple(info.sample_shape)}")
    # the run's model (its latent: z and any InfoGAN codes), this command's protocol
    cfg = run_cfg.with_overrides({"eval.detector": detector, "eval.num_samples": n, "eval.batch_size": batch,
                                  "eval.metrics": list(registry.METRICS)})
    det = detectors.build(detector, info.sample_shape, device=dev)
    ref = real_stats(real, det, n, allow_repeat=allow_repeat, batch=batch, seed=REAL_SEED, device=dev, progress=progress)
    evaluator = Evaluator.build(cfg, info, dev, real=ref)
    if generator:
        engine = GANEngine.from_config(run_cfg, dev)
        engine.load_state_dict(state)
        metrics = evaluator(engine.G_ema, progress=progress)
    else:
        other = real_stats(fake, det, n, allow_repeat=allow_repeat, batch=batch, seed=FAKE_SEED, device=dev,
                           progress=progress)
        metrics = evaluator.metrics(other.features.to(dev), torch.from_numpy(other.pred) if det.has_classes else None)
    if metrics.pop("diverged", 0.0):  # the run's stand-in for a diverged trial is no score of a data set
        what = "the generator's samples" if generator else "its samples"
        raise DataError(f"--fake {fake}: {what} are not finite (NaN or inf): there is no distance to report")
    return {"detector": det.id, "n": n, "protocol": evaluator.fd_key, **metrics}

