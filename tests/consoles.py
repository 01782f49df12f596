"""What a clean distgan console holds, for the tests that read one."""

import re

#: What Ray, Tune, Optuna and matplotlib print when left to themselves (seen in a job's console).
INTERNALS = re.compile(r"pid=|\(raylet\)|core_worker|INFO|WARNING|Warning|warnings\.warn|TensorBoard|tensorboard|"
                       r"Configuration for experiment|View detailed results|View run|^\[I \d|Traceback|╭|│|\d,\d{3}\s+ERROR ")


def assert_only_distgans_lines(stdout: str, stderr: str) -> None:
    """A clean job's console: distgan's lines and its live table, nothing from the libraries."""
    assert not stderr.strip(), stderr[-3000:]
    noise = [line for line in stdout.splitlines() if INTERNALS.search(line)]
    assert not noise, noise[:10]
    assert re.search(r"^\[\w+\] step \d+ \| fd_coords2k ", stdout, re.M), stdout[-2000:]  # its evaluations
