"""Ray Tune's PBT and PB2, made to survive a killed driver: a resumed population goes on
as it was, and an exploit decided before a kill is carried out (ray_internals.Resumable,
which rebuilds the schedulers' private per-trial state). PB2 explores `loguniform` keys in
log space."""

from __future__ import annotations

import math

from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2

from distgan.ray_internals import Resumable


class ResumablePBT(Resumable, PopulationBasedTraining):
    pass


class ResumablePB2(Resumable, PB2):
    """PB2 whose GP bandit sees each of `log_keys` as its log10: its box (and its proposals)
    span a learning rate's decades evenly. On the linear scale of 5e-5..1e-3, ~95 % of the box
    lies above 1e-4, and so would the proposals."""

    def __init__(self, *args, hyperparam_bounds: dict[str, list[float]], log_keys: tuple[str, ...] = (), **kwargs):
        self._log_keys = tuple(log_keys)
        self._box = {k: hyperparam_bounds[k] for k in self._log_keys}
        super().__init__(*args, hyperparam_bounds={k: to_search(k, b, self._log_keys)
                                                   for k, b in hyperparam_bounds.items()}, **kwargs)

    def _save_trial_state(self, state, time, result, trial):
        score = super()._save_trial_state(state, time, result, trial)
        last = self.data.index[-1]  # the row PB2 just recorded holds the config's values as they are
        for k in self._log_keys:
            self.data.loc[last, k] = math.log10(self.data.loc[last, k])
        return score

    def _get_new_config(self, trial, trial_to_clone):
        # the donor's config goes to PB2 in log space for the GP; what comes back goes out linear
        original = trial_to_clone.config
        trial_to_clone.set_config({**original, **{k: math.log10(original[k]) for k in self._log_keys}})
        try:
            new_config, ops = super()._get_new_config(trial, trial_to_clone)
        finally:
            trial_to_clone.set_config(original)
        # within the box as given: 10 ** log10(1e-3) is 1.0000000000000002e-3
        return {**new_config, **{k: min(max(10.0 ** new_config[k], self._box[k][0]), self._box[k][1])
                                 for k in self._log_keys}}, ops


def to_search(key: str, bounds: list[float], log_keys: tuple[str, ...]) -> list[float]:
    """A key's PB2 box: its log10 bounds when it is searched log-uniformly."""
    return [math.log10(b) for b in bounds] if key in log_keys else list(bounds)
