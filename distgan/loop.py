"""The training loop shared by a one-process run and a Ray Train worker: engine steps,
averaged step statistics, and every `eval_every` steps an evaluation handed to `on_eval`
(which writes the checkpoint locally, or calls ray.train.report in a worker)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from distgan.config import RunConfig
from distgan.data.prepare import mixture_modes
from distgan.data.schema import DatasetInfo
from distgan.distributed import broadcast_buffers
from distgan.engine import GANEngine
from distgan.metrics import detectors
from distgan.metrics.evaluate import EVAL_SEED, evaluate, fid_name, fixed_latents
from distgan.metrics.stats import RealStats, real_stats
from distgan.plots import save_image_grid, save_points
from distgan.stopping import stop_reason

Gather = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalContext:
    detector: detectors.Detector
    real: RealStats
    mixture: tuple[np.ndarray, float] | None
    num_samples: int

    @property
    def fid_key(self) -> str:
        return fid_name(self.num_samples)


def eval_context(cfg: RunConfig, data_dir: str | Path, info: DatasetInfo, device: torch.device,
                 real: RealStats | None = None) -> EvalContext:
    """Detector, real statistics (computed or cached here unless given) and mixture modes."""
    det = detectors.build(cfg.eval.detector, info.sample_shape, device=device)
    if real is None:
        real = real_stats(data_dir, det, cfg.eval.num_samples, cfg.eval.cache_dir or None,
                          allow_repeat=info.num_rows < cfg.eval.num_samples)
    mixture = mixture_modes(info.name)
    return EvalContext(det, real, mixture, cfg.eval.num_samples)


def evaluate_engine(engine: GANEngine, cfg: RunConfig, ctx: EvalContext, gather: Gather | None = None
                    ) -> dict[str, float]:
    broadcast_buffers(engine.G_ema)
    return evaluate(engine.G_ema, ctx.num_samples, cfg.eval.batch_size, ctx.detector, ctx.real,
                    device=engine.device, mixture=ctx.mixture, rank=engine.rank,
                    world_size=engine.world_size, gather=gather)


def save_samples(engine: GANEngine, cfg: RunConfig, path: Path, reference: torch.Tensor | None = None) -> Path:
    """Class-ordered rows for conditional models; a scatter over the real data for points."""
    G = engine.G_ema
    if cfg.model.arch == "mlp":
        z, _ = fixed_latents(2000, G.z_dim, 0, EVAL_SEED)
        return save_points(engine.generate(z), path, reference)
    k = G.num_classes
    per_row = max(1, cfg.eval.grid_size // k) if k else None
    n = per_row * k if k else cfg.eval.grid_size
    z, _ = fixed_latents(n, G.z_dim, 0, EVAL_SEED)
    y = torch.arange(k).repeat_interleave(per_row) if k else None
    return save_image_grid(engine.generate(z, y), path, nrow=per_row)


EVALS = "evals"  # Tune's clock (ASHA's time attribute): derived from the step, so a resumed run keeps it
REPLAYED = "replayed"  # 1 on an evaluation reported again by a resumed trial (see worker.replay)


def evals_at(step: int, eval_every: int) -> int:
    """Evaluations a run has made by `step` (one every eval_every steps, and one at the end)."""
    return math.ceil(step / eval_every)


def train(engine: GANEngine, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], cfg: RunConfig,
          ctx: EvalContext, on_eval: Callable[[dict], None], gather: Gather | None = None,
          progress: bool = True, history: list[dict] | None = None) -> list[dict]:
    """Train to cfg.train.steps or until a stopping rule fires; returns the evaluation history.
    Each evaluation carries `fid_best` (the objective: a run is as good as its best
    checkpoint) and `stop_reason` ('' while the run goes on). `history` (a resumed run's past
    evaluations) is appended to in place before each on_eval, so a checkpoint can save it."""
    t = cfg.train
    history = [] if history is None else history
    bar = tqdm(total=t.steps, initial=engine.step_count, disable=not progress, desc="train", dynamic_ncols=True)
    sums: dict[str, float] = {}
    count, images, waited, t0 = 0, 0, 0.0, time.perf_counter()
    while engine.step_count < t.steps:
        tw = time.perf_counter()
        x, y = next(batches)
        waited += time.perf_counter() - tw
        stats = engine.step(x, y)
        for k, v in stats.items():
            sums[k] = max(sums.get(k, 0.0), v) if k == "nonfinite" else sums.get(k, 0.0) + v
        count += 1
        images += len(x) * engine.world_size
        bar.update(1)
        bar.set_postfix(loss_d=f"{stats['loss_d']:.3f}", loss_g=f"{stats['loss_g']:.3f}",
                        Dx=f"{stats['d_real']:.2f}", DGz=f"{stats['d_fake']:.2f}", refresh=False)
        if engine.step_count % t.eval_every == 0 or engine.step_count == t.steps:
            elapsed = time.perf_counter() - t0
            metrics = {k: (v if k == "nonfinite" else v / count) for k, v in sums.items()}
            metrics["img_per_s"] = images / elapsed
            metrics["data_wait_frac"] = waited / elapsed  # time the step waited for input
            metrics.update(evaluate_engine(engine, cfg, ctx, gather))
            metrics["step"] = float(engine.step_count)
            metrics[EVALS] = float(evals_at(engine.step_count, t.eval_every))
            metrics["kimg"] = engine.step_count * len(x) * engine.world_size / 1000
            metrics["fid_best"] = min([metrics[ctx.fid_key], *(h["fid_best"] for h in history)])
            history.append(metrics)
            metrics["stop_reason"] = stop_reason(history, ctx.fid_key, cfg.stop, engine.loss.probabilistic)
            on_eval(metrics)
            if metrics["stop_reason"]:
                break
            sums, count, images, waited, t0 = {}, 0, 0, 0.0, time.perf_counter()
    bar.close()
    return history


def format_eval(metrics: dict[str, float], fid_key: str) -> str:
    parts = [f"step {int(metrics['step'])}", f"{fid_key} {metrics[fid_key]:.3f}",
             f"D(x) {metrics.get('d_real', float('nan')):.3f}", f"D(G(z)) {metrics.get('d_fake', float('nan')):.3f}"]
    for key in ("classes_covered", "modes_covered"):
        if key in metrics:
            parts.append(f"{key} {int(metrics[key])}")
    parts.append(f"{metrics['img_per_s']:.0f} img/s")
    if metrics.get("stop_reason"):
        parts.append(f"stopped: {metrics['stop_reason']}")
    if metrics.get(REPLAYED):
        parts.append("replayed")
    return " | ".join(parts)
