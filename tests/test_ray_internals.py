"""Every private Ray API distgan reaches (distgan.ray_internals) is where it was: a Ray
upgrade that moves one fails here, by name, instead of in a user's job. And a reach that
fails degrades with one line instead of crashing."""

import builtins
import inspect

from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from distgan import ray_internals
from distgan.population import ResumablePB2, ResumablePBT


def test_the_private_apis_distgan_uses_are_there():
    from ray._private import ray_constants, state
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized  # noqa: F401
    from ray.train.v2._internal.execution import context
    from ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client import (
        TrainAutoscalingCoordinatorClient,
    )
    from ray.data._internal.cluster_autoscaler import default_autoscaling_coordinator as coordinator

    assert callable(state.state.get_max_resources_from_cluster_config)
    assert isinstance(ray_constants.DEBUG_AUTOSCALING_STATUS, str)
    assert context.__file__.endswith("context.py")
    assert "cancel_resource_request" in dir(TrainAutoscalingCoordinatorClient)
    # the coordinator is made, detached, on the node of its first caller: made by the driver, it lives there
    made = inspect.getsource(coordinator.get_or_create_autoscaling_coordinator)
    assert "get_node_id()" in made and 'lifetime="detached"' in made
    assert "get_or_create_autoscaling_coordinator" in inspect.getsource(TrainAutoscalingCoordinatorClient)
    # the Tune controller's checkpointing, reached through the scheduler's wrapper
    assert {"force", "wait"} <= set(inspect.signature(TuneController.checkpoint).parameters)
    assert callable(TuneController._mark_trial_to_checkpoint)
    assert "_tune_controller" in inspect.getsource(TrialRunnerWrapper.__init__)
    assert callable(Trial.invalidate_json_state)
    # the raylet's messages reach the driver's console through this printer, looked up when called
    from ray._private import worker

    assert "print_to_stdstream(" in inspect.getsource(worker.listen_error_messages)


def test_the_worker_pool_warning_is_dropped_and_every_other_raylet_message_shows(monkeypatch, capsys):
    from ray._private import worker

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # restored after the test
    ray_internals.quiet_worker_pool_warning()
    wrapped = worker.print_to_stdstream
    ray_internals.quiet_worker_pool_warning()  # a second connect wraps nothing again
    assert worker.print_to_stdstream is wrapped
    pool = ("WARNING: 8 PYTHON worker processes have been started on node: abc with address: 10.0.0.1, which is 4x "
            "the maximum expected startup concurrency (2).")
    worker.print_to_stdstream({"lines": [pool], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": ["Task was killed due to the node running low on memory."], "pid": "raylet",
                               "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr().out
    # the session's own Ray may print a real pool warning (its driver is not distgan's) before the wrap:
    # only this test's line, on node abc, must be gone
    assert "on node: abc" not in out and "running low on memory" in out


def test_pbt_keeps_the_per_trial_state_the_resume_rebuilds():
    pbt = PopulationBasedTraining(time_attr="evals", metric="fd_best", mode="min", perturbation_interval=2,
                                  hyperparam_mutations={"lr": [1e-4, 2e-4]}, synch=True)
    for attr in ("_trial_state", "_synch", "_next_perturbation_sync", "_perturbation_interval", "_time_attr",
                 "_metric", "_metric_op"):
        assert hasattr(pbt, attr), attr
    assert callable(pbt._exploit)
    params = inspect.signature(type(pbt)._exploit).parameters
    assert list(params)[1:4] == ["tune_controller", "trial", "trial_to_clone"]
    from ray.tune.schedulers.pbt import _PBTTrialState

    fields = inspect.getsource(_PBTTrialState.__init__)
    for field in ("last_train_time", "last_perturbation_time", "last_result", "last_score", "last_checkpoint"):
        assert f"self.{field}" in fields, field
    assert issubclass(ResumablePBT, ray_internals.Resumable) and issubclass(ResumablePB2, ray_internals.Resumable)


def test_a_private_api_that_moved_degrades_with_one_line(monkeypatch, capsys):
    real_import = builtins.__import__

    def moved(name, *args, **kwargs):
        if name.startswith(("ray._private", "ray.train.v2._internal", "ray.data._internal")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", moved)
    assert ray_internals.max_resources() is None
    assert ray_internals.autoscaler_running() is False
    ray_internals.withdraw_train_request("abc")
    ray_internals.quiet_train_reports()
    ray_internals.quiet_worker_pool_warning()
    ray_internals.home_autoscaling_coordinator()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("distgan: this Ray has no ") for line in lines), lines


def test_an_exploit_is_saved_through_the_controller_the_wrapper_holds():
    calls = []

    class Controller:
        def _mark_trial_to_checkpoint(self, trial):
            calls.append(("mark", trial))

        def checkpoint(self, force=False, wait=False):
            calls.append(("checkpoint", force, wait))

    class Wrapper:  # what Tune hands a scheduler: warns on any attribute outside its list
        def __init__(self):
            self._tune_controller = Controller()

        def __getattr__(self, attr):
            raise AssertionError(f"reached {attr} through the wrapper")

    class T:
        def invalidate_json_state(self):
            calls.append("json")

        class run_metadata:
            @staticmethod
            def invalidate_cache():
                calls.append("cache")

    trial = T()
    ray_internals.save_experiment_now(Wrapper(), trial)
    assert calls == ["json", "cache", ("mark", trial), ("checkpoint", True, True)]
