"""The local MLflow server shared by the commands on one store: it lives until the last of
them leaves (or is killed), and a command never depends on a server another one owns; after
the last one left it waits a while for the next command, and `distgan ui` keeps it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from distgan import server

HOLD = """
import sys
from pathlib import Path
from distgan import server
with server.serving(Path(sys.argv[1])) as url:
    print(url, flush=True)
    sys.stdin.readline()
"""


def _holder(db: Path, linger: float | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **({server.LINGER_ENV: str(linger)} if linger is not None else {})}
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    return p, p.stdout.readline().strip()


def _pid(db: Path) -> int:
    return json.loads((db.parent / server.PID_FILE).read_text())["pid"]


def _release(p: subprocess.Popen) -> None:
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(timeout=60) == 0


def _gone(pid: int, within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while server.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not server.alive(pid)


@pytest.mark.timeout(240)
def test_a_server_two_commands_share_lives_until_the_last_leaves(tmp_path):
    db = tmp_path / "mlflow.db"
    first, url = _holder(db, linger=0)
    second, url2 = _holder(db, linger=0)
    assert url2 == url  # joined, not a second server on the same file
    pid = json.loads((tmp_path / server.PID_FILE).read_text())["pid"]
    assert sorted(json.loads((tmp_path / server.PID_FILE).read_text())["owners"]) == sorted([first.pid, second.pid])
    _release(first)  # the command that started it is done ...
    time.sleep(3 * server.POLL_S)
    assert server.healthy(url)  # ... and the other one still logs
    c = MlflowClient(url)
    run = c.create_run(c.create_experiment("shared")).info.run_id
    c.log_metric(run, "fd", 1.0, step=1)
    third, url3 = _holder(db, linger=0)  # a newcomer joins the running server
    assert url3 == url
    os.kill(third.pid, signal.SIGKILL)  # an owner that dies without leaving
    third.wait()
    _release(second)
    assert _gone(pid), "the server outlived its last owner"
    assert not server.healthy(url) and not (tmp_path / server.PID_FILE).exists()


@pytest.mark.timeout(240)
def test_the_server_of_a_killed_command_goes_with_it(tmp_path):
    db = tmp_path / "mlflow.db"
    holder, url = _holder(db)
    pid = json.loads((tmp_path / server.PID_FILE).read_text())["pid"]
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert _gone(pid) and not server.healthy(url)
    again, url2 = _holder(db)  # a stale pid file is no obstacle to the next command
    assert server.healthy(url2)
    _release(again)


@pytest.mark.timeout(240)
def test_after_the_last_command_left_the_next_one_joins_and_distgan_ui_keeps_it(tmp_path, capsys):
    from distgan.cli import main

    db = tmp_path / "mlflow.db"
    first, url = _holder(db, linger=4)
    pid = _pid(db)
    _release(first)
    assert server.healthy(url) and json.loads((tmp_path / server.PID_FILE).read_text())["owners"] == []
    second, url2 = _holder(db, linger=4)  # within the linger: joined, no second start
    assert url2 == url and _pid(db) == pid and "idle_until" not in json.loads((tmp_path / server.PID_FILE).read_text())
    _release(second)
    assert _gone(pid, within=4 + 10), "the server outlived its linger"
    assert not (tmp_path / server.PID_FILE).exists()
    third, url3 = _holder(db, linger=1)
    pid3 = _pid(db)
    _release(third)
    assert main(["ui", "--mlflow-uri", f"sqlite:///{db}"]) == 0  # the UI on a lingering server keeps it
    assert f"MLflow UI: {url3} (already running; it stays until distgan ui --stop)" in capsys.readouterr().out
    time.sleep(1 + 4 * server.POLL_S)
    assert server.healthy(url3)
    assert main(["ui", "--stop", "--mlflow-uri", f"sqlite:///{db}"]) == 0
    assert _gone(pid3) and not server.healthy(url3)


def test_a_bad_linger_is_one_line_before_any_server_starts(tmp_path, monkeypatch):
    monkeypatch.setenv(server.LINGER_ENV, "soon")
    with pytest.raises(server.ConfigError, match=r"^DISTGAN_MLFLOW_LINGER_S=soon: expected seconds$"):
        with server.serving(tmp_path / "mlflow.db"):
            pass
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
