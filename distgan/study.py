"""The Optuna study of a tuning job, a journal file. Beside a job on a local disk, it is the
file. A job in object storage keeps a local copy (a journal needs a file it can lock and
append to) at a path that is the same on every machine, because Tune pickles the searcher
with it; the copy goes to the job's storage whenever a trial starts or ends, and comes back
from there before a resume, so a driver killed outright loses at most the trial in flight
and `--resume` on another machine continues the same study.
"""

from __future__ import annotations

import hashlib
import math
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


def sampler(seed: int, trials: int):
    """Optuna's seeded TPE; its first trials (the start points, then up to 4 random draws) explore."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, trials))


def population(experiment_dir: str, name: str, found, base: dict, seed: int, trials: int) -> list[dict]:
    """The starting population of a PBT/PB2 job, asked of the job's study (the space's start
    points first, enqueued), every searched key present (a condition that does not hold
    leaves the base config's value, which PBT's explore needs to see)."""
    import optuna

    from distgan import console

    console.quiet_loggers()  # optuna's first import set its own to INFO
    study = optuna.create_study(study_name=name, storage=journal(experiment_dir, name), sampler=sampler(seed, trials),
                                direction="minimize", load_if_exists=True)
    for point in found.start:
        study.enqueue_trial(point)
    keys = [p.key for p in found.params]
    return [{**{k: base[k] for k in keys}, **found.sample(study.ask(), base)} for _ in range(trials)]


def tell(experiment_dir: str, name: str, outcomes: dict[int, float]) -> int:
    """A population's outcomes, by trial number (Tune's trial index: the population's order):
    its best distance, or failed. A trial told before (a resumed job's) is left as it is.
    Returns how many were told."""
    import optuna

    study = load(experiment_dir, name)
    if study is None:
        return 0
    told = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number in outcomes:
            value = outcomes[t.number]
            ok = math.isfinite(value)
            study.tell(t.number, value if ok else None, state=None if ok else optuna.trial.TrialState.FAIL)
            told += 1
    return told


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
