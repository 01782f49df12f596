"""The local MLflow server shared by the commands on one store: it lives until the last of
them leaves (or is killed), and a command never depends on a server another one owns."""

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


def _holder(db: Path) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    return p, p.stdout.readline().strip()


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
    first, url = _holder(db)
    second, url2 = _holder(db)
    assert url2 == url  # joined, not a second server on the same file
    pid = json.loads((tmp_path / server.PID_FILE).read_text())["pid"]
    assert sorted(json.loads((tmp_path / server.PID_FILE).read_text())["owners"]) == sorted([first.pid, second.pid])
    _release(first)  # the command that started it is done ...
    time.sleep(3 * server.POLL_S)
    assert server.healthy(url)  # ... and the other one still logs
    c = MlflowClient(url)
    run = c.create_run(c.create_experiment("shared")).info.run_id
    c.log_metric(run, "fd", 1.0, step=1)
    third, url3 = _holder(db)  # a newcomer joins the running server
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
