"""`distgan train` in this process: data from the local Parquet reader, checkpoints,
sample grids and metrics.jsonl in the output directory. Resume continues bit-exactly:
the engine state holds the RNGs, and the data stream position is the step count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from distgan import checkpoint
from distgan.config import ConfigError, RunConfig
from distgan.data import prepare
from distgan.data.reader import epoch_batches, load_all
from distgan.data.schema import DataError, inspect
from distgan.engine import GANEngine
from distgan.loop import eval_context, format_eval, save_samples, train
from distgan.tracking import RunLog

CKPT_DIR, SAMPLES_DIR, METRICS_FILE, BEST_FILE, CONFIG_FILE = (
    "checkpoints", "samples", "metrics.jsonl", "best.json", "config.json")
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of a run's checkpoints


def resolve_data(cfg: RunConfig, run_dir: Path) -> Path:
    """`data.path`, or the built-in data set prepared once into the run directory."""
    if cfg.data.path:
        path = Path(cfg.data.path)
        if not path.is_dir():
            raise DataError(f"data.path {cfg.data.path}: directory does not exist")
        return path
    path = run_dir / "data" / cfg.data.builtin
    if not any(path.glob("*.parquet")):
        if cfg.data.builtin == "mnist-embedded":
            prepare.mnist_embedded(path)
        else:
            prepare.mixture(cfg.data.builtin, path, n=cfg.data.num_points, seed=cfg.train.seed)
    return path


def check_data_matches(cfg: RunConfig, x: torch.Tensor, source: Path) -> None:
    m = cfg.model
    want = (m.resolution,) if m.arch == "mlp" else (m.channels, m.resolution, m.resolution)
    if tuple(x.shape[1:]) != want:
        raise ConfigError(f"model: expects samples of shape {want}, but {source} holds {tuple(x.shape[1:])} "
                          f"(set model.resolution/model.channels)")


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(p for p in (run_dir / CKPT_DIR).glob("step_*") if checkpoint.is_checkpoint(p))
    return ckpts[-1] if ckpts else None


def saved_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    has_checkpoint = latest_checkpoint(run_dir) is not None or (run_dir / RAY_SNAPSHOT).is_file()
    if not has_checkpoint or not (run_dir / CONFIG_FILE).is_file():
        raise checkpoint.CheckpointError(f"--resume {run_dir}: no checkpoint in {run_dir / CKPT_DIR}")
    return RunConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))


def prepare_run_dir(out: Path, cfg: RunConfig, resume: bool, force: bool) -> None:
    """Refuse to touch an existing run unless resuming or --force."""
    if resume:
        saved_config(out)
    elif out.exists() and any((out / d).exists() for d in (CKPT_DIR, SAMPLES_DIR, METRICS_FILE)):
        if not force:
            raise FileExistsError(f"{out}: already holds a run (--resume {out} continues it, --force replaces it)")
        for d in (CKPT_DIR, SAMPLES_DIR):
            shutil.rmtree(out / d, ignore_errors=True)
        for f in (METRICS_FILE, BEST_FILE):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))


def train_local(cfg: RunConfig, out: str | Path, resume: bool = False, force: bool = False,
                progress: bool = True, device: str | None = None, run_log: RunLog | None = None) -> dict:
    """Run (or resume) a training; returns the best evaluation's metrics."""
    out = Path(out)
    if cfg.data.path:
        inspect(cfg.data.path)  # bad data fails before the run directory is touched
    prepare_run_dir(out, cfg, resume, force)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data_dir = resolve_data(cfg, out)
    x, y, info = load_all(data_dir)
    check_data_matches(cfg, x, data_dir)
    engine = GANEngine.from_config(cfg, dev)
    best = json.loads((out / BEST_FILE).read_text()) if (out / BEST_FILE).is_file() else {}
    if resume:
        state, _, _ = checkpoint.load(latest_checkpoint(out), map_location=dev)
        engine.load_state_dict(state)
    ctx = eval_context(cfg, data_dir, info, dev)
    rows = cfg.train.batch_size * cfg.train.n_d
    batches = epoch_batches(x, y, rows, cfg.train.seed, start=engine.step_count)
    reference = x[:2000] if info.is_points else None

    def on_eval(metrics: dict[str, float]) -> None:
        step = engine.step_count
        grid = save_samples(engine, cfg, out / SAMPLES_DIR / f"{checkpoint.dir_name(step)}.png", reference)
        if run_log is not None:
            run_log.log(metrics, step, grid)
        ckpt = checkpoint.save(out / CKPT_DIR / checkpoint.dir_name(step), engine.state_dict(), cfg, metrics)
        with open(out / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if not best or metrics[ctx.fid_key] < best["metrics"][ctx.fid_key]:
            best.clear()
            best.update(checkpoint=str(ckpt), metrics=metrics)
            (out / BEST_FILE).write_text(json.dumps(best, indent=2))
        for old in (out / CKPT_DIR).glob("step_*"):  # keep the latest and the best
            if old not in (ckpt, Path(best["checkpoint"])):
                shutil.rmtree(old)
        print(format_eval(metrics, ctx.fid_key), flush=True)

    history = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()] if resume else []
    train(engine, batches, cfg, ctx, on_eval, progress=progress, history=history)
    return best

