"""`distgan` command line: parsing only (nothing heavy is imported before it); the work is in
distgan.api and the modules it calls.

Exit status: 0 success; 1 the job ran and failed (every trial erred, a submitted job
FAILED or was STOPPED); 2 bad input, one line on stderr naming the key, file, value or
address; 130 interrupted. Nothing existing is overwritten or deleted unless --force, and
--force validates everything first. DISTGAN_DEBUG=1 shows the traceback of an error.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from distgan import console  # light: logging and warnings only
from distgan.config import RunFailed  # light: dataclasses and yaml
from distgan.sweep import SCHEDULERS  # light: the config schema
DETECTORS = ("auto", "inception", "lenet-mnist", "coords")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples in the epilog kept as written. No "(default: None)":
    an option without a default says nothing, and one resolved at run time (an environment
    variable, the newest job) says so in its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if action.default is None or "(default:" in text else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """A usage error is one line (which flag, what is wrong, where the help is), exit 2."""

    def error(self, message: str):
        self.exit(2, f"distgan: error: {message} (see: {self.prog} --help)\n")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _positive(name: str, kind=int, minimum: float = 1, maximum: float | None = None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value >= minimum or value != value or value in (float("inf"),):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} must be at most {maximum}")
        return value
    parse.__name__ = name
    return parse


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named configuration (distgan.presets); default mnist")
    p.add_argument("--config", help="YAML file with a full or partial configuration (see examples/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted config key, e.g. --set optim.lr_g=1e-4 (repeatable)")


def _tracking_args(p: argparse.ArgumentParser, default_note: str, experiment: bool = True) -> None:
    p.add_argument("--mlflow-uri", help=f"MLflow tracking URI: sqlite:///PATH or http(s)://HOST:PORT "
                                        f"(default: $MLFLOW_TRACKING_URI, else {default_note})")
    if experiment:
        p.add_argument("--experiment", help="MLflow experiment name (default: distgan)")


def _scaling_args(p: argparse.ArgumentParser, workers_default: int | None, workers_help: str) -> None:
    p.add_argument("--workers", "--workers-per-trial", dest="workers", type=_positive("workers", int, 0),
                   default=workers_default, help=workers_help)
    p.add_argument("--gpus-per-worker", type=_positive("gpus", float, 0), default=0.0,
                   help="> 0 puts each Ray Train worker on this many GPUs (nccl, bf16)")
    p.add_argument("--storage", help="checkpoint storage: a path or URI (s3://bucket/prefix, gs://...); "
                                     "default $DISTGAN_STORAGE")
    p.add_argument("--shared-storage", action="store_true", help="--storage (or data.path) is a path every node mounts")


def cmd_data_prepare(a: argparse.Namespace) -> None:
    from distgan.data import prepare
    from distgan.data.schema import heldout_rows, inspect

    if a.source == "mnist-embedded":
        prepare.mnist_embedded(a.out, force=a.force, heldout=a.heldout)
    elif a.source in ("ring8", "grid25"):
        prepare.mixture(a.source, a.out, n=a.n, seed=a.seed, force=a.force, heldout=a.heldout)
    else:
        from distgan.config import ConfigError

        if not a.src:
            raise ConfigError("data prepare folder: give the image folder, e.g. folder ./images")
        prepare.image_folder(a.src, a.out, size=a.size, channels=a.channels, force=a.force, heldout=a.heldout)
    info = inspect(a.out)
    held = heldout_rows(info)
    print(f"wrote {info.num_rows} rows in {len(info.files)} shards to {info.location} "
          f"({info.encoding}, {info.height}x{info.width}x{info.channels}, {info.num_classes} classes)"
          f"{f', {held} more held out of training' if held else ''}")


def cmd_train(a: argparse.Namespace) -> None:
    from distgan import api
    from distgan.config import ConfigError

    if not a.resume and not a.out:
        raise ConfigError("train: --out DIR is required (or --resume DIR)")
    best = api.train(a.resume or a.out, a.preset, a.config, a.set, workers=a.workers, gpus_per_worker=a.gpus_per_worker,
                     storage=a.storage, shared_storage=a.shared_storage, resume=bool(a.resume), force=a.force,
                     device=a.device, mlflow_uri=a.mlflow_uri, experiment=a.experiment, progress=not a.no_progress)
    if not best:
        print("no evaluation made: nothing to report")
        return
    key = next(k for k in best.metrics if k.startswith(("fd_", "fid")) and not k.endswith("_std"))
    print(f"best checkpoint: {best.checkpoint} ({key} {best.metrics[key]:.3f} at step {int(best.metrics['step'])})")


def cmd_tune(a: argparse.Namespace) -> None:
    from distgan import api
    from distgan.config import ConfigError

    if a.action == "status":
        if not a.experiment_dir:
            raise ConfigError("tune status: give the experiment directory, e.g. distgan tune status outputs/tune/JOB")
        from distgan.progress import render

        print("\n".join(render(api.status(a.experiment_dir))))
        return
    from distgan import tuning

    try:
        if a.resume:
            result = api.resume(a.resume)
        else:
            if not a.space:
                raise ConfigError("tune: --space FILE is required (or --resume EXPERIMENT_DIR)")
            result = api.tune(a.space, a.preset, a.config, a.set, trials=a.trials, workers_per_trial=a.workers,
                              gpus_per_worker=a.gpus_per_worker, max_concurrent=a.max_concurrent,
                              scheduler=a.scheduler, grace_period=a.grace_period, reduction_factor=a.reduction_factor,
                              perturbation_interval=a.perturbation_interval, seed=a.seed, storage=a.storage,
                              shared_storage=a.shared_storage, name=a.name, mlflow_uri=a.mlflow_uri,
                              experiment=a.experiment)
    except (KeyboardInterrupt, tuning.JobInterrupted):
        print("interrupted: resume with  distgan tune --resume EXPERIMENT_DIR (its path is in the first line above)",
              file=sys.stderr)
        raise KeyboardInterrupt from None
    print(f"best: trial {result.best_trial_id}, {result.metric} {result.best:.3f}, checkpoint {result.best_checkpoint}")


def cmd_promote(a: argparse.Namespace) -> None:
    from distgan import api

    p = api.promote(a.experiment, a.parent_run, a.model_name, a.alias, a.eval_n, a.mlflow_uri, a.device, a.pick)
    what = "registered as new version" if p.new else "already registered as version"
    print(f"trial {p.tags.get('trial_id')} (step {p.tags.get('step')}, {p.metric} {p.value:.6g}) {what} {p.version} "
          f"of {p.model_name}; alias {p.alias!r} -> version {p.version}")
    print(f"sample it: distgan sample --model {p.model_uri} --out grid.png")


def cmd_sample(a: argparse.Namespace) -> None:
    from distgan import api

    path = api.sample(a.out, a.model, n=a.n, label=a.label, interpolate=tuple(a.interpolate) if a.interpolate else None,
                      steps=a.steps, seed=a.seed, mlflow_uri=a.mlflow_uri, force=a.force, truncation=a.truncation,
                      vary=a.vary)
    print(f"wrote {path}")


def cmd_ui(a: argparse.Namespace) -> None:
    import subprocess

    from distgan import server, tracking
    from distgan.config import ConfigError

    db = tracking.sqlite_path(tracking.check_uri(a.mlflow_uri or tracking.default_uri()))
    if db is None:
        raise ConfigError(f"--mlflow-uri {a.mlflow_uri}: already a server; open it in a browser")
    if a.stop:
        url = server.running(db)
        if url is None:
            print(f"no MLflow server serves {db}")
            return
        pid = json.loads((db.parent / server.PID_FILE).read_text())["pid"]
        os.killpg(pid, 15)
        print(f"stopped the MLflow server at {url}")
        return
    if a.host not in ("127.0.0.1", "localhost") and not a.allowed_hosts:
        raise ConfigError(f"--host {a.host}: binding beyond loopback needs --allowed-hosts "
                          "(and auth in front; see README, 'Sharing the MLflow server')")
    url = server.running(db)
    if url is not None:  # perhaps a command's, which would stop it after that command: now it stays
        server.adopt(db)
        print(f"MLflow UI: {url} (already running; it stays until distgan ui --stop)")
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    print(f"MLflow UI: http://{a.host}:{a.port}  (store {db}; Ctrl-C stops it)", flush=True)
    subprocess.run(server.command(db, a.host, a.port, a.allowed_hosts), check=False, env=server.env())


def cmd_submit(a: argparse.Namespace) -> None:
    from distgan import jobs

    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    env = jobs.parse_env(a.env)
    if a.mlflow_uri:
        from distgan import tracking

        env["MLFLOW_TRACKING_URI"] = tracking.check_uri(a.mlflow_uri)
    if a.storage and "--storage" not in command:
        command = [*command, "--storage", a.storage]
    job_id = jobs.submit(a.address, command, a.working_dir, env, a.pip)
    print(f"submitted {job_id}", flush=True)
    if a.follow:
        final = jobs.logs(a.address, job_id, follow=True)
        print(f"job {job_id}: {final}")
        if final != "SUCCEEDED":
            raise RunFailed(f"job {job_id} ended {final}")
        return
    print(f"follow it: distgan jobs logs {job_id} --follow --address {a.address}")
    print(f"status:    distgan jobs status {job_id} --address {a.address}")


def cmd_jobs(a: argparse.Namespace) -> None:
    from distgan import jobs
    from distgan.config import ConfigError

    if a.action == "list":
        for job_id, state, entry in jobs.list_jobs(a.address):
            print(f"{job_id}  {state:<9}  {entry}")
        return
    if not a.job_id:
        raise ConfigError(f"jobs {a.action}: give the JOB_ID (see: distgan jobs list)")
    try:
        if a.action == "status":
            final = jobs.wait(a.address, a.job_id, a.wait) if a.wait else jobs.status(a.address, a.job_id)
            print(final)
            if final in ("FAILED", "STOPPED"):
                raise RunFailed(f"job {a.job_id} ended {final}")
        elif a.action == "logs":
            final = jobs.logs(a.address, a.job_id, follow=a.follow)
            if a.follow and final in ("FAILED", "STOPPED"):
                raise RunFailed(f"job {a.job_id} ended {final}")
        else:
            print("stop requested" if jobs.stop(a.address, a.job_id) else "already finished")
    except RuntimeError as e:  # the Jobs API's reply to an unknown id
        raise ConfigError(f"job {a.job_id}: {str(e).splitlines()[0]}") from None


def cmd_demo(a: argparse.Namespace) -> None:
    from distgan import demo

    demo.run(a.out, trials=a.trials, port=a.port, resume=a.resume, eval_n=a.eval_n)


def cmd_detector_train(a: argparse.Namespace) -> None:
    from pathlib import Path

    from distgan.detector_train import train_lenet

    if Path(a.out).exists() and not a.force:
        raise FileExistsError(errno.EEXIST, "exists (--force replaces it; the shipped weights live in the package)", f"--out {a.out}")
    command = "distgan detector train " + " ".join(sys.argv[3:])
    card = train_lenet(a.data, a.out, epochs=a.epochs, seed=a.seed, command=command)
    print(json.dumps(card, indent=2))


def cmd_fid(a: argparse.Namespace) -> None:
    from distgan.score import score

    result = score(a.real, a.fake, a.detector, a.n, allow_repeat=a.allow_repeat, batch=a.batch, device=a.device)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def cmd_config_show(a: argparse.Namespace) -> None:
    import yaml

    from distgan import api

    cfg = api.config(a.preset, a.config, a.set)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def build_parser() -> argparse.ArgumentParser:
    from distgan import __version__

    p = Parser(prog="distgan", description="Distributed GAN training and FID-driven hyperparameter "
                                "search on Ray, PyTorch and MLflow.", formatter_class=Formatter,
                                epilog=_examples("make demo                      # the whole journey on MNIST",
                                                 "distgan train --preset mnist_smoke --out /tmp/run",
                                                 "distgan tune --space tune_spaces/dcgan-core.yaml --preset mnist_smoke"))
    p.add_argument("--version", action="version", version=f"distgan {__version__}")
    p.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and Optuna's own log lines and warnings "
                                                          "(DISTGAN_DEBUG=1 does too, and keeps tracebacks)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def add(name: str, help: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=Formatter,
                              epilog=_examples(*examples) if examples else None)

    data = add("data", "prepare data sets as Parquet (local or s3://, gs://)",
               "distgan data prepare mnist-embedded --out data/mnist").add_subparsers(dest="data_cmd", required=True,
                                                                                     parser_class=Parser)
    prep = data.add_parser("prepare", help="convert a source to Parquet shards", formatter_class=Formatter,
                           epilog=_examples("distgan data prepare mnist-embedded --out s3://bucket/data/mnist",
                                            "distgan data prepare folder ./images --out data/faces --size 64"))
    prep.add_argument("source", choices=["mnist-embedded", "folder", "ring8", "grid25"])
    prep.add_argument("src", nargs="?", help="image folder (for `folder`): one sub-folder per class")
    prep.add_argument("--out", required=True, help="a directory or URI")
    prep.add_argument("--size", type=_positive("size", int, 4), default=64,
                      help="image side after centre crop + resize (folder)")
    prep.add_argument("--channels", type=int, default=3, choices=[1, 3])
    prep.add_argument("--n", type=_positive("n", int, 2), default=20000, help="points to draw (ring8, grid25)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--force", action="store_true", help="replace existing shards in --out")
    prep.add_argument("--heldout", type=float, default=0.05,
                      help="share of rows kept out of training in --out/heldout (D's overfitting is read on them)")
    prep.set_defaults(fn=cmd_data_prepare)

    tr = add("train", "train one GAN: in this process, or on Ray Train workers (--workers N)",
             "distgan train --preset mnist_smoke --out /tmp/run",
             "distgan train --resume /tmp/run --set train.steps=40",
             "distgan train --preset mnist --workers 2 --out runs/ddp")
    _config_args(tr)
    tr.add_argument("--out", help="run directory: checkpoints, sample grids, metrics.jsonl")
    tr.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest good checkpoint")
    tr.add_argument("--force", action="store_true", help="replace an existing run in --out (kept aside until the "
                                                         "new run has a checkpoint)")
    tr.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    _scaling_args(tr, 0, "Ray Train workers (DDP); 0 trains in this process without Ray")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    _tracking_args(tr, "no tracking")
    tr.set_defaults(fn=cmd_train)

    tu = add("tune", "search hyperparameters with Ray Tune + Optuna (or PBT), the Fréchet distance as the objective",
             "distgan tune --space tune_spaces/dcgan-core.yaml --preset mnist_smoke --trials 4",
             "distgan tune --space tune_spaces/ring8.yaml --preset ring8 --scheduler pbt --trials 4",
             "distgan tune --resume outputs/tune/JOB",
             "distgan tune status outputs/tune/JOB")
    tu.add_argument("action", nargs="?", choices=["status"], help="status: print a job's trial table")
    tu.add_argument("experiment_dir", nargs="?", help="the job, for status (a path or URI)")
    _config_args(tu)
    tu.add_argument("--space", help="sweep file (tune_spaces/): parameters, and optionally budget and scheduler")
    tu.add_argument("--trials", type=_positive("trials"), help="default: the sweep file's budget, else 16")
    _scaling_args(tu, None, "Ray Train workers per trial (default: the config's scaling.num_workers, else 2)")
    tu.add_argument("--max-concurrent", type=_positive("max_concurrent", int, 0), default=0,
                    help="trials at once; 0: what the cluster can grow to")
    tu.add_argument("--scheduler", choices=SCHEDULERS, help="default: the sweep file's, else watch")
    tu.add_argument("--grace-period", type=_positive("grace_period"), help="evaluations before ASHA may stop a trial")
    tu.add_argument("--reduction-factor", type=_positive("reduction_factor", int, 2),
                    help="ASHA and watch keep 1/rf of the trials at each rung (default: the sweep file's, else 3)")
    tu.add_argument("--perturbation-interval", type=_positive("perturbation_interval"),
                    help="PBT/PB2: evaluations between exploit/explore")
    tu.add_argument("--seed", type=int, default=0, help="sampler seed")
    tu.add_argument("--name", help="job name (default: <space>-<preset>-<time>)")
    tu.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted job (a path or URI)")
    _tracking_args(tu, "sqlite:///outputs/mlflow.db")
    tu.set_defaults(fn=cmd_tune)

    pr = add("promote", "register a tuning job's best checkpoint in the MLflow Model Registry",
             "distgan promote --experiment distgan --eval-n 10000")
    _tracking_args(pr, "sqlite:///outputs/mlflow.db")
    pr.add_argument("--parent-run", help="the job's parent run id (default: the newest tuning job)")
    pr.add_argument("--model-name", default="distgan-generator")
    pr.add_argument("--alias", default="champion")
    pr.add_argument("--eval-n", type=_positive("eval_n", int, 6), default=10000, help="samples of the re-evaluation")
    pr.add_argument("--device", help="cpu or cuda[:N]")
    pr.add_argument("--pick", default="best", choices=["best", "pareto"],
                    help="best: the lowest distance; pareto (a two-objective job): of the Pareto trials within 10%% "
                         "of the best distance, the one best in the second objective")
    pr.set_defaults(fn=cmd_promote)

    sa = add("sample", "a PNG grid from a registered generator (loading it runs none of its code)",
             "distgan sample --model models:/distgan-generator@champion --out grid.png",
             "distgan sample --label 7 --n 16 --out sevens.png",
             "distgan sample --interpolate 1 2 --steps 8 --out interp.png",
             "distgan sample --vary c1 --steps 9 --out slant.png")
    _tracking_args(sa, "sqlite:///outputs/mlflow.db", experiment=False)  # a models:/ URI names no experiment
    sa.add_argument("--model", default="models:/distgan-generator@champion")
    sa.add_argument("--n", type=_positive("n"), default=64)
    sa.add_argument("--label", type=int, help="one class (conditional models)")
    sa.add_argument("--interpolate", type=int, nargs=2, metavar=("A", "B"),
                    help="interpolate between the latents of seeds A and B (one row per class)")
    sa.add_argument("--vary", metavar="cI", help="InfoGAN code cI from -2 to 2 along each row (--steps columns; one "
                    "row per class, else --n/--steps rows of fixed z)")
    sa.add_argument("--steps", type=_positive("steps", int, 2), default=8)
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                    help="psi < 1: less variety, more fidelity (StyleGAN2-style G: toward the mean W; "
                         "others: z resampled within 2 psi std)")
    sa.add_argument("--out", required=True, help="the PNG to write")
    sa.add_argument("--force", action="store_true", help="replace an existing --out")
    sa.set_defaults(fn=cmd_sample)

    ui = add("ui", "the MLflow UI on the project's store (127.0.0.1 unless told otherwise)", "distgan ui",
             "distgan ui --stop")
    _tracking_args(ui, "sqlite:///outputs/mlflow.db", experiment=False)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=_positive("port", int, 1, 65535), default=5000)
    ui.add_argument("--allowed-hosts", help="Host headers the server accepts (needed beyond loopback)")
    ui.add_argument("--stop", action="store_true", help="stop the server that serves the store (make demo leaves one)")
    ui.set_defaults(fn=cmd_ui)

    su = add("submit", "submit a tune command to a Ray cluster (Ray Jobs API)",
             "distgan submit --address http://127.0.0.1:8265 --storage s3://bucket/distgan --follow -- tune "
             "--space tune_spaces/dcgan-core.yaml --preset cifar10_dcgan --gpus-per-worker 1")
    su.add_argument("--address", default=DEFAULT_ADDRESS, help="the cluster's dashboard / Jobs API address (used as "
                                                               "given: $RAY_ADDRESS does not override it)")
    su.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (this distgan)")
    su.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the job (no secrets: the cluster's secret store provides those)")
    su.add_argument("--pip", nargs="+", help="pip requirements installed for the job (instead of the image's)")
    su.add_argument("--mlflow-uri", help="tracking URI the cluster logs to (an http(s) server every node reaches)")
    su.add_argument("--storage", help="checkpoint storage URI on the cluster (s3://, gs://, or a shared path)")
    su.add_argument("--follow", action="store_true", help="stream the logs; exit 1 unless the job SUCCEEDED")
    su.add_argument("command", nargs=argparse.REMAINDER, help="-- tune --space ... --preset ...")
    su.set_defaults(fn=cmd_submit)

    jb = add("jobs", "list, follow and stop submitted jobs (status exits 1 for FAILED/STOPPED)",
             "distgan jobs list", "distgan jobs status raysubmit_XXXX --wait 600", "distgan jobs logs raysubmit_XXXX --follow")
    jb.add_argument("action", choices=["list", "status", "logs", "stop"])
    jb.add_argument("job_id", nargs="?")
    jb.add_argument("--address", default=DEFAULT_ADDRESS, help="used as given: $RAY_ADDRESS does not override it")
    jb.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    jb.add_argument("--wait", type=_positive("wait", float, 0), default=0.0,
                    help="status: wait up to this many seconds for the end")
    jb.set_defaults(fn=cmd_jobs)

    de = add("demo", "the whole journey: tune, track, promote, sample (make demo)", "distgan demo",
             "distgan demo --resume outputs/tune/JOB")
    de.add_argument("--out", default="outputs")
    de.add_argument("--trials", type=_positive("trials"), help="default: tune_spaces/demo.yaml's budget")
    de.add_argument("--port", type=_positive("port", int, 1, 65535), default=5000,
                    help="the MLflow server's port (left running for the UI)")
    de.add_argument("--eval-n", type=_positive("eval_n", int, 6), default=5000, help="samples of the promoted distance")
    de.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted demo job")
    de.set_defaults(fn=cmd_demo)

    det = add("detector", "the domain detector", "distgan detector train --data data/mnist --out /tmp/lenet.pt")
    dsub = det.add_subparsers(dest="det_cmd", required=True, parser_class=Parser)
    dt = dsub.add_parser("train", help="train the LeNet MNIST detector", formatter_class=Formatter)
    dt.add_argument("--data", required=True, help="Parquet directory of 28x28x1 digits")
    dt.add_argument("--out", required=True, help="weights file (.pt); a .json card is written beside it")
    dt.add_argument("--epochs", type=_positive("epochs"), default=12)
    dt.add_argument("--seed", type=int, default=0)
    dt.add_argument("--force", action="store_true", help="replace an existing --out")
    dt.set_defaults(fn=cmd_detector_train)

    fid = add("fid", "the Fréchet distance, KID, precision/recall, density/coverage and mode coverage",
              "distgan fid --real data/mnist --fake runs/mnist/step_0001500 --n 2000",
              "distgan fid --real data/mnist --fake data/other --detector lenet-mnist --json")
    fid.add_argument("--real", required=True, help="Parquet directory of real data (a path or URI)")
    fid.add_argument("--fake", required=True, help="Parquet directory, or a checkpoint directory")
    fid.add_argument("--detector", default="auto", choices=DETECTORS)
    fid.add_argument("--n", type=_positive("n", int, 6), default=2000)
    fid.add_argument("--batch", type=_positive("batch"), default=250)
    fid.add_argument("--allow-repeat", action="store_true", help="allow n larger than the real data")
    fid.add_argument("--device", help="cpu or cuda[:N]")
    fid.add_argument("--json", action="store_true")
    fid.set_defaults(fn=cmd_fid)

    cf = add("config", "show a resolved configuration", "distgan config show --preset mnist --set optim.lr_g=1e-4")
    csub = cf.add_subparsers(dest="config_cmd", required=True, parser_class=Parser)
    cs = csub.add_parser("show", help="the configuration as YAML (after --preset/--config and --set)",
                         formatter_class=Formatter)
    _config_args(cs)
    cs.set_defaults(fn=cmd_config_show)
    return p


def _one_line(e: BaseException) -> str:
    """An expected failure as one line that names what was wrong."""
    import yaml

    if isinstance(e, yaml.YAMLError):
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name} line {mark.line + 1}: " if mark is not None else ""
        return f"{where}not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})"
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON ({e.msg} at line {e.lineno})"
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _expected(e: BaseException) -> bool:
    """Bad input distgan found, a file the OS named, or a service that failed: one line,
    exit 2. Anything else is a bug in distgan and keeps its traceback."""
    import yaml

    from distgan.errors import InputError

    kinds: list[type[BaseException]] = [InputError, yaml.YAMLError, ConnectionError, TimeoutError]
    mods = [("mlflow.exceptions", "MlflowException"), ("requests.exceptions", "RequestException"),
            ("pyarrow.lib", "ArrowException"), ("distgan.storage", "StorageError")]
    for mod, name in mods:
        if mod in sys.modules:  # only those already imported can have been raised
            kinds.append(getattr(sys.modules[mod], name))
    return isinstance(e, tuple(kinds)) or (isinstance(e, OSError) and e.filename is not None)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2, one line already printed)
        return int(e.code or 0)
    debug = os.environ.get("DISTGAN_DEBUG") == "1"
    if args.verbose:
        os.environ[console.VERBOSE_ENV] = "1"
    console.quiet()  # before anything imports Ray: what it starts inherits the settings
    try:
        args.fn(args)
    except KeyboardInterrupt:
        hint = f" (continue with: distgan train --resume {args.resume or args.out})" if args.command == "train" else ""
        print(f"distgan: interrupted{hint}", file=sys.stderr)
        return 130
    except RunFailed as e:
        print(f"distgan: failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if debug or not _expected(e):
            raise
        print(f"distgan: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
