"""The Ray cluster a job runs on: connecting, what it holds now, what its autoscaler can add,
and waiting while nodes come up.

A cluster whose GPU workers scale from zero holds no GPU at submit time: a job is not
refused for what the autoscaler can add. Its maximum is read from the autoscaler's cluster
config when the autoscaler publishes one (KubeRay, autoscaler v2); a v1 autoscaler (the
cluster launcher) does not, so then concurrency follows the job's trials and Tune's pending
trials ask the autoscaler for nodes. (Both reads are Ray internals: distgan.ray_internals.)
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
import ray.tune

from distgan import console, ray_internals
from distgan.config import ConfigError, RunConfig

TRAIN_RUN = "train_run_id"  # Ray Train's id of the run that made a report (Withdraw reads it)

#: Seconds a job waits for the autoscaler to bring up what its first trial needs.
SCALE_TIMEOUT_ENV, SCALE_TIMEOUT_S = "DISTGAN_SCALE_TIMEOUT_S", 900.0


def connect() -> None:
    """Ray at RAY_ADDRESS (`auto`: the cluster `ray start` runs on this machine), else a new
    local instance, never a stale one a killed `ray start` left recorded in /tmp/ray; its
    workers inherit RAY_DATA_LOG_LEVEL, so Ray Data's per-epoch INFO lines go to the logs."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
        address = check_address()
        try:
            # worker logs reach the console only when asked for: distgan's lines come from its drivers
            ray.init(address=address, log_to_driver=console.verbose(), logging_level=console.ray_logging_level())
            console.quiet_loggers()
            if not console.verbose():
                ray_internals.quiet_worker_pool_warning()
        except ConnectionError as e:
            raise ConfigError(f"RAY_ADDRESS {os.environ.get('RAY_ADDRESS')}: cannot connect to Ray "
                              f"({str(e).splitlines()[0]})") from None


def check_address(timeout: float = 5.0) -> str:
    """RAY_ADDRESS (else `local`), checked before anything is written: a HOST:PORT (or
    ray://HOST:PORT) must accept a connection, where Ray's own client retries for minutes."""
    address = os.environ.get("RAY_ADDRESS") or "local"
    if address in ("local", "auto"):
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS {address}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"RAY_ADDRESS {address}: no Ray cluster answers there ({e.strerror or type(e).__name__}; "
                          "start one with `ray start --head`, or unset RAY_ADDRESS for a local one)") from None
    return address


@dataclass(frozen=True)
class Capacity:
    now: dict[str, float]
    """What the nodes alive now hold."""
    most: dict[str, float] | None
    """What the cluster can hold at its largest (None: unknown)."""
    autoscaling: bool


def capacity() -> Capacity:
    now = ray.cluster_resources()
    most = ray_internals.max_resources()
    autoscaling = most is not None or ray_internals.autoscaler_running()
    if most is not None:  # the node groups' maximum, never less than what is up now
        most = {k: max(now.get(k, 0.0), float(most.get(k, 0.0))) for k in set(now) | set(most)}
    return Capacity(now, most, autoscaling)


def trial_bundle(cfg: RunConfig, shared_data: bool = False) -> dict[str, float]:
    """What one run holds: its workers, and the CPU it leaves free for Ray Data (none when
    the job's driver already read the data into the object store: no listing, no decoding)."""
    s = cfg.scaling
    need = {"CPU": s.num_workers * s.cpus_per_worker + (0.0 if shared_data else s.data_cpus)}
    if s.use_gpu:
        need["GPU"] = s.num_workers * s.gpus_per_worker
    return need


def _fits(need: dict[str, float], have: dict[str, float], times: int = 1) -> bool:
    return all(have.get(k, 0.0) + 1e-9 >= v * times for k, v in need.items())


def check_fits(cfg: RunConfig, cap: Capacity, shared_data: bool = False) -> None:
    """Fail before anything starts when the cluster can never hold one run; a cluster that
    can grow is only checked against its maximum (when known)."""
    s = cfg.scaling
    need = trial_bundle(cfg, shared_data)
    have = cap.most if cap.autoscaling else cap.now
    if have is None:  # an autoscaler without a published maximum: it decides
        return
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    worker_cpu = s.num_workers * s.cpus_per_worker
    where = "the cluster can grow to" if cap.autoscaling else "Ray has"
    if worker_cpu > cpus:
        raise ConfigError(f"scaling.num_workers: {s.num_workers} workers x {s.cpus_per_worker} CPU need "
                          f"{worker_cpu:g} CPUs, {where} {cpus:g}")
    if need["CPU"] > cpus:
        raise ConfigError(f"scaling.cpus_per_worker: {s.num_workers} workers x {s.cpus_per_worker} CPU leave "
                          f"{cpus - worker_cpu:g} of {cpus:g} CPUs for Ray Data, which needs scaling.data_cpus="
                          f"{s.data_cpus:g} (the run would hang)")
    if s.use_gpu:
        if gpus == 0:
            raise ConfigError(f"scaling.use_gpu: no GPU in the Ray cluster{' at its largest' if cap.autoscaling else ''}")
        if need["GPU"] > gpus:
            raise ConfigError(f"scaling.num_workers: {s.num_workers} workers x {s.gpus_per_worker} GPU need "
                              f"{need['GPU']:g} GPUs, {where} {gpus:g}")


def concurrency(cfg: RunConfig, cap: Capacity, trials: int, shared_data: bool = False) -> int:
    """Trials at once: what the cluster's maximum holds (autoscaling: not what is up now)."""
    have = cap.most if cap.autoscaling else cap.now
    if have is None:
        return max(1, trials)
    need = trial_bundle(cfg, shared_data)
    fit = min(int(have.get(k, 0.0) // v) for k, v in need.items() if v > 0)
    return max(1, min(fit, trials))


def scale_up(cfg: RunConfig, trials_at_once: int, timeout: float, say: Callable[[str], None] = print,
             poll: float = 2.0, shared_data: bool = False) -> None:
    """Ask the autoscaler for the first trials' resources and wait until one trial fits,
    with one line while nodes come up and one line if they never do. Ray keeps the request
    until it is replaced: release() at the job's end (Ray's autoscaling coordinator, through
    which Train and Data ask for their own resources, replaces it sooner)."""
    need = trial_bundle(cfg, shared_data)
    if _fits(need, ray.cluster_resources()):
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[need] * trials_at_once)
    have = ray.cluster_resources()
    say(f"waiting for the autoscaler: a trial needs {_fmt(need)}, the cluster holds {_fmt(have, need)} "
        f"(up to {timeout:.0f} s)")
    deadline = time.monotonic() + timeout
    while not _fits(need, ray.cluster_resources()):
        if time.monotonic() > deadline:
            release()
            raise ConfigError(f"scaling: the autoscaler did not bring up {_fmt(need)} within {timeout:.0f} s "
                              f"(the cluster holds {_fmt(ray.cluster_resources(), need)}); check its node types "
                              "and quotas (`ray status`)")
        time.sleep(poll)
    say(f"nodes are up: the cluster holds {_fmt(ray.cluster_resources(), need)}")


def release() -> None:
    """Withdraw the explicit request, so idle nodes can go."""
    from ray.autoscaler.sdk import request_resources

    try:
        request_resources(bundles=[])
    except Exception as e:  # nothing lost but idle nodes: say so and go on
        print(f"distgan: could not withdraw the autoscaler request ({str(e).splitlines()[0] if str(e) else e!r}); "
              "idle nodes stay until it is replaced", file=sys.stderr)


class Withdraw(ray.tune.Callback):
    """Tune ends a trial (its budget, ASHA's stop, a PBT pause) by killing it, and its Train
    controller with it, before the controller withdraws what it asked the autoscaler for:
    Ray drops such a request only 180 s later and keeps nodes up for it. So each Train run's
    request is withdrawn here once the run is over: its trial ended, or went on in a new
    run; at the job's end every run's again (`done`), for a controller that refreshed its
    request between its trial's end and its death."""

    def __init__(self):
        self.current: dict[str, str] = {}  # trial id -> the Train run it reports from
        self.seen: set[str] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = result.get(TRAIN_RUN)
        if not run or self.current.get(trial.trial_id) == run:
            return
        if trial.trial_id in self.current:
            withdraw([self.current[trial.trial_id]])
        self.current[trial.trial_id] = run
        self.seen.add(run)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.current:
            withdraw([self.current.pop(trial.trial_id)])

    on_trial_error = on_trial_complete

    def done(self) -> None:
        withdraw(sorted(self.seen))


def withdraw(train_runs: list[str]) -> None:
    """Through Train's own client of Ray's autoscaling coordinator."""
    for run in train_runs:
        ray_internals.withdraw_train_request(run)


def _fmt(resources: dict[str, float], only: dict[str, float] | None = None) -> str:
    keys = only or resources
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in keys)


def multinode(cfg: RunConfig, storage_location: str, mlflow_uri: str, cap: Capacity, data: str = "") -> None:
    """What every node must reach on a multi-node (or growing) cluster: checkpoints and data
    (a local path only when marked as mounted everywhere) and the MLflow store (a server)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 and not cap.autoscaling:
        return
    what = f"a {len(nodes)}-node cluster" if len(nodes) >= 2 else "an autoscaling cluster"
    if "://" not in storage_location and not cfg.scaling.shared_storage:
        raise ConfigError(f"--storage {storage_location}: a local path on {what}; use s3://, gs:// or "
                          "an NFS path every node mounts, marked with --shared-storage")
    if data and "://" not in data and not cfg.scaling.shared_storage:
        raise ConfigError(f"data.path {data}: a local path on {what}; put the data in the storage (s3://, gs://) or on "
                          "an NFS path every node mounts, marked with --shared-storage")
    if mlflow_uri.startswith("sqlite:"):
        raise ConfigError(f"--mlflow-uri {mlflow_uri}: a file on this node, out of reach of the others on "
                          f"{what}; give an http(s) MLflow server")
