"""The local `mlflow server` in front of an SQLite store: one writer for every process of a
job (several trials writing one SQLite file race), shared by every command that serves the
same store, and gone when the last of them is gone, even after SIGKILL.

A pid file beside the store (mlflow-server.json: pid, host, port, owners) lets a second
command find the running server instead of starting another on the same file; it joins the
owners, and the server stops when no owner is alive. The server runs under a watchdog
(`python -m distgan.server`) in a process group of its own, which polls the owners and
stops the group when the last one is gone: at once when it died, $DISTGAN_MLFLOW_LINGER_S
(30 s) after it left, so the next command on the store (tune, then promote, then sample)
joins it instead of waiting ~8 s for a new one. A server started without an owner (the demo's,
for the UI) stays until `distgan ui --stop`. Joining, leaving and stopping hold a lock file,
so a command never joins a server that is stopping.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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
LOCK_FILE = "mlflow-server.lock"
START_S = 60
POLL_S = 0.5
LINGER_ENV = "DISTGAN_MLFLOW_LINGER_S"
LINGER_S = 30.0


def linger_s() -> float:
    try:
        return max(0.0, float(os.environ.get(LINGER_ENV, LINGER_S)))
    except ValueError:
        raise ConfigError(f"{LINGER_ENV}={os.environ[LINGER_ENV]}: expected seconds") from None


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


def record(db: Path) -> dict | None:
    """The pid file's record of the server on this store, if any."""
    try:
        info = json.loads((db.parent / PID_FILE).read_text())
        return info if isinstance(info, dict) and {"pid", "host", "port"} <= set(info) else None
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a stopped server its starter has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def running(db: Path) -> str | None:
    """The URL of a healthy server already serving this store (from its pid file)."""
    info = record(db)
    if info is None or not alive(int(info["pid"])):
        return None
    url = f"http://{info['host']}:{info['port']}"
    return url if healthy(url) else None


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    with open(db.parent / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_record(db: Path, info: dict) -> None:
    from distgan.storage import atomic_write_local

    atomic_write_local(db.parent / PID_FILE, json.dumps(info).encode())


def start(db: Path, host: str = "127.0.0.1", port: int = 0, owner: int | None = None,
          artifacts: str | None = None) -> tuple[str, subprocess.Popen]:
    """A server on `db`; with an owner pid it is stopped when its owners are gone."""
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
    _write_record(db, {"pid": proc.pid, "host": host, "port": port, **({"owners": [owner]} if owner else {})})
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


def stop_pid(pid: int, timeout: float = 25) -> None:
    """Stop a server's process group that this process did not start (no Popen to wait on)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def serving(db: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """The URL of a server on `db` for the length of the block: a running one joined, else
    one started here; it stops when its last owner dies, or the linger after it left is over."""
    linger = linger_s()  # a bad value fails here, not when the command is done
    db = db.resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    with locked(db):
        url = running(db)
        if url is None:
            url, _ = start(db, host, owner=me)
        else:
            info = record(db)
            if "owners" in info:  # a standing server (no owners) is only used
                info.pop("idle_until", None)
                _write_record(db, {**info, "owners": sorted({*filter(alive, info["owners"]), me})})
    try:
        yield url
    finally:
        leave(db, me, linger)


def leave(db: Path, owner: int, linger: float) -> None:
    """`owner` is done with the server: the last owner out leaves it to its watchdog, which
    stops it after the linger unless a command joins meanwhile (with no linger, now)."""
    with locked(db):
        info = record(db)
        if info is None or owner not in info.get("owners", []):
            return
        rest = [o for o in info["owners"] if o != owner and alive(o)]
        if rest or linger:
            _write_record(db, {**info, "owners": rest, **({} if rest else {"idle_until": time.time() + linger})})
            return
        (db.parent / PID_FILE).unlink(missing_ok=True)
    stop_pid(int(info["pid"]))


def _owners_gone(db: Path, first_owner: int) -> bool:
    """No owner of this watchdog's server is alive (the pid file names them once written),
    and the linger of the last one that left is over."""
    info = record(db)
    if info is None or info.get("pid") != os.getpid():
        return not alive(first_owner)
    if "owners" not in info:  # adopted by `distgan ui`: it stays until `distgan ui --stop`
        return False
    owners = info["owners"]
    if any(map(alive, owners)):
        return False
    return bool(owners) or time.time() >= float(info.get("idle_until", 0))


def adopt(db: Path) -> None:
    """A server some command started becomes a standing one (for the UI): no owner, no linger."""
    with locked(db):
        info = record(db)
        if info is not None and "owners" in info:
            _write_record(db, {k: v for k, v in info.items() if k not in ("owners", "idle_until")})


def main(argv: list[str] | None = None) -> int:
    """The watchdog: `mlflow server` in a process group of its own, stopped with the owner."""
    p = argparse.ArgumentParser(prog="python -m distgan.server")
    p.add_argument("--db", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--owner", type=int, help="stop when this pid (and every owner that joined) is gone")
    p.add_argument("--artifacts")
    a = p.parse_args(argv)
    db = Path(a.db)
    child = subprocess.Popen(command(db, a.host, a.port, artifacts=a.artifacts), start_new_session=True,
                             env=env())
    done = {"stop": False}

    def on_signal(signum, frame):
        done["stop"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not done["stop"] and child.poll() is None:
        if a.owner is not None and _owners_gone(db, a.owner):
            with locked(db):  # no command may join while the decision is made
                if _owners_gone(db, a.owner):
                    info = record(db)
                    if info is not None and info.get("pid") == os.getpid():
                        (db.parent / PID_FILE).unlink(missing_ok=True)
                    break
        time.sleep(POLL_S)
    stop(child)
    return child.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
