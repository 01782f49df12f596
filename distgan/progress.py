"""What a person reads on the console while runs go on: one line per evaluation, and the
table of a tuning job's trials (distgan.live keeps it up to date during the job; status.json
in the experiment directory holds it, so `distgan tune status` shows it from anywhere that
reads the job's storage)."""

from __future__ import annotations

import json
import math
from typing import Any

from distgan import storage
from distgan.metrics.control import describe

REPLAYED = "replayed"  # 1 on an evaluation a resumed Tune trial reports again (see trial.replay)
STATUS_FILE = "status.json"


def format_eval(metrics: dict, fd_key: str) -> str:
    se = f" +-{metrics[f'{fd_key}_se']:.2g}" if f"{fd_key}_se" in metrics else ""
    parts = [f"step {int(metrics['step'])}", f"{fd_key} {metrics[fd_key]:.3f}{se}",
             f"D(x) {metrics.get('d_real', float('nan')):.3f}", f"D(G(z)) {metrics.get('d_fake', float('nan')):.3f}"]
    if "r_t" in metrics:
        parts.append(f"r_t {metrics['r_t']:.2f}")
    if "d_gap" in metrics:
        parts.append(f"d_gap {metrics['d_gap']:+.2f}")
    if "aug_p" in metrics:
        parts.append(f"aug p {metrics['aug_p']:.2f}")
    for key in ("classes_covered", "modes_covered"):
        if key in metrics:
            parts.append(f"{key} {int(metrics[key])}")
    if control := describe(metrics):
        parts.append(f"codes: {control}")
    parts.append(f"{metrics['img_per_s']:.0f} img/s")
    if "eval_s" in metrics:
        parts.append(f"eval {metrics['eval_s']:.1f} s")
    if metrics.get("stop_reason"):
        parts.append(f"stopped: {metrics['stop_reason']}")
    if metrics.get(REPLAYED):
        parts.append("replayed")
    return " | ".join(parts)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def render(status: dict[str, Any]) -> list[str]:
    """The table of a status dict (what status.json holds)."""
    key = status["metric"]
    rows = [["trial", "state", "step", "evals", f"best {key}", "last (+-se)", "r_t", "d_gap", "stop"]]
    for t in status["trials"]:
        best = t.get("best")
        last = f"{t['last']:.3f}" + (f" +-{t['se']:.2g}" if "se" in t else "") if "last" in t else "-"
        rows.append([t["trial_id"], t["state"], str(t.get("step", "-")), f"{t.get('evals', 0)}/{status['evals_per_trial']}",
                     f"{best:.3f}" if isinstance(best, (int, float)) and math.isfinite(best) else "-", last,
                     f"{t['r_t']:.2f}" if "r_t" in t else "-", f"{t['d_gap']:+.2f}" if "d_gap" in t else "-",
                     t.get("stop_reason", "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    done = sum(1 for t in status["trials"] if t["state"] in ("TERMINATED", "ERROR"))
    lines.append(f"{status['job']}: {done} of {status['trials_total']} trials ended, {status['evals_done']} of "
                 f"{status['evals_total']} evaluations, ETA {status['eta']}")
    return lines


def read_status(experiment_dir: str) -> dict[str, Any]:
    from distgan.config import ConfigError

    where = storage.join(storage.normalize(experiment_dir), STATUS_FILE)
    try:
        return json.loads(storage.read_text(where))
    except FileNotFoundError:
        raise ConfigError(f"{experiment_dir}: no {STATUS_FILE} (not a distgan tuning job, or it has not started)") from None
    except ValueError as e:
        raise ConfigError(f"{where}: unreadable ({e})") from None
