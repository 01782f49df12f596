"""`distgan train` in this process: data from the local Parquet reader, checkpoints,
sample grids and metrics.jsonl in the output directory. Resume continues bit-exactly:
the engine state holds the RNGs, and the data stream position is the step count.

Nothing is lost: every file is written whole or not at all, a checkpoint before anything
that names it, the best checkpoint (named by its directory, so a moved run still finds it)
is never deleted, and `--force` moves an old run aside until the new one has its first
checkpoint.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from distgan import checkpoint, storage
from distgan.config import ConfigError, RunConfig, resume_changes
from distgan.data import prepare
from distgan.data.reader import epoch_batches, load_all
from distgan.data.schema import DataError, DatasetInfo, inspect
from distgan.engine import GANEngine
from distgan.loop import train
from distgan.metrics import registry
from distgan.metrics.evaluate import Evaluator
from distgan.plots import sample_grid
from distgan.progress import format_eval
from distgan.tracking import RunLog

CKPT_DIR, SAMPLES_DIR, METRICS_FILE, BEST_FILE, CONFIG_FILE = (
    "checkpoints", "samples", "metrics.jsonl", "best.json", "config.json")
RUN_FILES = (CKPT_DIR, SAMPLES_DIR, METRICS_FILE, BEST_FILE, CONFIG_FILE)
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of a run's checkpoints
ASIDE = ".replaced"  # an old run moved aside by --force until the new one has a checkpoint


def resolve_data(cfg: RunConfig, run_dir: str) -> str:
    """`data.path` (a local path or a URI), or the built-in data set prepared once into the
    run directory (which may itself be a URI)."""
    if cfg.data.path:
        inspect(cfg.data.path)
        return storage.normalize(cfg.data.path)
    path = storage.join(run_dir, "data", cfg.data.builtin)
    try:
        inspect(path)
    except DataError:
        if cfg.data.builtin == "mnist-embedded":
            prepare.mnist_embedded(path, force=True)
        else:
            prepare.mixture(cfg.data.builtin, path, n=cfg.data.num_points, seed=cfg.train.seed, force=True)
    return storage.normalize(path)


def check_data_matches(cfg: RunConfig, info: DatasetInfo) -> None:
    m = cfg.model
    want = (m.resolution,) if m.arch == "mlp" else (m.channels, m.resolution, m.resolution)
    if tuple(info.sample_shape) != want:
        raise ConfigError(f"model: expects samples of shape {want}, but {info.location} holds "
                          f"{tuple(info.sample_shape)} (set model.resolution/model.channels)")
    if m.conditional and m.num_classes < info.num_classes:
        raise ConfigError(f"model.num_classes: {m.num_classes} is fewer than the {info.num_classes} classes of "
                          f"{info.location}")


def saved_config(run_dir: str | Path, remote: bool = False) -> RunConfig:
    """The config of the run in `run_dir`; `remote`: its checkpoints are elsewhere (Ray's storage)."""
    run_dir = Path(run_dir)
    has_checkpoint = remote or checkpoint.step_dirs(run_dir / CKPT_DIR) or (run_dir / RAY_SNAPSHOT).is_file()
    if not has_checkpoint or not (run_dir / CONFIG_FILE).is_file():
        raise checkpoint.CheckpointError(f"--resume {run_dir}: no checkpoint in {run_dir / CKPT_DIR}")
    try:
        return RunConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{run_dir / CONFIG_FILE}: unreadable ({str(e).splitlines()[0]})") from None


def check_resume(saved: RunConfig, cfg: RunConfig) -> None:
    changed = resume_changes(saved, cfg)
    if changed:
        key = changed[0]
        raise ConfigError(f"{key}: a resumed run cannot change it ({saved.flat()[key]!r} -> {cfg.flat()[key]!r}); "
                          "it fixes the model or the evaluation protocol (start a new run instead)")


def has_run(out: Path) -> bool:
    return out.is_dir() and any((out / f).exists() for f in (CKPT_DIR, SAMPLES_DIR, METRICS_FILE))


def move_aside(out: Path) -> Path:
    aside = out / ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for f in RUN_FILES:
        if (out / f).exists():
            (out / f).rename(aside / f)
    return aside


def restore_aside(out: Path, aside: Path) -> None:
    for f in RUN_FILES:
        if (aside / f).exists():
            if (out / f).is_dir():
                shutil.rmtree(out / f)
            else:
                (out / f).unlink(missing_ok=True)
            (aside / f).rename(out / f)
    shutil.rmtree(aside, ignore_errors=True)


def pick_device(device: str | None) -> torch.device:
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ConfigError(f"--device {device}: expected cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device here")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: expected cpu or cuda[:N]")
    return dev


def _write_json(path: Path, obj) -> None:
    storage.atomic_write_local(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def train_local(cfg: RunConfig, out: str | Path, resume: bool = False, force: bool = False,
                progress: bool = True, device: str | None = None, run_log: RunLog | None = None,
                say: Callable[[str], None] = print) -> dict:
    """Run (or resume) a training; returns the best evaluation ({'checkpoint': path, 'metrics'})."""
    out = Path(out).resolve()
    dev = pick_device(device)
    restored = None
    if resume:
        check_resume(saved_config(out), cfg)
        restored = checkpoint.latest_good(out / CKPT_DIR, map_location=dev)
        if restored is None:
            raise checkpoint.CheckpointError(f"--resume {out}: no readable checkpoint in {out / CKPT_DIR}")
        for note in restored[4]:
            say(f"skipping a damaged checkpoint: {note}; resuming from {restored[0].name}")
    elif has_run(out) and not force:
        raise FileExistsError(errno.EEXIST, f"already holds a run (--resume {out} continues it, --force replaces it)", str(out))
    # everything is validated before the run directory is touched
    data_dir = resolve_data(cfg, str(out))
    x, y, info = load_all(data_dir, raw=True)
    check_data_matches(cfg, info)
    rows = cfg.train.batch_size * cfg.train.n_d
    if rows > len(x):
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} x train.n_d {cfg.train.n_d} = {rows} rows, more "
                          f"than the {len(x)} of {info.location}")
    engine = GANEngine.from_config(cfg, dev)
    if restored is not None:
        engine.load_state_dict(restored[1])
    evaluator = Evaluator.build(cfg, info, dev)

    aside = move_aside(out) if force and not resume and has_run(out) else None
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_json(out / CONFIG_FILE, cfg.to_dict())
    history = _history(out, restored) if resume else []
    best = _best(out, history, evaluator.fd_key) if resume else {}
    batches = epoch_batches(x, y, rows, cfg.train.seed, start=engine.step_count)
    reference = x[:2000] if info.is_points else None
    committed = {"first": False}

    def on_eval(metrics: dict[str, float]) -> None:
        step = engine.step_count
        ckpt = checkpoint.save(out / CKPT_DIR / checkpoint.dir_name(step), engine.state_dict(), cfg, metrics, history)
        if not committed["first"]:
            committed["first"] = True
            if resume:  # the new settings apply from the first good step on
                _write_json(out / CONFIG_FILE, cfg.to_dict())
            if aside is not None:  # the replaced run goes only now that the new one has a checkpoint
                shutil.rmtree(aside, ignore_errors=True)
        storage.atomic_write_local(out / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in history).encode())
        if not best or metrics[evaluator.fd_key] < best["metrics"][evaluator.fd_key]:
            best.clear()
            best.update(checkpoint=ckpt.name, metrics=metrics)
            _write_json(out / BEST_FILE, best)
        keep = {best["checkpoint"], *(d.name for d in checkpoint.step_dirs(out / CKPT_DIR)[:max(2, cfg.train.keep_checkpoints - 1)])}
        for old in checkpoint.step_dirs(out / CKPT_DIR):
            if old.name not in keep:
                shutil.rmtree(old)
        grid = sample_grid(engine.G_ema, cfg.model.arch, cfg.eval.grid_size,
                           out / SAMPLES_DIR / f"{checkpoint.dir_name(step)}.png", dev, reference)
        if run_log is not None:
            run_log.log(metrics, step, grid)
        say(format_eval(metrics, evaluator.fd_key))

    try:
        train(engine, batches, cfg, evaluator, on_eval, progress=progress, history=history)
    except BaseException:
        if aside is not None and not committed["first"]:
            restore_aside(out, aside)
        raise
    return {"checkpoint": str(out / CKPT_DIR / best["checkpoint"]), "metrics": best["metrics"]} if best else {}


def _best(out: Path, history: list[dict], fd_key: str) -> dict:
    """The best evaluation whose checkpoint is still there and whole, named by its directory
    (best.json of older runs stored a typed path, wrong once the run moved)."""
    for h in sorted(history, key=lambda h: h[fd_key]):
        name = checkpoint.dir_name(int(h["step"]))
        try:
            checkpoint.verify(out / CKPT_DIR / name)
        except checkpoint.CheckpointError:
            continue
        return {"checkpoint": name, "metrics": h}
    return {}


def _history(out: Path, restored) -> list[dict]:
    """The evaluations up to the restored checkpoint: its own history.json, else (older
    checkpoints) the lines of metrics.jsonl up to its step, a cut last line ignored."""
    d, _, cfg, _, _ = restored
    history = checkpoint.load_history(d)
    if history:
        return history
    lines = []
    if (out / METRICS_FILE).is_file():
        for line in (out / METRICS_FILE).read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                break
    step = int(d.name.split("_")[1])
    return [registry.upgrade(h, checkpoint.detector_of(cfg)) for h in lines if h.get("step", 0) <= step]

