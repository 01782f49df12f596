"""Faults, each with nothing lost: the MLflow server down for a minute mid-job, a Train worker
killed with SIGKILL, a damaged latest checkpoint, a full disk. (A tuning driver killed with
SIGKILL mid-job is in test_pbt.py and test_storage.py.)"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from distgan import checkpoint, presets, rundir, server, tracking
from distgan.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SMOKE = ["--preset", "mnist_smoke", "--no-progress"]


def _tune(tmp_path, name: str, url: str, experiment: str, *sets: str) -> list[str]:
    args = [sys.executable, "-m", "distgan.cli", "tune", "--preset", "mnist_smoke", "--space",
            str(REPO / "tune_spaces" / "dcgan-core.yaml"), "--trials", "1", "--scheduler", "none", "--storage",
            str(tmp_path), "--name", name, "--mlflow-uri", url, "--experiment", experiment]
    for s in sets:
        args += ["--set", s]
    return args


def _processes(title: str) -> list[int]:
    """Pids whose command line (a Ray process's title) starts with `title`, oldest first."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and cmdline.startswith(title):
            found.append(int(proc.name))
    return sorted(found)


def _lines_until(proc: subprocess.Popen, needle: str, timeout: float = 600) -> str:
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if needle in line or time.time() > deadline:
            break
    return "".join(seen)


@pytest.mark.timeout(900)
def test_mlflow_down_for_a_minute_loses_no_evaluation(ray_session, tmp_path):
    db = tmp_path / "mlflow" / "mlflow.db"
    port = server.free_port()
    url, proc = server.start(db, port=port)
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    job = subprocess.Popen(_tune(tmp_path, "outage", url, "outage", "train.steps=300", "train.eval_every=50",
                                 "scaling.num_workers=1"), env=env, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    try:
        seen = _lines_until(job, "] step 50 |")
        assert "] step 50 |" in seen, seen[-3000:]
        server.stop(proc)  # the tracker goes away mid-trial ...
        time.sleep(60)
        url2, proc = server.start(db, port=port)  # ... and comes back a minute later, same address and store
        assert url2 == url
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, (seen + out)[-4000:]
    assert "spooled" in seen + out  # the worker kept what it could not log
    try:
        c = MlflowClient(url)
        exp = c.get_experiment_by_name("outage").experiment_id
        (parent,) = c.search_runs([exp], f"tags.`{tracking.KIND}` = 'tuning-job'")
        (child,) = tracking.child_runs(c, exp, parent.info.run_id)
        assert parent.info.status == child.info.status == "FINISHED"
        assert child.data.params["scaling.num_workers"] == "1"  # the --set, not --workers' default
        steps = sorted(m.step for m in c.get_metric_history(child.info.run_id, "fd_lenet500"))
        assert steps == [50, 100, 150, 200, 250, 300]  # every evaluation, once
        images = [a.path for a in c.list_artifacts(child.info.run_id, "images") if a.path.endswith(".png")]
        assert len(images) == 6
    finally:
        server.stop(proc)
    assert not list((tmp_path / "outage" / "train").glob("*/mlflow_spool/*.json"))  # the spool was emptied


@pytest.mark.timeout(900)
def test_a_worker_killed_with_sigkill_resumes_from_its_last_checkpoint(ray_session, mlflow_server, tmp_path):
    assert presets.mnist_smoke().scaling.max_failures >= 1  # the default: a run survives a worker's death
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    job = subprocess.Popen(_tune(tmp_path, "kill", mlflow_server, "worker-kill", "train.steps=80", "train.eval_every=20",
                                 "scaling.num_workers=2"), env=env, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    seen = _lines_until(job, "] step 40 |")
    assert "] step 40 |" in seen, seen[-3000:]
    workers = _processes("ray::RayTrainWorker")
    assert workers, "no Train worker process found"
    os.kill(workers[-1], signal.SIGKILL)
    out, _ = job.communicate(timeout=700)
    assert job.returncode == 0, (seen + out)[-4000:]
    c = MlflowClient(mlflow_server)
    exp = c.get_experiment_by_name("worker-kill").experiment_id
    (parent,) = c.search_runs([exp], f"tags.`{tracking.KIND}` = 'tuning-job'")
    (child,) = tracking.child_runs(c, exp, parent.info.run_id)
    assert child.info.status == "FINISHED" and child.data.tags["stop_reason"] == "completed"
    # resumed, not restarted: training went on from the last checkpoint, every step trained once
    steps = [m.step for m in c.get_metric_history(child.info.run_id, "fd_lenet500")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 80
    run = next((tmp_path / "kill" / "train").iterdir())
    assert max(int(n.split("_")[1]) for n in rundir.step_names(str(run))) == 80


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMOKE, "--out", str(out), "--set", f"data.path={mnist_dir}", "--set", "train.steps=30"]) == 0
    latest = out / "step_0000030" / "state.pt"
    raw = bytearray(latest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte: a torn write, a bad disk
    latest.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--set", "train.steps=40", "--no-progress"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipping a damaged checkpoint")]
    assert len(said) == 1 and "step_0000030" in said[0] and "resuming from step_0000020" in said[0]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40]  # step 30 trained again from step 20's state
    state, _, _ = checkpoint.load(out / "step_0000040")
    assert state["step"] == 40


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(mnist_dir, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", *SMOKE, "--out", str(run), "--set", f"data.path={mnist_dir}", "--set", "train.steps=20"]) == 0
    capsys.readouterr()
    if _can_mount_tmpfs():  # a real full disk: a small tmpfs in a mount namespace of our own
        disk, result = tmp_path / "disk", tmp_path / "result.json"
        disk.mkdir()
        script = textwrap.dedent(f"""
            import hashlib, json, os, shutil, subprocess, sys
            from pathlib import Path
            disk, run = Path({str(disk)!r}), Path({str(disk)!r}) / "run"
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
            shutil.copytree({str(run)!r}, run)
            tree = lambda: {{str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
                            for p in run.rglob("*") if p.is_file()}}
            st = os.statvfs(disk)
            with open(disk / "filler", "wb") as f:  # leave 64 KiB: less than a checkpoint
                f.write(b"\\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
            before = tree()
            r = subprocess.run([sys.executable, "-m", "distgan.cli", "train", "--resume", str(run), "--set",
                                "train.steps=30", "--no-progress"], capture_output=True, text=True)
            json.dump({{"rc": r.returncode, "err": r.stderr, "same": tree() == before}}, open({str(result)!r}, "w"))
        """)
        subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", script], check=True,
                       timeout=300)
        got = json.loads(result.read_text())
        lines = got["err"].strip().splitlines()
        assert got["rc"] == 2 and len(lines) == 1, got["err"][-2000:]
        assert "No space left on device" in lines[0] and "step_0000030" in lines[0]
        assert got["same"]  # the previous checkpoint, metrics.jsonl and best.json are as they were
        return
    # where the OS cannot be made full: the rename that would complete the checkpoint fails with ENOSPC
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = _tree(run)
    monkeypatch.setattr(checkpoint.os, "replace", full)
    assert main(["train", "--resume", str(run), "--set", "train.steps=30", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert _tree(run) == before
