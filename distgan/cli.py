"""`distgan` command line: argument parsing only; the work is in the modules it calls.

Every expected failure (bad config key, missing data, no checkpoint, ...) ends as one line
on stderr and exit code 2; nothing in an existing output is overwritten without --force.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from distgan import config as config_mod


def _tracking_args(p: argparse.ArgumentParser, default_note: str, experiment: bool = True) -> None:
    p.add_argument("--mlflow-uri", help=f"MLflow tracking URI: sqlite:///PATH or http://HOST:PORT "
                                        f"(default: $MLFLOW_TRACKING_URI, else {default_note})")
    if experiment:
        p.add_argument("--experiment", help="MLflow experiment name (default: distgan)")


def _run_overrides(a: argparse.Namespace) -> dict:
    out = {"scaling.shared_storage": True} if getattr(a, "shared_storage", False) else {}
    if a.mlflow_uri:
        out["tracking.mlflow_uri"] = a.mlflow_uri
    if a.experiment:
        out["tracking.experiment"] = a.experiment
    return out


def _mlflow_uri(a: argparse.Namespace) -> str:
    from distgan import tracking

    return tracking.check_uri(a.mlflow_uri or tracking.default_uri())


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named configuration (distgan.presets); default mnist")
    p.add_argument("--config", help="YAML file with a full or partial configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted config key, e.g. --set optim.lr_g=1e-4 (repeatable)")


def cmd_data_prepare(a: argparse.Namespace) -> None:
    from distgan.data import prepare
    from distgan.data.schema import inspect

    if a.source == "mnist-embedded":
        prepare.mnist_embedded(a.out, force=a.force)
    elif a.source in ("ring8", "grid25"):
        prepare.mixture(a.source, a.out, n=a.n, seed=a.seed, force=a.force)
    else:
        if not a.src:
            raise config_mod.ConfigError("data prepare folder: give the image folder, e.g. folder ./images")
        prepare.image_folder(a.src, a.out, size=a.size, channels=a.channels, force=a.force)
    info = inspect(a.out)
    print(f"wrote {info.num_rows} rows in {len(info.files)} shards to {a.out} "
          f"({info.encoding}, {info.height}x{info.width}x{info.channels}, {info.num_classes} classes)")


def cmd_train(a: argparse.Namespace) -> None:
    from distgan import tracking
    from distgan.local import saved_config, train_local

    if a.workers:
        a.set = [*a.set, f"scaling.num_workers={a.workers}", *(["scaling.use_gpu=true"] if a.gpu else [])]
    elif a.gpu:
        raise config_mod.ConfigError("--gpu needs --workers N (the one-process run uses CUDA when present)")

    if a.resume:
        if a.preset or a.config:
            raise config_mod.ConfigError("--resume takes its config from the run; use --set to change keys")
        out = Path(a.resume)
        cfg = saved_config(out).with_overrides(config_mod.parse_set(a.set))
    else:
        if not a.out:
            raise config_mod.ConfigError("train: --out DIR is required (or --resume DIR)")
        out = Path(a.out)
        cfg = config_mod.load(a.preset, a.config, a.set)
    cfg = cfg.with_overrides(_run_overrides(a))
    with tracking.train_run(cfg, out, resume=bool(a.resume)) as run_log:
        if cfg.scaling.num_workers:
            from distgan import launch

            best = launch.run(cfg, out, a.storage, resume=bool(a.resume), force=a.force, run_log=run_log)
        else:
            best = train_local(cfg, out, resume=bool(a.resume), force=a.force, progress=not a.no_progress,
                               device=a.device, run_log=run_log)
    fid_key = next(k for k in best["metrics"] if k.startswith("fid"))
    print(f"best checkpoint: {best['checkpoint']} ({fid_key} {best['metrics'][fid_key]:.3f} at step "
          f"{int(best['metrics']['step'])})")


def cmd_tune(a: argparse.Namespace) -> None:
    from distgan import tune

    if a.resume:
        job = tune.JobSpec.load(a.resume)
    else:
        if not a.space:
            raise config_mod.ConfigError("tune: --space FILE is required (or --resume EXPERIMENT_PATH)")
        sets = [*a.set, f"scaling.num_workers={a.workers_per_trial}"]
        if a.gpus_per_worker:
            sets += ["scaling.use_gpu=true", f"scaling.gpus_per_worker={a.gpus_per_worker}"]
        base = config_mod.load(a.preset, a.config, sets).with_overrides(_run_overrides(a))
        job = tune.new_job(base, a.space, a.trials, a.storage, a.name, a.scheduler, a.grace_period,
                           a.reduction_factor, a.seed, a.preset or "")
    try:
        tune.start(job, resume=bool(a.resume), max_concurrent=a.max_concurrent)
    except (KeyboardInterrupt, tune.JobInterrupted):
        print(f"interrupted: resume with  distgan tune --resume {job.experiment_dir}", file=sys.stderr)
        raise KeyboardInterrupt from None


def cmd_promote(a: argparse.Namespace) -> None:
    from distgan import registry, tracking

    with tracking.served(_mlflow_uri(a)) as uri:
        v = registry.promote(uri, a.experiment or tracking.DEFAULT_EXPERIMENT, a.parent_run, a.model_name, a.alias,
                             a.eval_n, a.device)
    what = "registered as new version" if v["new"] else "already registered as version"
    fids = " ".join(f"{k} {v[k]}" for k in v if k.startswith("fid"))
    print(f"trial {v['trial_id']} (step {v['step']}, {fids}) {what} {v['version']} of {a.model_name}; "
          f"alias {a.alias!r} -> version {v['version']}")
    print(f"sample it: distgan sample --model models:/{a.model_name}@{a.alias} --out grid.png")


def cmd_sample(a: argparse.Namespace) -> None:
    from distgan import registry, tracking

    with tracking.served(_mlflow_uri(a)) as uri:
        path = registry.sample(uri, a.model, a.out, n=a.n, label=a.label,
                               interpolate=tuple(a.interpolate) if a.interpolate else None, steps=a.steps, seed=a.seed)
    print(f"wrote {path}")


def cmd_ui(a: argparse.Namespace) -> None:
    import subprocess

    from distgan import tracking

    db = tracking.sqlite_path(_mlflow_uri(a))
    if db is None:
        raise config_mod.ConfigError(f"--mlflow-uri {a.mlflow_uri}: already a server; open it in a browser")
    if a.host not in ("127.0.0.1", "localhost") and not a.allowed_hosts:
        raise config_mod.ConfigError(f"--host {a.host}: binding beyond loopback needs --allowed-hosts "
                                     "(and auth in front; see README, 'Sharing the MLflow server')")
    url = f"http://{a.host}:{a.port}"
    try:
        tracking.wait_healthy_url(f"{url}/health", timeout=1)
        print(f"MLflow UI: {url} (already running)")
        return
    except config_mod.ConfigError:
        pass
    db.parent.mkdir(parents=True, exist_ok=True)
    print(f"MLflow UI: {url}  (store {db}; Ctrl-C stops it)", flush=True)
    subprocess.run(tracking.server_command(db, a.host, a.port, a.allowed_hosts), check=False)


def cmd_submit(a: argparse.Namespace) -> None:
    from distgan import jobs

    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    env = jobs.parse_env(a.env)
    if a.mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = a.mlflow_uri
    if a.storage and "--storage" not in command:
        command = [*command, "--storage", a.storage]
    job_id = jobs.submit(a.address, command, a.working_dir, env, a.pip)
    print(f"submitted {job_id}")
    print(f"follow it: distgan jobs logs {job_id} --follow --address {a.address}")
    print(f"status:    distgan jobs status {job_id} --address {a.address}")


def cmd_jobs(a: argparse.Namespace) -> None:
    from distgan import jobs

    if a.action == "list":
        for job_id, state, entry in jobs.list_jobs(a.address):
            print(f"{job_id}  {state:<9}  {entry}")
        return
    if not a.job_id:
        raise config_mod.ConfigError(f"jobs {a.action}: give the JOB_ID (see: distgan jobs list)")
    try:
        if a.action == "status":
            print(jobs.wait(a.address, a.job_id, a.wait) if a.wait else jobs.status(a.address, a.job_id))
        elif a.action == "logs":
            jobs.logs(a.address, a.job_id, follow=a.follow)
        else:
            print("stop requested" if jobs.stop(a.address, a.job_id) else "already finished")
    except RuntimeError as e:  # the Jobs API's reply to an unknown id
        raise config_mod.ConfigError(f"job {a.job_id}: {str(e).splitlines()[0]}") from None


def cmd_demo(a: argparse.Namespace) -> None:
    from distgan import demo

    demo.run(a.out, trials=a.trials, port=a.port, resume=a.resume, eval_n=a.eval_n)


def cmd_detector_train(a: argparse.Namespace) -> None:
    from distgan.detector_train import train_lenet

    command = "distgan detector train " + " ".join(sys.argv[3:])
    card = train_lenet(a.data, a.out, epochs=a.epochs, seed=a.seed, command=command)
    print(json.dumps(card, indent=2))


def cmd_fid(a: argparse.Namespace) -> None:
    from distgan.score import score

    result = score(a.real, a.fake, a.detector, a.n, allow_repeat=a.allow_repeat, batch=a.batch,
                     device=a.device)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distgan", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare data sets as Parquet").add_subparsers(dest="data_cmd", required=True)
    prep = data.add_parser("prepare", help="convert a source to Parquet shards")
    prep.add_argument("source", choices=["mnist-embedded", "folder", "ring8", "grid25"])
    prep.add_argument("src", nargs="?", help="image folder (for `folder`): one sub-folder per class")
    prep.add_argument("--out", required=True)
    prep.add_argument("--size", type=int, default=64, help="image side after centre crop + resize (folder)")
    prep.add_argument("--channels", type=int, default=3, choices=[1, 3])
    prep.add_argument("--n", type=int, default=20000, help="points to draw (ring8, grid25)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--force", action="store_true", help="replace existing shards in --out")
    prep.set_defaults(fn=cmd_data_prepare)

    tr = sub.add_parser("train", help="train one GAN in this process")
    _config_args(tr)
    tr.add_argument("--out", help="run directory: checkpoints, sample grids, metrics.jsonl")
    tr.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    tr.add_argument("--force", action="store_true", help="replace an existing run in --out")
    tr.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    tr.add_argument("--workers", type=int, default=0,
                    help="Ray Train workers (DDP); 0 (default) trains in this process without Ray")
    tr.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker (nccl)")
    tr.add_argument("--storage", help="Ray storage path or URI (s3://, gs://); default: the parent of --out")
    tr.add_argument("--shared-storage", action="store_true", help="--storage is a path every node mounts (NFS)")
    tr.add_argument("--no-progress", action="store_true")
    _tracking_args(tr, "no tracking")
    tr.set_defaults(fn=cmd_train)

    tu = sub.add_parser("tune", help="search hyperparameters with Ray Tune + Optuna, FID as the objective")
    _config_args(tu)
    tu.add_argument("--space", help="search space YAML (tune_spaces/)")
    tu.add_argument("--trials", type=int, default=16)
    tu.add_argument("--workers-per-trial", type=int, default=2)
    tu.add_argument("--gpus-per-worker", type=float, default=0, help="> 0 runs each worker on GPUs")
    tu.add_argument("--max-concurrent", type=int, default=0, help="default: what the cluster's resources allow")
    tu.add_argument("--scheduler", default="asha", help="asha | hyperband | median | none")
    tu.add_argument("--grace-period", type=int, default=1, help="evaluations before ASHA may stop a trial")
    tu.add_argument("--reduction-factor", type=int, default=2)
    tu.add_argument("--seed", type=int, default=0, help="Optuna TPE seed")
    tu.add_argument("--storage", help="Ray storage path or URI; default $DISTGAN_STORAGE, else outputs/tune")
    tu.add_argument("--shared-storage", action="store_true", help="--storage is a path every node mounts (NFS)")
    tu.add_argument("--name", help="job name (default: <space>-<preset>-<time>)")
    tu.add_argument("--resume", metavar="EXPERIMENT_PATH", help="continue an interrupted job")
    _tracking_args(tu, "sqlite:///outputs/mlflow.db")
    tu.set_defaults(fn=cmd_tune)

    pr = sub.add_parser("promote", help="register a tuning job's best checkpoint in the MLflow Model Registry")
    _tracking_args(pr, "sqlite:///outputs/mlflow.db")
    pr.add_argument("--parent-run", help="the job's parent run id (default: the newest tuning job)")
    pr.add_argument("--model-name", default="distgan-generator")
    pr.add_argument("--alias", default="champion")
    pr.add_argument("--eval-n", type=int, default=10000, help="samples of the re-evaluation (fid10k)")
    pr.add_argument("--device")
    pr.set_defaults(fn=cmd_promote)

    sa = sub.add_parser("sample", help="a PNG grid from a registered generator")
    _tracking_args(sa, "sqlite:///outputs/mlflow.db", experiment=False)  # a models:/ URI names no experiment
    sa.add_argument("--model", default="models:/distgan-generator@champion")
    sa.add_argument("--n", type=int, default=64)
    sa.add_argument("--label", type=int, help="one class (conditional models)")
    sa.add_argument("--interpolate", type=int, nargs=2, metavar=("A", "B"),
                    help="interpolate between the latents of seeds A and B (one row per class)")
    sa.add_argument("--steps", type=int, default=8)
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--out", required=True)
    sa.set_defaults(fn=cmd_sample)

    ui = sub.add_parser("ui", help="the MLflow UI on the project's store (127.0.0.1 unless told otherwise)")
    _tracking_args(ui, "sqlite:///outputs/mlflow.db", experiment=False)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--allowed-hosts", help="Host headers the server accepts (needed beyond loopback)")
    ui.set_defaults(fn=cmd_ui)

    su = sub.add_parser("submit", help="submit a tune command to a Ray cluster (Ray Jobs API)")
    su.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                    help="the cluster's dashboard / Jobs API address")
    su.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (this distgan)")
    su.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the job")
    su.add_argument("--pip", nargs="+", help="pip requirements installed for the job (instead of the image's)")
    su.add_argument("--mlflow-uri", help="tracking URI the cluster logs to (an http(s) server every node reaches)")
    su.add_argument("--storage", help="checkpoint storage URI on the cluster (s3://, gs://, or a shared path)")
    su.add_argument("command", nargs=argparse.REMAINDER, help="-- tune --space ... --preset ...")
    su.set_defaults(fn=cmd_submit)

    jb = sub.add_parser("jobs", help="list, follow and stop submitted jobs")
    jb.add_argument("action", choices=["list", "status", "logs", "stop"])
    jb.add_argument("job_id", nargs="?")
    jb.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"))
    jb.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    jb.add_argument("--wait", type=float, default=0, help="status: wait up to this many seconds for the end")
    jb.set_defaults(fn=cmd_jobs)

    de = sub.add_parser("demo", help="the whole journey: tune, track, promote, sample (make demo)")
    de.add_argument("--out", default="outputs")
    de.add_argument("--trials", type=int, default=3)
    de.add_argument("--port", type=int, default=5000, help="the MLflow server's port (left running for the UI)")
    de.add_argument("--eval-n", type=int, default=5000, help="samples of the promoted FID")
    de.add_argument("--resume", metavar="EXPERIMENT_PATH", help="continue an interrupted demo job")
    de.set_defaults(fn=cmd_demo)

    det = sub.add_parser("detector", help="the domain detector").add_subparsers(dest="det_cmd", required=True)
    dt = det.add_parser("train", help="train the LeNet MNIST detector")
    dt.add_argument("--data", required=True, help="Parquet directory of 28x28x1 digits")
    dt.add_argument("--out", required=True, help="weights file (.pt); a .json card is written beside it")
    dt.add_argument("--epochs", type=int, default=12)
    dt.add_argument("--seed", type=int, default=0)
    dt.set_defaults(fn=cmd_detector_train)

    fid = sub.add_parser("fid", help="FID, KID, precision/recall, density/coverage, mode coverage")
    fid.add_argument("--real", required=True, help="Parquet directory of real data")
    fid.add_argument("--fake", required=True, help="Parquet directory, or a checkpoint directory")
    fid.add_argument("--detector", default="auto", choices=["auto", "inception", "lenet-mnist", "coords"])
    fid.add_argument("--n", type=int, default=2000)
    fid.add_argument("--batch", type=int, default=250)
    fid.add_argument("--allow-repeat", action="store_true", help="allow n larger than the real data")
    fid.add_argument("--device")
    fid.add_argument("--json", action="store_true")
    fid.set_defaults(fn=cmd_fid)
    return p


def main(argv: list[str] | None = None) -> int:
    from distgan.checkpoint import CheckpointError
    from distgan.data.schema import DataError
    from distgan.metrics.detectors import DetectorError

    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (config_mod.ConfigError, DataError, CheckpointError, DetectorError, FileExistsError) as e:
        print(f"distgan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = f" (continue with: distgan train --resume {args.resume or args.out})" if args.command == "train" else ""
        print(f"distgan: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
