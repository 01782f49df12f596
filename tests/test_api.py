"""The README's "Python API" example runs as written (mnist_smoke size, the session's Ray),
and the command line is a layer with manners: help without importing torch, a version."""

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from consoles import INTERNALS

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_on_a_terminal(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal (as in a user's shell); all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_readmes_python_api_example_runs_as_written(ray_session, tmp_path):
    shutil.copytree(REPO / "tune_spaces", tmp_path / "tune_spaces")
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    code, out = run_on_a_terminal([sys.executable, "-c", readme_example()], tmp_path, env, timeout=850)
    assert code == 0, out[-5000:]
    assert "fd_lenet500" in out and "models:/distgan-generator@champion" in out
    # the API keeps the command line's console: no Ray, Tune, Optuna, MLflow or matplotlib chatter
    noise = [line for line in out.splitlines() if INTERNALS.search(line)]
    assert not noise, noise[:10]
    # on a terminal the live table of the 2-trial job is redrawn in place (cursor up, clear)
    assert "\x1b[" in out and "F\x1b[J" in out and "best fd_lenet500" in out and "evaluations, ETA" in out
    assert (tmp_path / "outputs" / "api" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "outputs" / "api" / "tune").is_dir() and not (tmp_path / "outputs" / "tune").exists()


def test_help_imports_nothing_heavy_and_the_version_answers():
    probe = ("import sys\nfrom distgan.cli import build_parser\n"
             "for argv in (['train', '--preset', 'mnist'], ['tune', '--space', 'x.yaml'], ['fid', '--real', 'a', '--fake', 'b']):\n"
             "    build_parser().parse_args(argv)\n"
             "heavy = [m for m in ('torch', 'ray', 'mlflow', 'pyarrow', 'optuna') if m in sys.modules]\n"
             "print('heavy:', heavy)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "heavy: []", r.stdout + r.stderr
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "tune", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--scheduler {watch,asha,hyperband,median,pbt,pb2,none}" in r.stdout
    assert "examples:" in r.stdout and "(default: distgan)" in r.stdout  # defaults shown, an example per command
    assert "(default: None)" not in r.stdout and "scaling.num_workers, else 2)" in r.stdout
    print(f"distgan tune --help: {time.perf_counter() - t0:.2f} s")  # bench/cli_speed.py measures it
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("distgan ")
