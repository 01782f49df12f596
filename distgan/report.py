"""The end of a tuning job: a table of trials by their best distance, trials.csv, plots (the
distance curve of every trial, Optuna's parameter importances and parallel coordinates) and,
under population-based training, the champion's lineage."""

from __future__ import annotations

import csv
import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from distgan import storage  # noqa: E402
from distgan.checkpoint import CONFIG  # noqa: E402
from distgan.sweep import Objective  # noqa: E402
from distgan.trial import CHECKPOINT_URI, EVALS  # noqa: E402


def trial_rows(results, fd_key: str, max_evals: int, experiment_dir: str = "",
               objective: Objective | None = None) -> list[dict[str, Any]]:
    """One row per trial: the parameters that made its best checkpoint, best distance (at any
    evaluation), evaluations, stop reason, the best checkpoint's URI, and where its runs
    spooled what MLflow missed; with a second objective, its value at the best checkpoint
    and whether the trial is on the Pareto front."""
    from distgan.watch import read_reasons

    stopped = read_reasons(experiment_dir) if experiment_dir else {}  # the watch scheduler's decisions
    rows = []
    for r in results:
        df = r.metrics_dataframe
        has = df is not None and fd_key in df
        if has:  # a resumed trial reports its evaluations again (trial.replay): keep each step once
            df = df.drop_duplicates("step").sort_values("step").reset_index(drop=True)
        evals = int(df[EVALS].max()) if has else 0
        reason = ""
        if r.error is not None:
            reason = "error"
        elif has:
            reason = str(df["stop_reason"].iloc[-1] or "") if "stop_reason" in df else ""
            reason = reason or ("completed" if evals >= max_evals else "scheduler")
        best = df.loc[df[fd_key].idxmin()] if has else None
        trial_id = trial_of(r, df)
        if reason == "scheduler" and trial_id in stopped:
            reason = stopped[trial_id]["reason"]
        runs = sorted(set(df["run_name"].dropna())) if has and "run_name" in df else [f"trial-{trial_id}"]
        rows.append({
            "trial_id": trial_id,
            "best": float(best[fd_key]) if best is not None else math.inf,
            "best_step": int(best["step"]) if best is not None else -1,
            "evals": evals, "stop_reason": reason, "stop_why": stopped.get(trial_id, {}).get("why", ""),
            "checkpoint": str(best.get(CHECKPOINT_URI, "") or "") if best is not None else "",
            "error_file": storage.join(r.path, "error.txt") if r.error is not None else "",
            "error": error_line(r.error),
            "params": made_by(best.get(CHECKPOINT_URI) if best is not None else None, dict(r.config)),
            "curve": df[["step", fd_key]].values.tolist() if has else [],
            "spools": [storage.join(experiment_dir, "train", run, "mlflow_spool") for run in runs] if experiment_dir else [],
        })
        if objective is not None:
            value = best.get(objective.metric) if best is not None else None
            rows[-1]["second"] = float(value) if value is not None and math.isfinite(value) else objective.worst
    if objective is not None:
        mark_pareto(rows, objective)
    return sorted(rows, key=lambda row: row["best"])


def error_line(error: BaseException | None) -> str:
    """A failed trial's cause in one line: the last line of Ray's wrapped traceback names the
    exception that began it (`DataError: train.batch_size ...`), without its module path."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines or ":" not in lines[-1]:
        return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__
    last = lines[-1]
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+(?:Error|Exception|Interrupt|Exit)\b)", "", last)


def mark_pareto(rows: list[dict], objective: Objective) -> None:
    """`pareto`: no other trial with a finite distance is as good in both objectives and better in one."""
    scored = [r for r in rows if math.isfinite(r["best"])]
    for r in rows:
        r["pareto"] = r in scored and not any(
            objective.dominates((o["best"], o["second"]), (r["best"], r["second"])) for o in scored)


def made_by(where: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """The searched values of the config that made the checkpoint at `where` (under PBT, the
    trial's last config may have come after its best); `params` where it cannot be read."""
    if not where or not isinstance(where, str):
        return params
    try:
        saved = json.loads(storage.read_text(storage.join(where, CONFIG)))
    except (OSError, ValueError):
        return params
    flat = {f"{section}.{k}": v for section, values in saved.items() if isinstance(values, dict)
            for k, v in values.items()}
    return {k: flat.get(k, v) for k, v in params.items()}


def trial_of(result, df) -> str:
    """The trial's id: Tune's own column in its results (after a PBT exploit its `metrics`
    are the donor's last result), else from its directory name."""
    if df is not None and "trial_id" in df and len(df):
        return str(df["trial_id"].iloc[0])
    m = re.match(r"trial_driver_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})_", Path(result.path).name)
    return m.group(1) if m else Path(result.path).name


def trial_index(trial_id: str) -> int | None:
    """Tune's index of a trial ('3f2a1_00003' -> 3): the order the search generated it in."""
    m = re.search(r"_(\d{5})$", trial_id)
    return int(m.group(1)) if m else None


def format_table(rows: list[dict], fd_key: str, param_keys: list[str], objective: Objective | None = None) -> str:
    two = [f"{objective.metric} there", "pareto"] if objective else []
    head = ["trial", f"best {fd_key}", "at step", *two, "evals", "stop", *param_keys]
    lines = [head]
    for row in rows:
        second = [f"{row['second']:.3f}", "*" if row["pareto"] else ""] if objective else []
        lines.append([row["trial_id"], f"{row['best']:.3f}", str(row["best_step"]), *second, str(row["evals"]),
                      row["stop_reason"], *(_fmt(row["params"].get(k, "-")) for k in param_keys)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


def format_lineage(champion: str, lineage: dict[str, list[dict]]) -> str:
    """How the champion's state came to be: the trials whose state it continued, newest first."""
    from distgan.trial import describe_change

    lines = [f"lineage of the champion, trial {champion}:"]
    trial, before = champion, math.inf
    seen = set()
    while (trial, before) not in seen:
        seen.add((trial, before))
        earlier = [r for r in lineage.get(trial, []) if r["step"] < before]
        if not earlier:
            lines.append(f"  {trial} trained from scratch")
            break
        last = max(earlier, key=lambda r: r["step"])
        lines.append(f"  {trial} took {last['from_trial']}'s state at step {last['step']} ({describe_change(last)})")
        trial, before = last["from_trial"], last["step"] + 1
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_csv(rows: list[dict], path: Path, param_keys: list[str], objective: Objective | None = None) -> Path:
    two = [objective.at_best, "pareto"] if objective else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "best", "best_step", *two, "evals", "stop_reason", "stop_why", "checkpoint",
                    "error", "error_file", *param_keys])
        for row in rows:
            second = [row["second"], row["pareto"]] if objective else []
            w.writerow([row["trial_id"], row["best"], row["best_step"], *second, row["evals"], row["stop_reason"],
                        row["stop_why"], row["checkpoint"], row["error"], row["error_file"],
                        *(row["params"].get(k, "") for k in param_keys)])
    return path


def plot_curves(rows: list[dict], fd_key: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    curves = [row for row in rows if row["curve"]]
    for row in curves:
        steps, values = zip(*row["curve"])
        ax.plot(steps, values, marker="o", ms=3, label=f"{row['trial_id']} ({row['stop_reason']})")
    ax.set_xlabel("step")
    ax.set_ylabel(fd_key)
    ax.set_title(f"{fd_key} of every trial")
    if curves:
        ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no trial reported a distance", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def optuna_study(rows: list[dict], dists: dict):
    """The job's trials as an in-memory Optuna study (public API), for Optuna's plots when the
    job had no study of its own (PBT, PB2)."""
    import optuna

    from distgan import console

    console.quiet_loggers()  # optuna's first import set its own to INFO
    study = optuna.create_study(direction="minimize")
    for row in rows:
        if math.isfinite(row["best"]):
            params = {k: v for k, v in row["params"].items() if k in dists}
            try:
                study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                          value=row["best"]))
            except ValueError:  # a value explore moved out of the space's list: plotted without it
                continue
    return study


def plot_optuna(study, out_dir: Path, say: Callable[[str], None] = print) -> list[Path]:
    """Importances and parallel coordinates (of the distance), and a two-objective study's
    Pareto front; skipped (with a note) when too few trials."""
    from optuna.visualization import matplotlib as ovm

    written = []
    multi = len(study.directions) > 1
    target = {"target": lambda t: t.values[0], "target_name": "fd_best"} if multi else {}
    plots = [("param_importances.png", functools.partial(ovm.plot_param_importances, **target)),
             ("parallel_coordinates.png", functools.partial(ovm.plot_parallel_coordinate, **target))]
    if multi:
        plots.append(("pareto_front.png", ovm.plot_pareto_front))
    for name, fn in plots:
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            written.append(out_dir / name)
        except Exception as e:  # Optuna refuses importances for fewer than 2 distinct trials
            say(f"note: {name} not written ({type(e).__name__}: {e})")
    return written
