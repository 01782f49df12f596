"""`distgan submit` and `distgan jobs`: tuning jobs on a Ray cluster through the Ray Jobs API,
with `ray job`'s manners: the address given is the one used, `--follow` streams the logs
and the exit status says how the job ended.

The working directory travels as Ray's runtime environment (so the cluster imports this
distgan), without the virtualenv, data, outputs, MLflow stores and anything that holds a
secret (.env, *.pem, .aws/, .ssh/). Secrets never travel in the job's runtime environment:
the cluster's secret store provides them (see cluster/README.md). The driver learns its own
submission id from DISTGAN_RAY_JOB_ID and tags the MLflow parent run with it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import secrets
import shlex
import string
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from distgan.config import ConfigError
from distgan.tracking import RAY_JOB_ENV, redact

EXCLUDES = [".git", ".venv", "venv", "outputs", "data", "mlruns", "mlartifacts", "mlflow.db", "*.egg-info",
            "__pycache__", ".pytest_cache", ".ruff_cache", "*.parquet", "*.db",
            ".env", ".env.*", "*.pem", "*.key", ".aws", ".ssh", ".netrc", ".git-credentials"]
UPLOAD_LIMIT = 512 * 1024 ** 2  # Ray's package limit: its max gRPC message size
REACH_TIMEOUT_S = 10
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
ADDRESS_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY)", re.I)


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
    """Reachable means the Jobs API's /api/version answers 200, or 401 under Ray's token
    authentication; one line within seconds otherwise."""
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address}: expected the dashboard's http://HOST:8265")
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=REACH_TIMEOUT_S) as r:
            r.read()
            if r.status != 200:
                raise ConfigError(f"--address {address}: /api/version answered {r.status}, not a Ray Jobs API")
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise ConfigError(f"--address {address}: /api/version answered {e.code}, not a Ray Jobs API") from None
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            raise ConfigError(f"--address {address}: the cluster uses Ray token authentication; export "
                              "RAY_AUTH_MODE=token with its token in RAY_AUTH_TOKEN or ~/.ray/auth_token") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"--address {address}: Ray's Jobs API is not reachable ({reason})") from None


@contextlib.contextmanager
def _address_only(address: str) -> Iterator[None]:
    """JobSubmissionClient prefers $RAY_ADDRESS / $RAY_API_SERVER_ADDRESS over the address it
    is given: hide them, so the cluster probed is the cluster used."""
    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    check_reachable(address)
    with _address_only(address):
        return JobSubmissionClient(address)


def new_submission_id() -> str:
    """Ray's own format (raysubmit_ + 16 letters/digits), chosen here so the driver knows it."""
    return "raysubmit_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))


def parse_env(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE pairs for the job; anything that looks like a secret is refused, because the
    runtime environment is stored in clear on the cluster and shown in its dashboard."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {pair}: expected KEY=VALUE")
        if SECRET_NAME.search(key) or "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(f"--env {key}: looks like a secret, and a job's runtime env is stored in clear; put it "
                              "in the cluster's secret store (a Kubernetes Secret, the instances' role or env; see "
                              "cluster/README.md, 'Secrets')")
        env[key] = value
    return env


def submit(address: str, command: list[str], working_dir: str = ".", env: dict[str, str] | None = None,
           pip: list[str] | None = None) -> str:
    """Submit `distgan <command>` as a Ray job; returns the submission id."""
    if not command or command[0] != "tune":
        raise ConfigError("submit: give the tune command after --, e.g. distgan submit --address URL -- tune "
                          "--space tune_spaces/dcgan-core.yaml --preset mnist")
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise ConfigError(f"--working-dir {working_dir}: no such directory")
    if not (wd / "distgan").is_dir() and not pip:
        raise ConfigError(f"--working-dir {working_dir}: no distgan package there (or give --pip)")
    size = upload_size(wd)
    if size > UPLOAD_LIMIT:
        raise ConfigError(f"--working-dir {working_dir}: {size / 2**20:.0f} MiB to upload after excludes, over Ray's "
                          f"{UPLOAD_LIMIT / 2**20:.0f} MiB limit (move data out, or add it to storage)")
    c = client(address)
    job_id = new_submission_id()
    env_vars = {**(env or {}), RAY_JOB_ENV: job_id}
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and "MLFLOW_TRACKING_URI" not in env_vars:
        if redact(uri) != uri:
            raise ConfigError("MLFLOW_TRACKING_URI: holds credentials; give the cluster a bare URI (--mlflow-uri) and "
                              "the credentials through its secret store")
        env_vars["MLFLOW_TRACKING_URI"] = uri
    runtime_env = {"working_dir": str(wd), "excludes": EXCLUDES, "env_vars": env_vars}
    if pip:
        runtime_env["pip"] = pip
    with _address_only(address):
        return c.submit_job(entrypoint="python -m distgan.cli " + shlex.join(command), submission_id=job_id,
                            runtime_env=runtime_env, metadata={"distgan": "tune"})


def _status_word(info) -> str:
    """Ray's JobStatus enum as its word (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    return str(info.status.value if hasattr(info.status, "value") else info.status)


def status(address: str, job_id: str) -> str:
    return _status_word(client(address).get_job_info(job_id))


def wait(address: str, job_id: str, timeout: float, poll: float = 2.0) -> str:
    c = client(address)
    deadline = time.monotonic() + timeout
    while True:
        s = _status_word(c.get_job_info(job_id))
        if s in TERMINAL or time.monotonic() > deadline:
            return s
        time.sleep(poll)


def logs(address: str, job_id: str, follow: bool = False) -> str:
    """Print the job's logs (streamed until it ends with `follow`); returns its status."""
    c = client(address)
    if not follow:
        sys.stdout.write(c.get_job_logs(job_id))
        return _status_word(c.get_job_info(job_id))
    import asyncio

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())
    for _ in range(30):  # the log stream ends a moment before the status is final
        s = _status_word(c.get_job_info(job_id))
        if s in TERMINAL:
            return s
        time.sleep(1)
    return s


def list_jobs(address: str) -> list[tuple[str, str, str]]:
    rows = []
    for info in client(address).list_jobs():
        rows.append((info.submission_id or info.job_id or "-", _status_word(info), info.entrypoint))
    return rows


def stop(address: str, job_id: str) -> bool:
    return client(address).stop_job(job_id)
