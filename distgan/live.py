"""The live table of a tuning job (a Tune callback, in the job's driver): trial, state, step,
best distance, stop reason and an ETA from the evaluations left, redrawn in place on a
terminal; otherwise printed as plain lines, with one line per evaluation. Written to the
experiment directory as status.json."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import ray.tune

from distgan import storage
from distgan.progress import REPLAYED, STATUS_FILE, format_duration, format_eval, render
from distgan.trial import describe_change, exploit_run, read_lineage
from distgan.watch import read_reasons


class TrialTable(ray.tune.Callback):
    """Tune callback: the live table of a job's trials."""

    def __init__(self, job, fd_key: str, evals_per_trial: int, plain_every: float = 30.0, write_every: float = 5.0):
        self.name, self.experiment_dir, self.total = job.name, job.experiment_dir, job.trials
        self.fd_key, self.per_trial = fd_key, evals_per_trial
        self.tty = sys.stdout.isatty()  # the stream itself is looked up when written: Tune pickles callbacks
        self.plain_every, self.write_every = plain_every, write_every
        self.rows: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, str] = {}  # trial id -> the Train run it reports from
        self.t0, self.new_evals = time.monotonic(), 0
        self.drawn, self.last_plain, self.last_write, self.changed = 0, 0.0, 0.0, False

    def _row(self, trial) -> dict[str, Any]:
        return self.rows.setdefault(trial.trial_id, {"trial_id": trial.trial_id, "state": "PENDING", "evals": 0,
                                                     "best": math.inf, "stop_reason": ""})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial)["state"] = "RUNNING"
        self.changed = True

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        self._exploit_line(trial.trial_id, result.get("run_name"))
        if not self.tty and self.fd_key in result and not result.get(REPLAYED):  # a redrawn table shows it
            print(f"[{trial.trial_id}] {format_eval(result, self.fd_key)}", file=sys.stdout, flush=True)
        if self.fd_key in result:
            row["best"] = min(row["best"], float(result[self.fd_key]))
            row["step"] = int(result.get("step", 0))
            row["last"] = float(result[self.fd_key])  # the signals of its latest evaluation
            row.update({k: float(result[v]) for k, v in (("se", f"{self.fd_key}_se"), ("r_t", "r_t"),
                                                          ("d_gap", "d_gap")) if v in result})
            evals = int(result.get("evals", 0))
            if not result.get(REPLAYED) and evals > row["evals"]:
                self.new_evals += evals - row["evals"]
            row["evals"] = max(row["evals"], evals)
        if result.get("stop_reason"):
            row["stop_reason"] = result["stop_reason"]
        row["state"] = "RUNNING"

    def _exploit_line(self, trial_id: str, run: str | None) -> None:
        """A trial that goes on in a new run took another trial's state (PBT): say so once."""
        before, self.runs[trial_id] = self.runs.get(trial_id), run or self.runs.get(trial_id, "")
        if before is None or not run or run == before:
            return
        records = read_lineage(self.experiment_dir, trial_id)
        if records and exploit_run(trial_id, records[-1]) == run:
            rec = records[-1]
            print(f"[{trial_id}] continues from trial {rec['from_trial']} at step {rec['step']}: "
                  f"{describe_change(rec)}", file=sys.stdout, flush=True)
            self.drawn = 0  # a redrawn table goes on below the line, not over it

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["state"] = "TERMINATED"
        if not row["stop_reason"]:
            stopped = read_reasons(self.experiment_dir).get(trial.trial_id) if row["evals"] < self.per_trial else None
            row["stop_reason"] = ("completed" if row["evals"] >= self.per_trial
                                  else stopped["reason"] if stopped else "scheduler")
        self.changed = True

    def on_trial_error(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row["state"], row["stop_reason"] = "ERROR", "error"
        self.changed = True

    def on_step_end(self, iteration, trials, **info):
        for t in trials:  # trials Tune has created but not started yet, and paused ones
            row = self._row(t)
            if t.status in ("PENDING", "PAUSED") and row["state"] not in ("TERMINATED", "ERROR"):
                row["state"] = t.status
        self._show()

    def on_experiment_end(self, trials, **info):
        self._show(final=True)

    def status(self) -> dict[str, Any]:
        rows = sorted(self.rows.values(), key=lambda r: r["trial_id"])
        done = sum(r["evals"] for r in rows)
        ended = [r for r in rows if r["state"] in ("TERMINATED", "ERROR")]
        left = sum(self.per_trial - r["evals"] for r in rows if r not in ended)
        left += max(0, self.total - len(rows)) * self.per_trial
        elapsed = time.monotonic() - self.t0
        rate = self.new_evals / elapsed if self.new_evals else 0.0
        eta = format_duration(left / rate) if rate else ("0 s" if not left else "?")
        return {"job": self.name, "metric": self.fd_key, "trials_total": self.total, "evals_per_trial": self.per_trial,
                "evals_done": done, "evals_total": done + left, "eta": eta, "updated": time.time(),
                "trials": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                           for r in rows]}

    def _show(self, final: bool = False) -> None:
        now = time.monotonic()
        status = self.status()
        if final or now - self.last_write >= self.write_every or self.changed:
            try:
                storage.write_text(storage.join(self.experiment_dir, STATUS_FILE), json.dumps(status, indent=1))
            except OSError:
                pass  # the table on the console still shows it
            self.last_write = now
        lines = render(status)
        stream = sys.stdout
        if self.tty:
            if self.drawn:
                stream.write(f"\x1b[{self.drawn}F\x1b[J")
            stream.write("\n".join(lines) + "\n")
            self.drawn = len(lines)
        elif final or self.changed or now - self.last_plain >= self.plain_every:
            stream.write("\n".join(lines) + "\n")
            self.last_plain = now
        stream.flush()
        self.changed = False
