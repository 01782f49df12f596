"""Full training state <-> a checkpoint directory (state.pt + config.json + metrics.json,
and history.json: every evaluation so far, which the stopping rules and a resumed trial need).

The directory is the unit Ray Train uploads (`ray.train.Checkpoint.from_directory`), so the
same files serve local runs, Tune trials and promotion. Loads use weights_only=True: a
checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from distgan.config import RunConfig

STATE, CONFIG, METRICS, HISTORY = "state.pt", "config.json", "metrics.json", "history.json"


def dir_name(step: int) -> str:
    """A checkpoint directory's name: sorts by step, and a resumed run can find its siblings."""
    return f"step_{step:07d}"


class CheckpointError(ValueError):
    """A missing or unreadable checkpoint; one line naming the path."""


def save(directory: str | Path, state: dict, cfg: RunConfig, metrics: dict[str, Any],
         history: list[dict[str, Any]] | None = None) -> Path:
    """Write into a temporary sibling, then rename: a crash never leaves half a checkpoint."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE)
    (tmp / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    (tmp / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if history is not None:
        (tmp / HISTORY).write_text(json.dumps(history))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, RunConfig, dict]:
    directory = Path(directory)
    if not (directory / STATE).is_file():
        raise CheckpointError(f"{directory}: no checkpoint ({STATE} missing)")
    try:
        state = torch.load(directory / STATE, map_location=map_location, weights_only=True)
        cfg = RunConfig.from_dict(json.loads((directory / CONFIG).read_text()))
        metrics = json.loads((directory / METRICS).read_text()) if (directory / METRICS).is_file() else {}
    except Exception as e:
        raise CheckpointError(f"{directory}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    return state, cfg, metrics


def load_history(directory: str | Path) -> list[dict[str, Any]]:
    """The evaluations up to this checkpoint, oldest first ([] if it kept none)."""
    path = Path(directory) / HISTORY
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable history ({e})") from None


def is_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / STATE).is_file()
