"""The training loop shared by a one-process run and a Ray Train worker: engine steps,
step statistics averaged on the device, and every `eval_every` steps an evaluation handed
to `on_eval` (which writes the checkpoint and the sample grid locally, or reports to Ray)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import torch
from tqdm import tqdm

from distgan.config import RunConfig
from distgan.distributed import broadcast_buffers
from distgan.engine import GANEngine, unwrap
from distgan.metrics.evaluate import Evaluator
from distgan.stopping import stop_reason

#: Step statistics shown on a local run's progress bar, refreshed every this many steps
#: (reading them is a host sync; on a GPU one per step would stall the queue).
PROGRESS_EVERY = 25


def evals_at(step: int, eval_every: int) -> int:
    """Evaluations a run has made by `step` (one every eval_every steps, and one at the end)."""
    return math.ceil(step / eval_every)


def evaluate_engine(engine: GANEngine, evaluator: Evaluator, index: int | None = None) -> dict[str, float]:
    broadcast_buffers(engine.G_ema)  # every rank generates with rank 0's BatchNorm statistics
    return evaluator(engine.G_ema, index, engine.rank, engine.world_size, critic=unwrap(engine.D))


def train(engine: GANEngine, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], cfg: RunConfig,
          evaluator: Evaluator, on_eval: Callable[[dict], None], progress: bool = True,
          history: list[dict] | None = None) -> list[dict]:
    """Train to cfg.train.steps or until a stopping rule fires; returns the evaluation history.
    Each evaluation carries `fd_best` (the objective: a run is as good as its best
    checkpoint) and `stop_reason` ('' while the run goes on). `history` (a resumed run's past
    evaluations) is appended to in place before each on_eval, so a checkpoint can save it."""
    t = cfg.train
    history = [] if history is None else history
    bar = tqdm(total=t.steps, initial=engine.step_count, disable=not progress, desc="train", dynamic_ncols=True)
    sums: dict[str, torch.Tensor] = {}
    count, images, waited, rows, t0 = 0, 0, 0.0, 0, time.perf_counter()
    while engine.step_count < t.steps:
        tw = time.perf_counter()
        x, y = next(batches)
        rows = len(x)
        waited += time.perf_counter() - tw
        stats = engine.step(x, y)
        for k, v in stats.items():
            sums[k] = v if k not in sums else (torch.maximum(sums[k], v) if k == "nonfinite" else sums[k] + v)
        count += 1
        images += len(x) * engine.world_size  # real rows D saw (n_D chunks of the batch)
        bar.update(1)
        if progress and engine.step_count % PROGRESS_EVERY == 0:
            shown = {k: float(stats[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake")}
            bar.set_postfix(loss_d=f"{shown['loss_d']:.3f}", loss_g=f"{shown['loss_g']:.3f}",
                            Dx=f"{shown['d_real']:.2f}", DGz=f"{shown['d_fake']:.2f}", refresh=False)
        if engine.step_count % t.eval_every == 0 or engine.step_count == t.steps:
            names = list(sums)
            values = torch.stack([sums[k] for k in names]).tolist()  # the window's one host sync
            elapsed = time.perf_counter() - t0
            metrics = {k: (v if k == "nonfinite" else v / count) for k, v in zip(names, values)}
            metrics["img_per_s"] = images / elapsed
            metrics["data_wait_frac"] = waited / elapsed  # time the step waited for input
            metrics["train_s"] = elapsed
            index = evals_at(engine.step_count, t.eval_every)
            metrics.update(evaluate_engine(engine, evaluator, index))
            metrics["step"] = float(engine.step_count)
            metrics["kimg"] = engine.step_count * rows * engine.world_size / 1000
            metrics["fd_best"] = min([metrics[evaluator.fd_key], *(h["fd_best"] for h in history)])
            history.append(metrics)
            metrics["stop_reason"] = stop_reason(history, evaluator.fd_key, cfg.stop, engine.loss.probabilistic)
            on_eval(metrics)
            if metrics["stop_reason"]:
                break
            sums, count, images, waited, t0 = {}, 0, 0, 0.0, time.perf_counter()
    bar.close()
    return history
