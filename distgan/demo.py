"""`make demo`: the whole journey on the embedded MNIST digits. A tuning job over
tune_spaces/dcgan-core.yaml (each trial a 2-worker Ray Train run, ASHA stopping the weak
ones) logs to a local MLflow server; the best checkpoint is re-evaluated, registered as
`distgan-generator@champion` and sampled from the registry. Ctrl-C leaves a resumable job.
"""

from __future__ import annotations

import math
from pathlib import Path

from distgan import config as config_mod
from distgan import registry, tracking, tune
from distgan.metrics.evaluate import fid_name

SPACE = "tune_spaces/dcgan-core.yaml"
MODEL = "distgan-generator"
# The mnist preset sized for 2 CPU cores and 15 minutes: 2 workers x 32 = the preset's
# global batch of 64, 1,000 steps with an evaluation every 200 (5 rungs for ASHA).
SETS = ["scaling.num_workers=2", "train.batch_size=32", "train.steps=1000", "train.eval_every=200"]


def run(out: str = "outputs", trials: int = 3, port: int = 5000, resume: str | None = None,
        eval_n: int = 5000) -> dict:
    out_dir = Path(out)
    url = tracking.ensure_server(out_dir / "mlflow.db", port=port)
    print(f"MLflow UI: {url}  (server log {out_dir / 'mlflow-server.log'})", flush=True)
    if resume:
        job = tune.JobSpec.load(resume)
    else:
        base = config_mod.load("mnist", None, SETS).with_overrides({"tracking.mlflow_uri": url})
        job = tune.new_job(base, SPACE, trials, str(out_dir / "tune"), None, "asha", grace_period=1,
                           reduction_factor=3, seed=0, preset="mnist")
    try:
        rows = tune.start(job, resume=bool(resume))
    except (KeyboardInterrupt, tune.JobInterrupted):
        print(f"interrupted: continue with  make demo RESUME={job.experiment_dir}", flush=True)
        raise KeyboardInterrupt from None
    c = tracking.client(url)
    exp_id = tracking.experiment_id(c, job.experiment)
    parent = tracking.find_run(c, exp_id, {tracking.KIND: "tuning-job", tracking.JOB: job.name})
    promoted = registry.promote(url, job.experiment, parent, MODEL, "champion", eval_n)
    grid = registry.sample(url, f"models:/{MODEL}@champion", out_dir / "demo" / "champion.png", n=100)
    base = config_mod.RunConfig.from_dict(job.base)
    budget = len(rows) * tune.evals_budget(base)
    used = sum(r["evals"] for r in rows)
    train_fid, final_fid = fid_name(base.eval.num_samples), fid_name(eval_n)
    best = rows[0]
    curve = best["curve"]
    print()
    print(f"best trial {best['trial_id']}: {train_fid} {curve[0][1]:.2f} at its first evaluation (step "
          f"{int(curve[0][0])}) -> {best['best_fid']:.2f} at step {best['best_step']}")
    print(f"promoted as {MODEL} version {promoted['version']}: {final_fid} {promoted[final_fid]} "
          f"(detector {promoted['detector']}), classes covered {promoted.get('classes_covered', '?')}/10")
    print(f"ASHA and the stoppers used {used} of {budget} evaluations ({used / budget:.0%}); "
          f"stop reasons: {', '.join(sorted({r['stop_reason'] for r in rows}))}")
    print(f"samples from models:/{MODEL}@champion (one row per class): {grid}")
    print(f"MLflow UI: {url}  (experiment {job.experiment!r}, parent run {job.name}); "
          f"stop the server: kill $(cat {out_dir / 'mlflow-server.pid'})")
    return {"rows": rows, "promoted": promoted, "grid": str(grid), "evals_used": used, "evals_budget": budget,
            "ok": math.isfinite(best["best_fid"])}
