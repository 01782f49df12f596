"""MLflow tracking: one parent run per tuning job, one child run per trial (logged from the
trial's Train controller once Train has each evaluation's checkpoint), one run per plain
`distgan train`.

Runs are found again by tags (job name, trial id, run directory), so a resumed job or
trial continues its own run instead of opening a second one. Experiments are addressed by
id, never through `mlflow.set_experiment` (it sets MLFLOW_EXPERIMENT_ID for every later
process).

A tracker outage never kills a trial or loses an evaluation: during training every call
has a short timeout and no client-side retries, a failed evaluation goes to a spool beside
the run's checkpoints, and the spool is replayed at the next successful log, at the end of
the trial and when the job closes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distgan import server, storage
from distgan.config import ConfigError

DEFAULT_EXPERIMENT = "distgan"
DEFAULT_STORE = "outputs/mlflow.db"
# tags every module reads and writes
PARENT = "mlflow.parentRunId"
KIND, JOB, TRIAL, RUN_DIR = "distgan.kind", "distgan.job", "distgan.trial_id", "distgan.run_dir"
STOP_REASON, BEST_CHECKPOINT, BEST_TRIAL, DATA_DIR = "stop_reason", "best_checkpoint", "best_trial_id", "data_dir"
STOP_WHY = "stop_why"  # the watch scheduler's reading behind a stop
DISTANCE, LINEAGE, STUDY = "distance_metric", "lineage", "optuna_study"
OBJECTIVES, PARETO, BEST_PARAMS = "objectives", "pareto", "best_params"  # a two-objective job's "fd_lenet2k:min,info_rho:max" and front
TAGGED = (STOP_REASON, "worker_nodes")  # an evaluation's text fields, kept as run tags
# metrics
BEST = "fd_best"  # a trial's (and a job's) lowest Fréchet distance, the objective
LEGACY_BEST = "best_fid"  # what runs logged before metric names carried their feature space
RAY_JOB_ENV = "DISTGAN_RAY_JOB_ID"  # set by `distgan submit` to the Ray job's submission id
FINAL_STATUS = {"error": "FAILED", "scheduler": "KILLED", "dominated": "KILLED"}  # any other stop reason: FINISHED
PROBE_TIMEOUT_S = 5
CALL_TIMEOUT_S = 10
RECONNECT_ENV, RECONNECT_S = "DISTGAN_MLFLOW_RECONNECT_S", 600.0


def default_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store beside the outputs (one for every command,
    so `distgan ui` and `promote` find what `tune` logged)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_uri(uri: str) -> str:
    if sqlite_path(uri) is None and not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(f"--mlflow-uri {redact(uri)}: expected sqlite:///PATH or http(s)://HOST:PORT "
                          "(MLflow 3 refuses the file store)")
    if urlsplit(uri).password is not None:
        raise ConfigError(f"--mlflow-uri {redact(uri)}: holds a password; give the bare URI and the credentials in "
                          "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
    return uri


def redact(uri: str) -> str:
    """A URI without user:password, fit to print or log."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return parts._replace(netloc=f"***@{host}{f':{parts.port}' if parts.port else ''}").geturl()


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One line within seconds when an http(s) tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    if not server.healthy(uri, timeout):
        raise ConfigError(f"--mlflow-uri {redact(uri)}: the MLflow server does not answer {uri.rstrip('/')}/health "
                          f"within {timeout:.0f} s (is it running? reachable from here?)")


def await_server(uri: str, timeout: float, say=print) -> None:
    """Wait (bounded) for an http(s) tracking server that went away during a job, so the job's
    runs can be closed and its spooled evaluations logged; one line while waiting."""
    if not uri.startswith(("http://", "https://")) or server.healthy(uri):
        return
    say(f"MLflow {redact(uri)} is unreachable: waiting up to {timeout:.0f} s to log the spooled evaluations and "
        "close the job's runs")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        if server.healthy(uri):
            say(f"MLflow {redact(uri)} is back")
            return
    raise ConfigError(f"--mlflow-uri {redact(uri)}: unreachable for {timeout:.0f} s; the evaluations stay spooled "
                      "in the job's storage: `distgan tune --resume` logs them")


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """MLflow reads its settings from the environment at each call: set for the block only."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bounded(timeout: float = CALL_TIMEOUT_S):
    """MLflow calls that fail within `timeout` seconds instead of retrying for minutes (its
    defaults: 7 retries with backoff, 120 s per request)."""
    return environ(MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout)), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")


@contextlib.contextmanager
def served(uri: str) -> Iterator[str]:
    """The URI to log to: http(s) as given (after a health probe); an SQLite store behind a
    local `mlflow server` (reused when one serves it, else started for the block)."""
    db = sqlite_path(check_uri(uri))
    if db is None:
        check_reachable(uri)
        yield uri
        return
    with server.serving(db) as url:
        yield url


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


def literal(value: str) -> str | None:
    """`value` as an MLflow filter string, quoted with the quote it lacks (MLflow's filters
    have no escapes); None when it holds both."""
    quote = next((q for q in ("'", '"') if q not in value), None)
    return None if quote is None else f"{quote}{value}{quote}"


def tag_filter(tags: dict[str, str]) -> tuple[str, dict[str, str]]:
    """An MLflow filter for these tags, and the tags it cannot hold (matched by the caller)."""
    clauses, left = [], {}
    for k, v in tags.items():
        if literal(v) is None:
            left[k] = v
        else:
            clauses.append(f"tags.`{k}` = {literal(v)}")
    return " and ".join(clauses), left


def find_run(c, exp_id: str, tags: dict[str, str]) -> str | None:
    query, left = tag_filter(tags)
    runs = c.search_runs([exp_id], query, max_results=1 if not left else 10000, order_by=["attributes.start_time DESC"])
    runs = [r for r in runs if all(r.data.tags.get(k) == v for k, v in left.items())]
    return runs[0].info.run_id if runs else None


def open_run(c, exp_id: str, tags: dict[str, str], name: str, params: dict[str, Any] | None = None,
             reuse: bool = True) -> str:
    """Continue the latest run carrying these tags (reuse), or start one; params are logged
    once, at the start, with credentials stripped from any URI among them."""
    from mlflow.entities import Param

    run_id = find_run(c, exp_id, tags) if reuse else None
    if run_id is not None:
        c.update_run(run_id, status="RUNNING")
        return run_id
    run_id = c.create_run(exp_id, tags=tags, run_name=name).info.run_id
    if params:
        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            c.log_batch(run_id, params=items[i:i + 100])
    c.set_tag(run_id, "distgan.version", _version())
    return run_id


def log_evaluation(c, run_id: str, metrics: dict[str, Any], step: int, grid: Path | None = None,
                   timestamp: int | None = None) -> None:
    """Every finite number of an evaluation at its step; the sample grid as an image at its step."""
    from mlflow.entities import Metric

    now = timestamp or int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    c.log_batch(run_id, metrics=batch)  # the store drops a metric it holds with the same timestamp
    if grid is not None and Path(grid).is_file() and not (timestamp and has_image(c, run_id, step)):
        from PIL import Image

        with Image.open(grid) as im:
            c.log_image(run_id, im.convert("RGB"), key="samples", step=step)
    for key in TAGGED:
        if metrics.get(key):
            c.set_tag(run_id, key, metrics[key])


def has_image(c, run_id: str, step: int) -> bool:
    """Whether the run holds its sample grid of `step` (log_image names its files
    `images/samples+step+<step>+…`, with % for + in older MLflow)."""
    name = re.compile(rf"^samples[+%]step[+%]{step}[+%]")
    return any(name.match(f.path.split("/")[-1]) for f in c.list_artifacts(run_id, "images"))


@dataclass(frozen=True)
class RunLog:
    """Where one run logs its evaluations; plain data, so it travels to Ray Train's rank 0.
    `spool` (a path or URI beside the run's checkpoints) keeps what the tracker missed."""
    uri: str
    run_id: str
    spool: str = ""

    @classmethod
    def for_trial(cls, uri: str, exp_id: str, parent_id: str, trial_id: str, params: dict, spool: str
                  ) -> "RunLog | None":
        """The trial's child run (its own again on resume), or None when the tracker stays
        unreachable for a minute: the trial trains untracked rather than not at all."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with bounded():
                    c = client(uri)
                    run_id = open_run(c, exp_id, {PARENT: parent_id, KIND: "trial", TRIAL: trial_id},
                                      f"trial-{trial_id}", params)
                return cls(uri, run_id, spool)
            except Exception as e:  # any transport or server error of the MLflow client
                if time.monotonic() > deadline:
                    print(f"[{trial_id}] MLflow {redact(uri)} unreachable ({type(e).__name__}): this trial is not "
                          "tracked", flush=True)
                    return None
                time.sleep(5)

    def log(self, metrics: dict[str, Any], step: int, grid: Path | None = None) -> bool:
        """Log now (with whatever waited in the spool first); on failure spool it. True when logged."""
        try:
            with bounded():
                c = client(self.uri)
                self.replay(c)
                log_evaluation(c, self.run_id, metrics, step, grid)
            return True
        except Exception as e:
            if not self.spool:
                raise
            self._spool(metrics, step, grid)
            print(f"MLflow {redact(self.uri)} unreachable ({type(e).__name__}): step {step} spooled to {self.spool}",
                  flush=True)
            return False

    def _spool(self, metrics: dict[str, Any], step: int, grid: Path | None) -> None:
        name = f"{step:09d}"
        record = {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, "step": step,
                  "timestamp": int(time.time() * 1000)}
        if grid is not None and Path(grid).is_file():
            storage.write_bytes(storage.join(self.spool, f"{name}.png"), Path(grid).read_bytes())
        storage.write_text(storage.join(self.spool, f"{name}.json"), json.dumps(record))

    def replay(self, c=None) -> int:
        """Log what the spool holds, oldest first, removing each entry once logged. A replay cut
        between the two logs it again harmlessly: each entry keeps its first timestamp and
        a grid already there is not logged twice."""
        if not self.spool:
            return 0
        names = [n for n in storage.list_dir(self.spool) if n.endswith(".json")]
        if not names:
            return 0
        import tempfile

        c = c or client(self.uri)
        for name in names:
            where = storage.join(self.spool, name)
            record = json.loads(storage.read_text(where))
            png = storage.join(self.spool, name.replace(".json", ".png"))
            with tempfile.TemporaryDirectory() as tmp:
                grid = storage.download(png, Path(tmp) / "grid.png") if storage.exists(png) else None
                log_evaluation(c, self.run_id, record["metrics"], record["step"], grid, record["timestamp"])
            for f in (where, png):
                if storage.exists(f):
                    fs, path = storage.resolve(f)
                    fs.delete_file(path)
        return len(names)

    def end(self, status: str) -> None:
        """Best effort: replay the spool and close the run; if the tracker is down, the job's
        close (or a resume) does it later."""
        try:
            with bounded():
                c = client(self.uri)
                self.replay(c)
                end_run(c, self.run_id, status)
        except Exception as e:
            print(f"MLflow {redact(self.uri)} unreachable ({type(e).__name__}): run {self.run_id} left open; "
                  "the job closes it when it can", flush=True)


def log_lineage(uri: str, run_id: str, records: list[dict], exploit_step: int | None) -> None:
    """A PBT trial's lineage on its run, as a tag and a JSON artifact; `exploit_step`: a point on
    the `exploit` metric at the step it took another trial's state (the events stay when an
    exploit a killed job forgot is taken out of the lineage). Idempotent: a resume repeats it."""
    try:
        with bounded():
            c = client(uri)
            if records:
                c.set_tag(run_id, LINEAGE, " <- ".join(f"{r['from_trial']}@{r['step']}" for r in records)[:5000])
            elif LINEAGE in c.get_run(run_id).data.tags:
                c.delete_tag(run_id, LINEAGE)
            if exploit_step is not None and exploit_step not in {
                    m.step for m in c.get_metric_history(run_id, "exploit")}:
                c.log_metric(run_id, "exploit", 1.0, step=exploit_step)
            c.log_text(run_id, json.dumps(records, indent=2), "lineage.json")
    except Exception as e:
        print(f"MLflow {redact(uri)}: lineage not logged ({type(e).__name__})", flush=True)


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
        print(f"MLflow: {redact(uri)} run {run_id}", flush=True)
        log = RunLog(url, run_id, str(out / "mlflow_spool"))
        try:
            yield log
        except KeyboardInterrupt:
            log.end("KILLED")
            raise
        except BaseException:
            log.end("FAILED")
            raise
        log.end("FINISHED")


def end_run(c, run_id: str, status: str) -> None:
    """Without MLflow's 'View run at' line: the URL of a job's temporary server would mislead."""
    with environ(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"):
        c.set_terminated(run_id, status=status)


def child_runs(c, exp_id: str, parent_id: str) -> list:
    return list(c.search_runs([exp_id], tag_filter({PARENT: parent_id})[0], max_results=10000))


def kill_running_children(c, exp_id: str, parent_id: str) -> None:
    """Ctrl-C: the trial drivers died with their runs open; a resume reopens them."""
    for run in child_runs(c, exp_id, parent_id):
        if run.info.status == "RUNNING":
            end_run(c, run.info.run_id, "KILLED")


def close_job(c, exp_id: str, parent_id: str, rows: list[dict[str, Any]], files: list[Path],
              spools: dict[str, str] | None = None, objectives: str = "") -> None:
    """Each child run gets what its trial's spool holds, then ends as the trial really ended
    (ASHA's stop: KILLED; a crash: FAILED) with its best distance and checkpoint; the parent
    gets the table, the plots and the winner. Two `objectives` ("fd_lenet2k:min,info_rho:max"):
    each child also its second objective at its best checkpoint and whether it is on the
    Pareto front, the parent the front."""
    second = objectives.split(",")[1].split(":")[0] if objectives else ""
    for row in rows:
        run_id = find_run(c, exp_id, {PARENT: parent_id, TRIAL: row["trial_id"]})
        if run_id is None:  # the trial failed before it could open its run
            continue
        for spool in (spools or {}).get(row["trial_id"], []):
            RunLog(c.tracking_uri, run_id, spool).replay(c)
        c.set_tag(run_id, STOP_REASON, row["stop_reason"])
        if row.get("stop_why"):
            c.set_tag(run_id, STOP_WHY, row["stop_why"][:5000])
        if row["checkpoint"]:
            c.set_tag(run_id, BEST_CHECKPOINT, row["checkpoint"])
            # the searched values that made it (a PBT trial's params are those it started with)
            c.set_tag(run_id, BEST_PARAMS, json.dumps(row["params"], sort_keys=True, default=str)[:5000])
        if math.isfinite(row["best"]):
            c.log_metric(run_id, BEST, row["best"], step=row["best_step"])
        if second:
            c.log_metric(run_id, f"{second}_at_best", row["second"], step=max(row["best_step"], 0))
            c.set_tag(run_id, PARETO, str(row["pareto"]).lower())
        end_run(c, run_id, FINAL_STATUS.get(row["stop_reason"], "FINISHED"))
    for f in files:
        c.log_artifact(parent_id, str(f))
    if second:
        c.set_tag(parent_id, OBJECTIVES, objectives)
        c.set_tag(parent_id, PARETO, ",".join(r["trial_id"] for r in rows if r["pareto"]))
    best = rows[0] if rows and math.isfinite(rows[0]["best"]) else None
    if best is not None:
        c.log_metric(parent_id, BEST, best["best"])
        c.set_tag(parent_id, BEST_TRIAL, best["trial_id"])
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
