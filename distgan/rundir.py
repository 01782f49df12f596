"""A run's directory, one layout for every road to the loop: a one-process `distgan train`,
a Ray Train run (`--workers N`) and a Tune trial's Train run.

    <run>/config.json          the config the run goes on with
    <run>/step_N               whole checkpoints (atomic, checksummed), Ray Train's record of
                               them beside them on Ray (checkpoint_manager_snapshot.json)
    <run>/samples/step_N.png   the sample grid of each evaluation
    <run>/metrics.jsonl        every evaluation, one line each
    <run>/best.json            the lowest-distance checkpoint, by directory name
    <run>/data/<builtin>       a built-in data set, prepared once

A location is a path or a URI. Nothing is lost: a run is replaced only with --force, which
moves it aside (local runs) until the new one has its first checkpoint; the config a resume
changes is written only after its first good step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from distgan import checkpoint, storage
from distgan.config import ConfigError, RunConfig, resume_changes

SAMPLES, METRICS_FILE, BEST_FILE, CONFIG_FILE = "samples", "metrics.jsonl", "best.json", "config.json"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of a run's checkpoints
RUN_FILES = (SAMPLES, METRICS_FILE, BEST_FILE, CONFIG_FILE, RAY_SNAPSHOT)
ASIDE = ".replaced"  # an old run moved aside by --force until the new one has a checkpoint


@dataclass(frozen=True)
class Restored:
    """The newest checkpoint that loads, and a line for each newer one that did not (for the
    console: a one-process run prints them, a Ray worker sends them with its first report)."""
    state: dict
    history: list[dict]
    notes: list[str]


@dataclass(frozen=True)
class Best:
    """A run's lowest-distance evaluation and the checkpoint that holds it."""
    checkpoint: str
    metrics: dict


@dataclass(frozen=True)
class RunDir:
    root: str

    @classmethod
    def at(cls, location: str | Path) -> "RunDir":
        return cls(storage.normalize(location))

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def checkpoint(self, step: int) -> str:
        return self.path(checkpoint.dir_name(step))

    def has_run(self) -> bool:
        return bool(step_names(self.root)) or any(storage.exists(self.path(f))
                                                  for f in (SAMPLES, METRICS_FILE, RAY_SNAPSHOT))

    # --- before a run: refuse, resume or replace
    def check_new(self, force: bool, resume_hint: str) -> None:
        if not self.has_run():
            return
        if not force:
            raise FileExistsError(errno.EEXIST, f"already holds a run (--resume {resume_hint} continues it, "
                                                "--force replaces it)", self.root)
        if storage.is_uri(self.root):
            raise ConfigError(f"--force: the run in {self.root} is in object storage, where it cannot be moved "
                              "aside; give another --out name (or delete it yourself)")

    def saved_config(self) -> RunConfig:
        if not step_names(self.root) or not storage.exists(self.path(CONFIG_FILE)):
            raise checkpoint.CheckpointError(f"--resume {self.root}: no checkpoint there")
        try:
            return RunConfig.from_dict(json.loads(storage.read_text(self.path(CONFIG_FILE))))
        except ValueError as e:
            raise checkpoint.CheckpointError(f"{self.path(CONFIG_FILE)}: unreadable "
                                             f"({str(e).splitlines()[0]})") from None

    def check_resume(self, cfg: RunConfig) -> None:
        saved = self.saved_config()
        changed = resume_changes(saved, cfg)
        if changed:
            key = changed[0]
            raise ConfigError(f"{key}: a resumed run cannot change it ({saved.flat()[key]!r} -> "
                              f"{cfg.flat()[key]!r}); it fixes the model or the evaluation protocol (start a new "
                              "run instead)")

    def move_aside(self) -> Path | None:
        """--force: the old run's files under .replaced/ until the new run has a checkpoint."""
        if not self.has_run():
            return None
        root = Path(self.root)
        aside = root / ASIDE
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        for f in [*RUN_FILES, *step_names(self.root)]:
            if (root / f).exists():
                (root / f).rename(aside / f)
        return aside

    def restore_aside(self, aside: Path) -> None:
        """The new run made no checkpoint: the old one comes back."""
        root = Path(self.root)
        for f in [*RUN_FILES, *step_names(str(aside))]:
            if (aside / f).exists():
                if (root / f).is_dir():
                    shutil.rmtree(root / f)
                else:
                    (root / f).unlink(missing_ok=True)
                (aside / f).rename(root / f)
        shutil.rmtree(aside, ignore_errors=True)

    # --- during a run (every file written whole: storage.write_text)
    def write_config(self, cfg: RunConfig) -> None:
        storage.write_text(self.path(CONFIG_FILE), json.dumps(cfg.to_dict(), indent=2, sort_keys=True))

    def record(self, history: list[dict], fd_key: str) -> Best:
        """metrics.jsonl and best.json after an evaluation whose checkpoint is written."""
        storage.write_text(self.path(METRICS_FILE), "".join(json.dumps(h) + "\n" for h in history))
        best = min(history, key=lambda h: h[fd_key])
        found = Best(checkpoint.dir_name(int(best["step"])), best)
        storage.write_text(self.path(BEST_FILE), json.dumps(vars(found), indent=2, sort_keys=True))
        return found

    def prune(self, best: str, keep: int) -> None:
        """Old checkpoints of a local run: the best and the `keep` newest stay (never fewer than 2)."""
        names = step_names(self.root)
        for name in names[max(2, keep):]:
            if name != best:
                shutil.rmtree(Path(self.root) / name)

    # --- resuming
    def best(self, history: list[dict], fd_key: str) -> Best | None:
        """The best evaluation whose checkpoint is still there and whole (a local run)."""
        for h in sorted(history, key=lambda h: h[fd_key]):
            name = checkpoint.dir_name(int(h["step"]))
            with contextlib.suppress(checkpoint.CheckpointError):
                checkpoint.verify(Path(self.path(name)))
                return Best(name, h)
        return None


def run_root(out: str | Path, storage_location: str | None = None) -> str:
    """A Ray Train run's directory: `out`, or the run of that name in `storage_location`."""
    out = Path(out).resolve()
    return storage.join(storage.normalize(storage_location), out.name) if storage_location else str(out)


def data_location(cfg: RunConfig, root: str) -> str:
    """`data.path` (a local path or a URI), or the built-in data set prepared once into the
    run (or job) directory `root`, which may itself be a URI."""
    from distgan.data import prepare
    from distgan.data.schema import DataError, inspect

    if cfg.data.path:
        inspect(cfg.data.path)
        return storage.normalize(cfg.data.path)
    path = storage.join(root, "data", cfg.data.builtin)
    try:
        inspect(path)
    except DataError:
        if cfg.data.builtin == "mnist-embedded":
            prepare.mnist_embedded(path, force=True)
        else:
            prepare.mixture(cfg.data.builtin, path, n=cfg.data.num_points, seed=cfg.train.seed, force=True)
    return storage.normalize(path)


def step_names(parent: str) -> list[str]:
    """Checkpoint directory names, newest first (temporary ones never listed)."""
    return sorted((n for n in storage.list_dir(parent) if checkpoint.NAME.match(n)), reverse=True)


def latest_good(parent: str, device: str | torch.device = "cpu", newest: str | None = None) -> Restored:
    """The newest checkpoint under `parent` (at or before the one named `newest`) that loads:
    a damaged one (a cut upload, a flipped byte) is skipped with a line and the one before used."""
    names = step_names(parent)
    if newest is not None:  # a checkpoint Tune copied (an exploit's donor) has no siblings of its run
        names = [n for n in names if n <= newest] if checkpoint.NAME.match(newest) else [newest]
    skipped = []
    for name in names:
        location = storage.join(parent, name)
        try:
            with _local(location) as d:
                state, _, _ = checkpoint.load(d, map_location=device)
                history = checkpoint.load_history(d)
        except (checkpoint.CheckpointError, OSError) as e:
            skipped.append(str(e).splitlines()[0])
            continue
        return Restored(state, history, [f"skipping a damaged checkpoint: {s}; resuming from {name}" for s in skipped])
    if newest is not None:
        raise checkpoint.CheckpointError(f"{storage.join(parent, newest)}: no readable checkpoint there or before it")
    raise checkpoint.CheckpointError(f"{parent}: no readable checkpoint there")


@contextlib.contextmanager
def _local(location: str) -> Iterator[Path]:
    """A checkpoint location as a local directory: itself, or a download that goes after."""
    if not storage.is_uri(location):
        yield Path(location)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield storage.download(location, Path(tmp) / storage.name(location))
