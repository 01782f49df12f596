"""How long the command line takes to answer --help (and --version), in a fresh process each
time, median of several runs. Goal: under 1 s (nothing heavy is imported before parsing).

    .venv/bin/python bench/cli_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["tune", "--help"], ["train", "--help"], ["--version"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args(argv)
    out = {}
    for args in COMMANDS:
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "distgan.cli", *args], capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        out[" ".join(args)] = statistics.median(times)
        print(f"distgan {' '.join(args):<14} median {statistics.median(times):.2f} s  (max {max(times):.2f} s, "
              f"{a.runs} runs)")
    return out


if __name__ == "__main__":
    main()
