"""MLflow tracking: one parent run per tuning job, one child run per trial (logged by rank 0
of the trial's Train workers), one run per plain `distgan train`.

Runs are found again by tags (job name, trial id, run directory), so a resumed job or
trial continues its own run instead of opening a second one. A local SQLite store is
always reached through one `mlflow server` child process: several trials writing one
SQLite file race, one server is a single writer. Experiments are addressed by id, never
through `mlflow.set_experiment` (it sets MLFLOW_EXPERIMENT_ID for every later process).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distgan.config import ConfigError

DEFAULT_EXPERIMENT = "distgan"
DEFAULT_STORE = "outputs/mlflow.db"
PARENT = "mlflow.parentRunId"
KIND, JOB, TRIAL, RUN_DIR = "distgan.kind", "distgan.job", "distgan.trial_id", "distgan.run_dir"
STOP_REASON = "stop_reason"
TAGGED = (STOP_REASON, "worker_nodes")  # an evaluation's text fields, kept as run tags
RAY_JOB_ENV = "DISTGAN_RAY_JOB_ID"  # set by `distgan submit` to the Ray job's submission id
FINAL_STATUS = {"error": "FAILED", "scheduler": "KILLED"}  # any other stop reason: FINISHED
ARTIFACTS_DIR = "mlartifacts"
SERVER_START_S = 60


def default_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store beside the outputs (one for every command,
    so `distgan ui` and `promote` find what `tune` logged)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_uri(uri: str) -> str:
    if sqlite_path(uri) is None and not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(f"--mlflow-uri {uri}: expected sqlite:///PATH or http(s)://HOST:PORT "
                          "(MLflow 3 refuses the file store)")
    return uri


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(db: Path, host: str, port: int, allowed_hosts: str | None = None) -> list[str]:
    """`mlflow server` on an SQLite store, artifacts served from `mlartifacts/` beside it."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
           "--artifacts-destination", str(db.parent / ARTIFACTS_DIR), "--host", host, "--port", str(port),
           "--workers", "1"]
    return cmd + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])


def wait_healthy_url(url: str, proc: subprocess.Popen | None = None, timeout: float = SERVER_START_S) -> None:
    """Until `url` answers 200 (a server's health or version endpoint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"server for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ConfigError(f"{url}: not healthy after {timeout:.0f} s")


def start_server(db: Path, host: str, port: int) -> subprocess.Popen:
    """`mlflow server` on the store `db` in its own process group, once it answers /health."""
    db = db.resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / "mlflow-server.log", "ab") as log:
        proc = subprocess.Popen(server_command(db, host, port), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    wait_healthy_url(f"http://{host}:{port}/health", proc)
    return proc


@contextlib.contextmanager
def served(uri: str, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The URI to log to: http(s) as given; an SQLite store behind a child `mlflow server`
    that lives as long as the block (stopped with its process group)."""
    db = sqlite_path(check_uri(uri))
    if db is None:
        yield uri
        return
    port = port or free_port(host)
    proc = start_server(db, host, port)
    try:
        yield f"http://{host}:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ensure_server(db: Path, host: str = "127.0.0.1", port: int = 5000) -> str:
    """A server that outlives this process (the UI of `make demo`): reused when one already
    answers on the port, else started detached, its pid in mlflow-server.pid beside the store."""
    url = f"http://{host}:{port}"
    with contextlib.suppress(ConfigError):
        wait_healthy_url(f"{url}/health", timeout=1)
        return url
    proc = start_server(db, host, port)
    (db.parent / "mlflow-server.pid").write_text(str(proc.pid))
    return url


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return c.create_experiment(name)
    except MlflowException:  # another process created it first
        return c.get_experiment_by_name(name).experiment_id


def find_run(c, exp_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([exp_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def open_run(c, exp_id: str, tags: dict[str, str], name: str, params: dict[str, Any] | None = None,
             reuse: bool = True) -> str:
    """Continue the latest run carrying these tags (reuse), or start one; params are logged
    once, at the start."""
    from mlflow.entities import Param

    run_id = find_run(c, exp_id, tags) if reuse else None
    if run_id is not None:
        c.update_run(run_id, status="RUNNING")
        return run_id
    run_id = c.create_run(exp_id, tags=tags, run_name=name).info.run_id
    if params:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            c.log_batch(run_id, params=items[i:i + 100])
    c.set_tag(run_id, "distgan.version", _version())
    return run_id


def log_evaluation(c, run_id: str, metrics: dict[str, Any], step: int, grid: Path | None = None) -> None:
    """Every finite number of an evaluation at its step; the sample grid as an image at its step."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    c.log_batch(run_id, metrics=batch)
    if grid is not None and grid.is_file():
        from PIL import Image

        with Image.open(grid) as im:
            c.log_image(run_id, im.convert("RGB"), key="samples", step=step)
    for key in TAGGED:
        if metrics.get(key):
            c.set_tag(run_id, key, metrics[key])


@dataclass(frozen=True)
class RunLog:
    """Where one run logs its evaluations; plain data, so it travels to Ray Train's rank 0."""
    uri: str
    run_id: str

    def log(self, metrics: dict[str, Any], step: int, grid: Path | None = None) -> None:
        log_evaluation(client(self.uri), self.run_id, metrics, step, grid)


@contextlib.contextmanager
def train_run(cfg, out: str | Path, resume: bool) -> Iterator[RunLog | None]:
    """The run of a plain `distgan train`, when tracking.mlflow_uri or MLFLOW_TRACKING_URI
    names a store; --resume continues it. Ends FINISHED, FAILED or KILLED as the run did."""
    uri = cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        yield None
        return
    out = Path(out).resolve()
    with served(uri) as url:
        c = client(url)
        exp_id = experiment_id(c, cfg.tracking.experiment or DEFAULT_EXPERIMENT)
        run_id = open_run(c, exp_id, {KIND: "train", RUN_DIR: str(out)}, out.name, cfg.flat(), reuse=resume)
        print(f"MLflow: {uri} run {run_id}", flush=True)
        try:
            yield RunLog(url, run_id)
        except KeyboardInterrupt:
            end_run(c, run_id, "KILLED")
            raise
        except BaseException:
            end_run(c, run_id, "FAILED")
            raise
        end_run(c, run_id, "FINISHED")


def end_run(c, run_id: str, status: str) -> None:
    """Without MLflow's 'View run at' line: the URL of a job's temporary server would mislead."""
    key, old = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    os.environ[key] = "true"
    try:
        c.set_terminated(run_id, status=status)
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def child_runs(c, exp_id: str, parent_id: str) -> list:
    return list(c.search_runs([exp_id], f"tags.`{PARENT}` = '{parent_id}'", max_results=10000))


def kill_running_children(c, exp_id: str, parent_id: str) -> None:
    """Ctrl-C: the trial drivers died with their runs open; a resume reopens them."""
    for run in child_runs(c, exp_id, parent_id):
        if run.info.status == "RUNNING":
            end_run(c, run.info.run_id, "KILLED")


def close_job(c, exp_id: str, parent_id: str, rows: list[dict[str, Any]], files: list[Path]) -> None:
    """Each child run ends as its trial really ended (ASHA's stop: KILLED; a crash: FAILED)
    with its best FID and checkpoint; the parent gets the table, the plots and the winner."""
    for row in rows:
        run_id = find_run(c, exp_id, {PARENT: parent_id, TRIAL: row["trial_id"]})
        if run_id is None:  # the trial failed before it could open its run
            continue
        c.set_tag(run_id, STOP_REASON, row["stop_reason"])
        if row["checkpoint"]:
            c.set_tag(run_id, "best_checkpoint", row["checkpoint"])
        if math.isfinite(row["best_fid"]):
            c.log_metric(run_id, "best_fid", row["best_fid"], step=row["best_step"])
        end_run(c, run_id, FINAL_STATUS.get(row["stop_reason"], "FINISHED"))
    for f in files:
        c.log_artifact(parent_id, str(f))
    best = rows[0] if rows and math.isfinite(rows[0]["best_fid"]) else None
    if best is not None:
        c.log_metric(parent_id, "best_fid", best["best_fid"])
        c.set_tag(parent_id, "best_trial_id", best["trial_id"])
    end_run(c, parent_id, "FINISHED")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _version() -> str:
    from distgan import __version__

    return __version__
