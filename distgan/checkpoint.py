"""Full training state <-> a checkpoint directory: state.pt, config.json, metrics.json,
history.json (every evaluation so far, which the stopping rules and a resumed trial need)
and manifest.json (the SHA-256 of each, so a damaged checkpoint is found, not trusted).

The directory is the unit Ray Train uploads (`ray.train.Checkpoint.from_directory`), so the
same files serve local runs, Tune trials and promotion. A checkpoint is written under a
hidden temporary name, fsynced, then renamed: a crash never leaves half of one under a
`step_NNNNNNN` name. Loads use weights_only=True: a checkpoint from an untrusted source
cannot run code.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from distgan.config import ConfigError, RunConfig
from distgan.errors import InputError
from distgan.metrics import registry
from distgan.metrics.detectors import file_sha256, resolve_name
from distgan.storage import fsync_dir

STATE, CONFIG, METRICS, HISTORY, MANIFEST = "state.pt", "config.json", "metrics.json", "history.json", "manifest.json"
NAME = re.compile(r"^step_\d{7}$")


def dir_name(step: int) -> str:
    """A checkpoint directory's name: sorts by step, and a resumed run can find its siblings."""
    return f"step_{step:07d}"


class CheckpointError(InputError):
    """A missing or unreadable checkpoint; one line naming the path."""


def detector_of(cfg: RunConfig) -> str:
    """The feature network a run's numbers are measured in (what `auto` chose)."""
    return resolve_name(cfg.eval.detector, cfg.model.sample_shape)


def _write(path: Path, data: bytes | memoryview) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save(directory: str | Path, state: dict, cfg: RunConfig, metrics: dict[str, Any],
         history: list[dict[str, Any]] | None = None) -> Path:
    """Write into a hidden temporary sibling, fsync, then rename into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        buf = io.BytesIO()  # serialized first, so a full disk is a plain ENOSPC on write, not a torch error
        torch.save(state, buf)
        _write(tmp / STATE, buf.getbuffer())
        _write(tmp / CONFIG, json.dumps(cfg.to_dict(), indent=2, sort_keys=True).encode())
        _write(tmp / METRICS, json.dumps(metrics, indent=2, sort_keys=True).encode())
        if history is not None:
            _write(tmp / HISTORY, json.dumps(history).encode())
        files = sorted(p.name for p in tmp.iterdir())
        _write(tmp / MANIFEST, json.dumps({f: file_sha256(tmp / f) for f in files}, indent=2).encode())
        fsync_dir(tmp)
        old = None
        if directory.exists():  # replaced, never removed before its successor is whole
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        fsync_dir(directory.parent)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{directory}: could not write the checkpoint ({reason}); the previous checkpoints "
                              "are intact") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def verify(directory: Path) -> None:
    """Each file against the manifest (checkpoints written before manifests only need state.pt)."""
    if not (directory / STATE).is_file():
        raise CheckpointError(f"{directory}: no checkpoint ({STATE} missing)")
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return
    try:
        expected = json.loads(manifest.read_text())
    except ValueError:
        raise CheckpointError(f"{directory}: unreadable {MANIFEST}") from None
    for name, digest in expected.items():
        f = directory / name
        if not f.is_file():
            raise CheckpointError(f"{directory}: {name} missing")
        if file_sha256(f) != digest:
            raise CheckpointError(f"{directory}: {name} is damaged (checksum mismatch)")


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, RunConfig, dict]:
    directory = Path(directory)
    verify(directory)
    try:
        state = torch.load(directory / STATE, map_location=map_location, weights_only=True)
        cfg = RunConfig.from_dict(json.loads((directory / CONFIG).read_text()))
        metrics = json.loads((directory / METRICS).read_text()) if (directory / METRICS).is_file() else {}
    except (ConfigError, OSError, ValueError, RuntimeError, EOFError, KeyError) as e:
        raise CheckpointError(f"{directory}: unreadable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return state, cfg, registry.upgrade(metrics, detector_of(cfg))


def load_history(directory: str | Path) -> list[dict[str, Any]]:
    """The evaluations up to this checkpoint, oldest first ([] if it kept none)."""
    directory = Path(directory)
    path = directory / HISTORY
    try:
        history = json.loads(path.read_text()) if path.is_file() else []
        cfg = RunConfig.from_dict(json.loads((directory / CONFIG).read_text()))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable history ({e})") from None
    detector = detector_of(cfg)
    return [registry.upgrade(h, detector) for h in history]


def is_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / STATE).is_file()
