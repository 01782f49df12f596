"""The end of a tuning job: a table of trials by best FID, trials.csv, and plots (FID
curves of every trial, Optuna parameter importances and parallel coordinates)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from distgan.loop import EVALS  # noqa: E402


def trial_rows(results, fid_key: str, max_evals: int) -> list[dict[str, Any]]:
    """One row per trial: parameters, best FID (at any evaluation), evaluations, stop reason."""
    rows = []
    for r in results:
        df = r.metrics_dataframe
        has = df is not None and fid_key in df
        if has:  # a resumed trial reports its evaluations again (worker.replay): keep each step once
            df = df.drop_duplicates("step").reset_index(drop=True)
        evals = int(df[EVALS].max()) if has else 0
        reason = ""
        if r.error is not None:
            reason = "error"
        elif has:
            reason = str(df["stop_reason"].iloc[-1] or "") if "stop_reason" in df else ""
            reason = reason or ("completed" if evals >= max_evals else "scheduler")
        best = df.loc[df[fid_key].idxmin()] if has else None
        rows.append({
            "trial_id": (r.metrics or {}).get("trial_id") or Path(r.path).name.split("_")[2],
            "best_fid": float(best[fid_key]) if best is not None else math.inf,
            "best_step": int(best["step"]) if best is not None else -1,
            "evals": evals, "stop_reason": reason,
            "checkpoint": str(best.get("checkpoint_path", "")) if best is not None else "",
            "error_file": str(Path(r.path) / "error.txt") if r.error is not None else "",
            "params": dict(r.config),
            "curve": df[["step", fid_key]].values.tolist() if has else [],
        })
    return sorted(rows, key=lambda row: row["best_fid"])


def format_table(rows: list[dict], fid_key: str, param_keys: list[str]) -> str:
    head = ["trial", f"best {fid_key}", "at step", "evals", "stop", *param_keys]
    lines = [head]
    for row in rows:
        lines.append([row["trial_id"], f"{row['best_fid']:.3f}", str(row["best_step"]), str(row["evals"]),
                      row["stop_reason"], *(_fmt(row["params"].get(k, "-")) for k in param_keys)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_csv(rows: list[dict], path: Path, param_keys: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "best_fid", "best_step", "evals", "stop_reason", "checkpoint", "error_file",
                    *param_keys])
        for row in rows:
            w.writerow([row["trial_id"], row["best_fid"], row["best_step"], row["evals"], row["stop_reason"],
                        row["checkpoint"], row["error_file"], *(row["params"].get(k, "") for k in param_keys)])
    return path


def plot_fid_curves(rows: list[dict], fid_key: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for row in rows:
        if row["curve"]:
            steps, fids = zip(*row["curve"])
            ax.plot(steps, fids, marker="o", ms=3, label=f"{row['trial_id']} ({row['stop_reason']})")
    ax.set_xlabel("step")
    ax.set_ylabel(fid_key)
    ax.set_yscale("log")
    ax.set_title("FID of every trial")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def optuna_study(rows: list[dict], dists: dict[str, optuna.distributions.BaseDistribution]) -> optuna.Study:
    """The job's trials as an Optuna study (public API), so Optuna's own plots apply."""
    study = optuna.create_study(direction="minimize")
    for row in rows:
        if math.isfinite(row["best_fid"]):
            params = {k: v for k, v in row["params"].items() if k in dists}
            study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                      value=row["best_fid"]))
    return study


def plot_optuna(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Importances and parallel coordinates; skipped (with a note) when too few trials."""
    from optuna.visualization import matplotlib as ovm

    written = []
    for name, fn in (("param_importances.png", ovm.plot_param_importances),
                     ("parallel_coordinates.png", ovm.plot_parallel_coordinate)):
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            written.append(out_dir / name)
        except Exception as e:  # Optuna refuses importances for fewer than 2 distinct trials
            print(f"note: {name} not written ({type(e).__name__}: {e})")
    return written
