"""The local `mlflow server` in front of an SQLite store: one writer for every process of a
job (several trials writing one SQLite file race), reused when one already serves the store,
and gone when the command that started it is gone, even after SIGKILL.

The server runs under a watchdog (`python -m distgan.server`): the watchdog starts it in a
process group of its own, asks the kernel to signal the watchdog when its owner dies
(PR_SET_PDEATHSIG), polls the owner as well, and then stops the whole group. A pid file
beside the store (mlflow-server.json: pid, host, port) lets a second command find the running
server instead of starting another on the same file.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from distgan.config import ConfigError

ARTIFACTS_DIR = "mlartifacts"
PID_FILE = "mlflow-server.json"
START_S = 60
PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def command(db: Path, host: str, port: int, allowed_hosts: str | None = None, artifacts: str | None = None) -> list[str]:
    """`mlflow server` on an SQLite store; artifacts served from `mlartifacts/` beside it unless
    given (a URI such as s3://bucket/mlartifacts works: MLflow proxies it)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
           "--artifacts-destination", artifacts or str(db.parent / ARTIFACTS_DIR), "--host", host, "--port", str(port),
           "--workers", "1"]
    return cmd + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])


def env() -> dict[str, str]:
    """The server's environment: MLflow's job runner (huey consumers for GenAI judges, eight
    processes) is off unless asked for: distgan's runs use none."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                                "false")}


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = START_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"the MLflow server for {url} exited with code {proc.returncode} (see its log)")
        if healthy(url):
            return
        time.sleep(0.3)
    raise ConfigError(f"{url}: the MLflow server is not healthy after {timeout:.0f} s")


def running(db: Path) -> str | None:
    """The URL of a healthy server already serving this store (from its pid file)."""
    pid_file = db.parent / PID_FILE
    try:
        info = json.loads(pid_file.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    url = f"http://{info['host']}:{info['port']}"
    return url if healthy(url) else None


def start(db: Path, host: str = "127.0.0.1", port: int = 0, owner: int | None = None,
          artifacts: str | None = None) -> tuple[str, subprocess.Popen]:
    """A server on `db`; with an owner pid it is stopped when the owner dies."""
    db = db.resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    args = [sys.executable, "-m", "distgan.server", "--db", str(db), "--host", host, "--port", str(port)]
    if owner is not None:
        args += ["--owner", str(owner)]
    if artifacts:
        args += ["--artifacts", artifacts]
    with open(db.parent / "mlflow-server.log", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, proc)
    except BaseException:
        stop(proc)
        raise
    from distgan.storage import atomic_write_local

    atomic_write_local(db.parent / PID_FILE, json.dumps({"pid": proc.pid, "host": host, "port": port}).encode())
    return url, proc


def stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def serving(db: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """The URL of a server on `db` for the length of the block: a running one reused (and left
    running), else one started here and stopped at the end, or when this process dies."""
    url = running(db)
    if url is not None:
        yield url
        return
    url, proc = start(db, host, owner=os.getpid())
    try:
        yield url
    finally:
        stop(proc)
        with contextlib.suppress(OSError):
            pid_file = db.resolve().parent / PID_FILE
            if json.loads(pid_file.read_text()).get("pid") == proc.pid:
                pid_file.unlink()


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the owner poll below still applies
        pass


def main(argv: list[str] | None = None) -> int:
    """The watchdog: `mlflow server` in a process group of its own, stopped with the owner."""
    p = argparse.ArgumentParser(prog="python -m distgan.server")
    p.add_argument("--db", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--owner", type=int, help="stop when this pid is gone")
    p.add_argument("--artifacts")
    a = p.parse_args(argv)
    if a.owner is not None:
        _die_with_parent()
    child = subprocess.Popen(command(Path(a.db), a.host, a.port, artifacts=a.artifacts), start_new_session=True,
                             env=env())
    done = {"stop": False}

    def on_signal(signum, frame):
        done["stop"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not done["stop"] and child.poll() is None:
        if a.owner is not None:
            try:
                os.kill(a.owner, 0)
            except ProcessLookupError:
                break
        time.sleep(0.5)
    stop(child)
    return child.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
