"""`distgan train` in this process: the whole data set in memory, the loop, and a sink that
writes each evaluation into the run directory (distgan.rundir). Resume continues bit-exactly:
the engine state holds the RNGs, and the data stream's position is the step count."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from distgan import checkpoint
from distgan.config import RunConfig
from distgan.data.reader import check_batch, epoch_batches, load_all
from distgan.engine import GANEngine, pick_device
from distgan.loop import train
from distgan.metrics.evaluate import Evaluator
from distgan.plots import sample_grid
from distgan.progress import format_eval
from distgan.rundir import SAMPLES, Best, RunDir, data_location, latest_good
from distgan.tracking import RunLog


def train_local(cfg: RunConfig, out: str | Path, resume: bool = False, force: bool = False,
                progress: bool = True, device: str | None = None, run_log: RunLog | None = None,
                say: Callable[[str], None] = print) -> Best | None:
    """Run (or resume) a training; returns the best evaluation and its checkpoint."""
    run = RunDir.at(Path(out).resolve())
    dev = pick_device(device)
    restored = None
    if resume:
        run.check_resume(cfg)
        restored = latest_good(run.root, dev)
        for note in restored.notes:
            say(note)
    else:
        run.check_new(force, run.root)
    # everything is validated before the run directory is touched
    x, y, info = load_all(data_location(cfg, run.root), raw=True)
    info.check_model(cfg.model)
    rows = check_batch(cfg.train.batch_size * cfg.train.n_d, 1, len(x))
    engine = GANEngine.from_config(cfg, dev)
    if restored is not None:
        engine.load_state_dict(restored.state)
    evaluator = Evaluator.build(cfg, info, dev)

    aside = run.move_aside() if force and not resume else None
    Path(run.root).mkdir(parents=True, exist_ok=True)
    if not resume:
        run.write_config(cfg)
    history = restored.history if restored is not None else []
    best = run.best(history, evaluator.fd_key) if resume else None
    reference = x[:2000] if info.is_points else None
    committed = False

    def on_eval(metrics: dict[str, float]) -> None:
        nonlocal best, committed
        step = engine.step_count
        checkpoint.save(run.checkpoint(step), engine.state_dict(), cfg, metrics, history)
        if not committed:
            committed = True
            if resume:  # the new settings apply from the first good step on
                run.write_config(cfg)
            if aside is not None:  # the replaced run goes only now that the new one has a checkpoint
                shutil.rmtree(aside, ignore_errors=True)
        best = run.record(history, evaluator.fd_key)
        run.prune(best.checkpoint, cfg.train.keep_checkpoints - 1)
        grid = sample_grid(engine.G_ema, cfg.model.arch, cfg.eval.grid_size,
                           Path(run.path(SAMPLES, f"{checkpoint.dir_name(step)}.png")), dev, reference, engine.latent)
        if run_log is not None:
            run_log.log(metrics, step, grid)
        say(format_eval(metrics, evaluator.fd_key))

    batches = epoch_batches(x, y, rows, cfg.train.seed, start=engine.step_count)
    try:
        train(engine, batches, cfg, evaluator, on_eval, progress=progress, history=history)
    except BaseException:
        if aside is not None and not committed:
            run.restore_aside(aside)
        raise
    return None if best is None else Best(run.path(best.checkpoint), best.metrics)
