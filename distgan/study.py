"""The Optuna study of a tuning job, a journal file. Beside a job on a local disk, it is the
file. A job in object storage keeps a local copy (a journal needs a file it can lock and
append to) at a path that is the same on every machine, because Tune pickles the searcher
with it; the copy goes to the job's storage whenever a trial starts or ends, and comes back
from there before a resume, so a driver killed outright loses at most the trial in flight
and `--resume` on another machine continues the same study.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import ray.tune

from distgan import storage

STUDY_FILE = "optuna.journal"


def location(experiment_dir: str, name: str) -> str:
    """Where the searcher writes the journal."""
    if not storage.is_uri(experiment_dir):
        return storage.join(experiment_dir, STUDY_FILE)
    digest = hashlib.sha256(experiment_dir.encode()).hexdigest()[:12]
    return str(Path(tempfile.gettempdir()) / "distgan-studies" / f"{name}-{digest}.journal")


def journal(experiment_dir: str, name: str):
    """Optuna's storage on the job's journal."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(location(experiment_dir, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load(experiment_dir: str, name: str):
    """The job's study, or None when no searcher wrote one."""
    import optuna

    if not Path(location(experiment_dir, name)).is_file():
        return None
    return optuna.load_study(study_name=name, storage=journal(experiment_dir, name))


def fetch(experiment_dir: str, name: str, resume: bool) -> None:
    """Before a job starts: a new job's local copy is a dead job's of the same location, and
    goes; a resumed one gets the copy in storage, unless the local one continues it (a
    journal only grows: it is newer when the driver died between a write and its upload)."""
    if not storage.is_uri(experiment_dir):
        return
    remote, local = storage.join(experiment_dir, STUDY_FILE), Path(location(experiment_dir, name))
    data = storage.read_bytes(remote) if resume and storage.exists(remote) else b""
    if not (resume and local.is_file() and local.read_bytes().startswith(data)):
        local.unlink(missing_ok=True)
        if data:
            storage.atomic_write_local(local, data)


def push(experiment_dir: str, name: str) -> None:
    local = Path(location(experiment_dir, name))
    if storage.is_uri(experiment_dir) and local.is_file():
        storage.upload(local, storage.join(experiment_dir, STUDY_FILE))


class Sync(ray.tune.Callback):
    """Uploads the journal when a trial starts (Optuna has asked) or ends (it has been told:
    Tune informs the searcher before its callbacks)."""

    def __init__(self, experiment_dir: str, name: str):
        self.experiment_dir, self.name = experiment_dir, name

    def on_trial_start(self, iteration, trials, trial, **info):
        push(self.experiment_dir, self.name)

    def on_trial_complete(self, iteration, trials, trial, **info):
        push(self.experiment_dir, self.name)

    def on_trial_error(self, iteration, trials, trial, **info):
        push(self.experiment_dir, self.name)
