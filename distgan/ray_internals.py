"""Every reach into Ray below its public API, in one place (checked against Ray 2.60; Ray is
pinned, and tests/test_ray_internals.py fails loudly when an upgrade moves any of them).

Each reach degrades with one line on stderr instead of crashing a driver or a worker:
what distgan then does without it is said in the line.

- the autoscaler's maximum and whether one runs (cluster capacity: judge a cluster by what
  it can become);
- Train's client of Ray's autoscaling coordinator (withdraw a killed run's request, which
  Ray would otherwise keep 180 s, holding idle nodes up), and the coordinator itself (made
  on the driver's node, so that no worker node hosts it for ever);
- Train V2's per-report logger (named by its file path, out of LoggingConfig's reach);
- the driver's printer of raylet messages (the worker-pool size warning is no logger's);
- PBT and PB2's per-trial state and the Tune controller's checkpointing (a killed
  population resumes as it was).
"""

from __future__ import annotations

import json
import logging
import sys

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from distgan.progress import REPLAYED

log = logging.getLogger(__name__)


def _degraded(what: str, consequence: str, e: BaseException) -> None:
    print(f"distgan: this Ray has no {what} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
          f"{consequence}", file=sys.stderr, flush=True)


def max_resources() -> dict[str, float] | None:
    """What the autoscaler's node groups can hold at most, when it publishes it (KubeRay,
    autoscaler v2); None otherwise."""
    try:
        from ray._private import state

        return state.state.get_max_resources_from_cluster_config()
    except (ImportError, AttributeError) as e:
        _degraded("autoscaler maximum", "the cluster is judged by what is up now", e)
        return None


def autoscaler_running() -> bool:
    """An autoscaler with node types of its own runs (a `ray start` cluster runs the monitor
    with a read-only provider that names each node's type after the node)."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return False
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except (ImportError, AttributeError) as e:
        _degraded("autoscaler status", "the cluster is taken as fixed", e)
        return False
    if not raw:
        return False
    try:
        report = json.loads(raw).get("autoscaler_report")
    except ValueError:
        return False
    mapping = report.get("node_type_mapping") if isinstance(report, dict) else None
    return bool(mapping) and any(kind != f"node_{node}" for node, kind in mapping.items())


def withdraw_train_request(run_id: str) -> None:
    """Cancel what Train run `run_id` asked Ray's autoscaling coordinator for (its request is
    named `train-<run id>`); a failure is logged by the client and the request lapses."""
    try:
        from ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client import (
            TrainAutoscalingCoordinatorClient,
        )
    except ImportError as e:
        _degraded("Train autoscaling client", "idle nodes may stay up to 180 s after a trial", e)
        return
    TrainAutoscalingCoordinatorClient(f"train-{run_id}").cancel_resource_request()


def home_autoscaling_coordinator() -> None:
    """Make Ray's autoscaling coordinator here, on the driver's node (the head, under Ray
    Jobs), before any trial runs. Ray makes it, detached and bound to its node, on the node
    of whichever process first asks: a Train controller or Data executor on a worker node
    would keep that node busy, never idle, so never scaled down."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
        get_or_create_autoscaling_coordinator()
    except Exception as e:  # moved, or refused here (a Ray Client driver): the job runs on without it
        _degraded("autoscaling coordinator", "a worker node that comes to host it stays up", e)


def quiet_train_reports() -> None:
    """Train V2 logs each report's whole metrics dict at INFO through a logger named by its
    file path; the driver prints one line per evaluation already."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError as e:
        _degraded("Train report logger", "each report's metrics may show at INFO", e)
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


#: The raylet's warning that many worker processes started (Ray's "worker_pool_large" error).
POOL_WARNING = "worker processes have been started on node"


def quiet_worker_pool_warning() -> None:
    """The raylet's "N PYTHON worker processes have been started ..." reaches every driver's
    stdout through Ray's error listener, not a logger. Its threshold is 4x the node's CPUs:
    on 2 CPUs two trials' actors (trial, Train controller and helpers, workers) pass it.
    Every other message the listener prints (a worker killed for memory, ...) still shows."""
    try:
        from ray._private import worker

        show = worker.print_to_stdstream
    except (ImportError, AttributeError) as e:
        _degraded("raylet message printer", "its worker-pool warnings may show", e)
        return
    if getattr(show, "drops", None) == POOL_WARNING:
        return

    def print_to_stdstream(data, ignore_prefix):
        if data.get("pid") == "raylet" and any(POOL_WARNING in line for line in data.get("lines", ())):
            return
        show(data, ignore_prefix)

    print_to_stdstream.drops = POOL_WARNING
    worker.print_to_stdstream = print_to_stdstream


def quiet_tune_storage() -> None:
    """Tune's storage logs every checkpoint it persists at INFO (with PBT, one per evaluation)."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)


def save_experiment_now(tune_controller, trial: Trial) -> None:
    """Write a trial's new config and checkpoint into Tune's experiment state at once. The
    scheduler gets a wrapper that warns on every call outside its short list; the
    controller it wraps is used directly."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    trial.invalidate_json_state()
    trial.run_metadata.invalidate_cache()
    controller._mark_trial_to_checkpoint(trial)
    controller.checkpoint(force=True, wait=True)


class Resumable:
    """Mixed into PopulationBasedTraining and PB2 (distgan.population). Tune's experiment
    state holds its trials, not its scheduler, so a resumed PBT would start every trial at
    time 0, and a synchronous population then waits for ever (a paused trial already at the next sync point is never
    chosen to run); an exploit decided just before a kill would be forgotten when the state
    was saved before it. So each trial's scheduler state is rebuilt from its last result,
    and the experiment state is saved as soon as an exploit is decided.

    A resumed trial first reports again the evaluations its run made (trial.replay), some
    newer than what Tune had saved: those bring its clock up to date and decide nothing
    (taken as new, a synchronous population would pause the trial at the same replayed
    evaluation on every restart)."""

    def on_trial_add(self, tune_controller, trial: Trial):
        super().on_trial_add(tune_controller, trial)
        try:
            if not self._catch_up(trial, trial.run_metadata.last_result):  # what Tune saved (no actor asked)
                return
            self._trial_state[trial].last_checkpoint = trial.checkpoint
            if self._synch:
                live = [s.last_train_time for tr, s in self._trial_state.items() if not tr.is_finished()]
                # the next sync point: the slowest unfinished trial's next perturbation
                self._next_perturbation_sync = min(live) + self._perturbation_interval
        except AttributeError as e:
            _degraded("PBT trial state", "a resumed population starts its clocks again", e)

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
        # the decision is in the trial's config and checkpoint: saved now, a driver killed
        # from here on resumes the trial from its donor's state, as decided
        save_experiment_now(tune_controller, trial)
