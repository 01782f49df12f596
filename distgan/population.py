"""Ray Tune's PBT and PB2, made to survive a killed driver.

Tune's experiment state holds its trials, not its scheduler: a resumed PBT starts with every
trial at time 0. Synchronous PBT then waits for ever (a paused trial already at the next
sync point is never chosen to run), and an exploit decided just before the kill is forgotten
when the experiment state was saved before it. So each trial's scheduler state is rebuilt from its
last result, and the experiment state is saved as soon as an exploit is decided, before the
exploiting trial starts from its donor's checkpoint.

A resumed trial first reports again the evaluations its run made (trial.replay), some of
them newer than what Tune had saved. Those bring the trial's clock up to date and decide
nothing: taken as new, each restart of a synchronous population's trial would pause it at
the same replayed evaluation again, for ever.
"""

from __future__ import annotations

import logging

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2

from distgan.progress import REPLAYED

log = logging.getLogger(__name__)


class _Resumable:
    """Mixed into PopulationBasedTraining and PB2 (it uses their private per-trial state,
    checked against Ray 2.60)."""

    def on_trial_add(self, tune_controller, trial: Trial):
        super().on_trial_add(tune_controller, trial)
        if not self._catch_up(trial, trial.run_metadata.last_result):  # what Tune saved (no actor asked)
            return
        self._trial_state[trial].last_checkpoint = trial.checkpoint
        if self._synch:
            live = [s.last_train_time for tr, s in self._trial_state.items() if not tr.is_finished()]
            # the next sync point: the slowest unfinished trial's next perturbation
            self._next_perturbation_sync = min(live) + self._perturbation_interval

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if result.get(REPLAYED):
            self._catch_up(trial, result)
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def _catch_up(self, trial: Trial, result: dict) -> bool:
        """The trial's clock and score from a result it made before (no decision)."""
        if self._time_attr not in result or self._metric not in result:
            return False
        state = self._trial_state[trial]
        t = result[self._time_attr]
        if t > state.last_train_time:
            state.last_train_time = state.last_perturbation_time = t
            state.last_result = result
            state.last_score = self._metric_op * result[self._metric]
            log.debug("%s caught up at %s=%s", trial, self._time_attr, t)
        return True

    def _exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial):
        super()._exploit(tune_controller, trial, trial_to_clone)
        # the decision is in the trial's config and checkpoint: write them now, so a driver
        # killed from here on resumes the trial from its donor's state, as decided
        trial.invalidate_json_state()
        trial.run_metadata.invalidate_cache()
        tune_controller._mark_trial_to_checkpoint(trial)
        tune_controller.checkpoint(force=True, wait=True)


class ResumablePBT(_Resumable, PopulationBasedTraining):
    pass


class ResumablePB2(_Resumable, PB2):
    pass
