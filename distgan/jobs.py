"""`distgan submit` and `distgan jobs`: tuning jobs on a Ray cluster through the Ray Jobs API.

The working directory travels as Ray's runtime environment (so the cluster imports this
distgan), without the virtualenv, data, outputs and MLflow stores. The driver learns its
own submission id from DISTGAN_RAY_JOB_ID and tags the MLflow parent run with it.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import shlex
import string
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from distgan.config import ConfigError
from distgan.tracking import RAY_JOB_ENV

EXCLUDES = [".git", ".venv", "venv", "outputs", "data", "mlruns", "mlartifacts", "mlflow.db", "*.egg-info",
            "__pycache__", ".pytest_cache", ".ruff_cache", "*.parquet", "*.db"]
UPLOAD_LIMIT = 512 * 1024 ** 2  # Ray's package limit: its max gRPC message size
REACH_TIMEOUT_S = 10
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _excluded(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in EXCLUDES)


def upload_size(working_dir: Path) -> int:
    """Bytes Ray would package (the same exclude patterns, matched on every path part)."""
    total = 0
    for root, dirs, files in os.walk(working_dir):
        rel = Path(root).relative_to(working_dir)
        dirs[:] = [d for d in dirs if not _excluded(rel / d)]
        total += sum((Path(root) / f).stat().st_size for f in files if not _excluded(rel / f)
                     and (Path(root) / f).is_file())
    return total


def check_reachable(address: str) -> None:
    """One line within seconds, instead of the client's long retries on a dead address."""
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address}: expected the dashboard's http://HOST:8265")
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=REACH_TIMEOUT_S) as r:
            r.read()
    except urllib.error.HTTPError as e:
        if e.code == 401 and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            raise ConfigError(f"--address {address}: the cluster uses Ray token authentication; export "
                              "RAY_AUTH_MODE=token with its token in RAY_AUTH_TOKEN or ~/.ray/auth_token") from None
        return  # it answered: with RAY_AUTH_MODE=token the Jobs client sends the token
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"--address {address}: Ray's Jobs API is not reachable ({reason})") from None


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    check_reachable(address)
    return JobSubmissionClient(address)


def new_submission_id() -> str:
    """Ray's own format (raysubmit_ + 16 letters/digits), chosen here so the driver knows it."""
    return "raysubmit_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {pair}: expected KEY=VALUE")
        env[key] = value
    return env


def submit(address: str, command: list[str], working_dir: str = ".", env: dict[str, str] | None = None,
           pip: list[str] | None = None) -> str:
    """Submit `distgan <command>` as a Ray job; returns the submission id."""
    if not command or command[0] != "tune":
        raise ConfigError("submit: give the tune command after --, e.g. distgan submit --address URL -- tune "
                          "--space tune_spaces/dcgan-core.yaml --preset mnist")
    wd = Path(working_dir).resolve()
    if not (wd / "distgan").is_dir() and not pip:
        raise ConfigError(f"--working-dir {working_dir}: no distgan package there (or give --pip)")
    size = upload_size(wd)
    if size > UPLOAD_LIMIT:
        raise ConfigError(f"--working-dir {working_dir}: {size / 2**20:.0f} MiB to upload after excludes, over Ray's "
                          f"{UPLOAD_LIMIT / 2**20:.0f} MiB limit (move data out, or add it to storage)")
    c = client(address)
    job_id = new_submission_id()
    env_vars = {**(env or {}), RAY_JOB_ENV: job_id}
    if os.environ.get("MLFLOW_TRACKING_URI") and "MLFLOW_TRACKING_URI" not in env_vars:
        env_vars["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
    runtime_env = {"working_dir": str(wd), "excludes": EXCLUDES, "env_vars": env_vars}
    if pip:
        runtime_env["pip"] = pip
    return c.submit_job(entrypoint="python -m distgan.cli " + shlex.join(command), submission_id=job_id,
                        runtime_env=runtime_env, metadata={"distgan": "tune"})


def _status_word(info) -> str:
    """Ray's JobStatus enum as its word (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    return str(info.status.value if hasattr(info.status, "value") else info.status)


def status(address: str, job_id: str) -> str:
    return _status_word(client(address).get_job_info(job_id))


def wait(address: str, job_id: str, timeout: float, poll: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        s = status(address, job_id)
        if s in TERMINAL or time.monotonic() > deadline:
            return s
        time.sleep(poll)


def logs(address: str, job_id: str, follow: bool = False) -> None:
    c = client(address)
    if not follow:
        sys.stdout.write(c.get_job_logs(job_id))
        return
    import asyncio

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())


def list_jobs(address: str) -> list[tuple[str, str, str]]:
    rows = []
    for info in client(address).list_jobs():
        rows.append((info.submission_id or info.job_id or "-", _status_word(info), info.entrypoint))
    return rows


def stop(address: str, job_id: str) -> bool:
    return client(address).stop_job(job_id)
