"""`make demo`: the whole journey on the embedded MNIST digits. A tuning job over
tune_spaces/demo.yaml (Ray Train runs, Ray Data input, a scheduler deciding when to stop)
logs to a local MLflow server; the best checkpoint is re-evaluated, registered as
`distgan-generator@champion` and sampled from the registry. Ctrl-C leaves a resumable job.
"""

from __future__ import annotations

import math
from pathlib import Path

from distgan import api, model_registry, presets, server, tracking, tuning

SPACE = "tune_spaces/demo.yaml"
MODEL = "distgan-generator"


def run(out: str = "outputs", trials: int | None = None, port: int = 5000, resume: str | None = None,
        eval_n: int = 5000) -> dict:
    out_dir = Path(out)
    db = (out_dir / "mlflow.db").resolve()
    url = server.running(db) or server.start(db, port=port)[0]
    print(f"MLflow UI: {url}  (server log {out_dir / 'mlflow-server.log'}; distgan ui --stop stops it)", flush=True)
    if resume:
        job = tuning.JobSpec.load(resume)
    else:
        base = presets.load("mnist")
        job = tuning.new_job(base, SPACE, trials, str(out_dir / "tune"), None, {}, seed=0, preset="mnist",
                           overrides={"tracking.mlflow_uri": url, "scaling.num_workers": 1})
    try:
        result = tuning.start(job, resume=bool(resume))
    except (KeyboardInterrupt, tuning.JobInterrupted):
        print(f"interrupted: continue with  make demo RESUME={job.experiment_dir}", flush=True)
        raise KeyboardInterrupt from None
    promoted = api.promote(job.experiment, result.parent_run_id, MODEL, "champion", eval_n, url)
    grid = model_registry.sample(url, promoted.model_uri, out_dir / "demo" / "champion.png", n=100)
    rows = result.rows
    base = job.config
    budget = len(rows) * tuning.evals_budget(base)
    used = sum(r["evals"] for r in rows)
    best = rows[0]
    curve = best["curve"]
    evals = [r for r in rows if r["curve"]]
    print()
    print(f"best trial {best['trial_id']}: {result.metric} {curve[0][1]:.2f} at its first evaluation (step "
          f"{int(curve[0][0])}) -> {best['best']:.2f} at step {best['best_step']}")
    print(f"promoted as {MODEL} version {promoted.version}: {promoted.metric} {promoted.value:.2f} "
          f"(detector {promoted.tags.get('detector')}), classes covered {promoted.tags.get('classes_covered', '?')}/10")
    print(f"the scheduler and the stoppers used {used} of {budget} evaluations ({used / budget:.0%}); "
          f"stop reasons: {', '.join(sorted({r['stop_reason'] for r in rows}))}")
    share = eval_share(job)
    if share is not None:
        print(f"evaluation took {share:.1%} of the trials' time")
    print(f"samples from {promoted.model_uri} (one row per class): {grid}")
    print(f"MLflow UI: {url}  (experiment {job.experiment!r}, parent run {job.name}); stop the server: distgan ui --stop")
    return {"result": result, "promoted": promoted, "grid": str(grid), "evals_used": used, "evals_budget": budget,
            "eval_share": share, "ok": math.isfinite(best["best"]) and bool(evals)}


def eval_share(job: tuning.JobSpec) -> float | None:
    """The share of the trials' wall time spent in evaluation (train_s and eval_s of every
    evaluation, from the trials' MLflow runs)."""
    c = tracking.client(tracking.check_uri(job.mlflow_uri))
    exp = c.get_experiment_by_name(job.experiment)
    parent = tracking.find_run(c, exp.experiment_id, {tracking.KIND: "tuning-job", tracking.JOB: job.name})
    if parent is None:
        return None
    train_s = eval_s = 0.0
    for run in tracking.child_runs(c, exp.experiment_id, parent):
        train_s += sum(m.value for m in c.get_metric_history(run.info.run_id, "train_s"))
        eval_s += sum(m.value for m in c.get_metric_history(run.info.run_id, "eval_s"))
    return eval_s / (train_s + eval_s) if train_s + eval_s else None
