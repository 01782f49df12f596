"""`--scheduler watch`: distgan's own Tune scheduler, for the GAN question "when do I stop?".

At each evaluation a trial goes on, or stops with a reason it keeps (trials.csv, the table,
MLflow's stop_reason): `plateaued` or `d_overfit` (distgan.stopping.watch_reason: the
trial's own history, read in its distance's noise), `diverged`, or `dominated` (at a rung,
grace·rf^k evaluations, worse than the rung's top-1/rf cutoff by more than the combined
noise: ASHA that does not stop a trial for a difference its distance cannot measure). A
stopped trial's best checkpoint is its lowest-distance one, as always; OptunaSearch is told
that best. The rungs and reasons are kept beside the job (watch.json), so a resumed job
judges as the first one did.
"""

from __future__ import annotations

import json

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from distgan import storage
from distgan.stopping import WatchRules, dominated, watch_reason
from distgan.trial import EVALS

WATCH_FILE = "watch.json"


def read_reasons(experiment_dir: str) -> dict[str, dict]:
    """trial id -> {"reason", "why", "evals"} of the trials the scheduler stopped."""
    return _read(experiment_dir)["reasons"]


def _read(experiment_dir: str) -> dict:
    try:
        return json.loads(storage.read_text(storage.join(experiment_dir, WATCH_FILE)))
    except (FileNotFoundError, ValueError):
        return {"reasons": {}, "rungs": {}}


class WatchScheduler(FIFOScheduler):
    def __init__(self, fd_key: str, max_t: int, experiment_dir: str, rules: WatchRules = WatchRules(),
                 grace_period: int = 1, reduction_factor: int = 2):
        super().__init__()
        self.fd_key, self.se_key, self.max_t = fd_key, f"{fd_key}_se", max_t
        self.experiment_dir, self.rules = experiment_dir, rules
        self.grace_period, self.reduction_factor = grace_period, reduction_factor
        self.rungs_at = []  # grace·rf^k below the budget (no float log: log(1000, 10) is 2.9999999999999996)
        while grace_period * reduction_factor ** len(self.rungs_at) < max_t:
            self.rungs_at.append(grace_period * reduction_factor ** len(self.rungs_at))
        self.reasons: dict[str, dict] | None = None  # read on first use: a restored Tuner unpickles this
        self.rungs: dict[str, dict[str, list[float]]] = {}  # object as it was when the job started
        self.histories: dict[str, list[dict]] = {}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.fd_key not in result or EVALS not in result:
            return TrialScheduler.CONTINUE
        if self.reasons is None:  # a resumed job's earlier decisions
            state = _read(self.experiment_dir)
            self.reasons, self.rungs = state["reasons"], state["rungs"]
        evals = int(result[EVALS])
        history = self.histories.setdefault(trial.trial_id, [])
        if history and evals <= history[-1][EVALS]:  # a resumed trial reports its past again
            return TrialScheduler.CONTINUE
        signals = (self.fd_key, self.se_key, "r_t", "d_gap", "d_gap_se", "diverged")
        history.append({EVALS: evals, **{k: float(result[k]) for k in signals if k in result}})
        if evals < self.grace_period or evals >= self.max_t:  # the last evaluation ends the trial anyway
            return TrialScheduler.CONTINUE
        reason, why = watch_reason(history, self.fd_key, self.rules)
        if not reason and evals in self.rungs_at:
            best = min(history, key=lambda h: h[self.fd_key])
            entry = [best[self.fd_key], best.get(self.se_key, 0.0)]
            rung = self.rungs.setdefault(str(evals), {})
            others = [tuple(v) for t, v in rung.items() if t != trial.trial_id]
            why = dominated(entry[0], entry[1], others, self.reduction_factor, self.rules.noise)
            reason = "dominated" if why else ""
            rung[trial.trial_id] = entry
            self._save()
        if not reason:
            return TrialScheduler.CONTINUE
        self.reasons[trial.trial_id] = {"reason": reason, "why": why, "evals": evals}
        self._save()
        print(f"[{trial.trial_id}] stopped at evaluation {evals}: {reason} ({why})", flush=True)
        return TrialScheduler.STOP

    def _save(self) -> None:
        storage.write_text(storage.join(self.experiment_dir, WATCH_FILE),
                           json.dumps({"reasons": self.reasons, "rungs": self.rungs}, indent=1))

    def debug_string(self) -> str:
        return f"watch: {len(self.reasons or {})} stopped"
