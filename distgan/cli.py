"""`distgan` command line: argument parsing only; the work is in the modules it calls.

Every expected failure (bad config key, missing data, no checkpoint, ...) ends as one line
on stderr and exit code 2; nothing in an existing output is overwritten without --force.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distgan import config as config_mod


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
    if cfg.scaling.num_workers:
        from distgan import launch

        best = launch.run(cfg, out, a.storage, resume=bool(a.resume), force=a.force)
    else:
        best = train_local(cfg, out, resume=bool(a.resume), force=a.force, progress=not a.no_progress,
                           device=a.device)
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
        job = tune.new_job(config_mod.load(a.preset, a.config, sets), a.space, a.trials, a.storage, a.name,
                           a.scheduler, a.grace_period, a.reduction_factor, a.seed, a.preset or "")
    try:
        tune.start(job, resume=bool(a.resume), max_concurrent=a.max_concurrent)
    except (KeyboardInterrupt, tune.JobInterrupted):
        print(f"interrupted: resume with  distgan tune --resume {job.experiment_dir}", file=sys.stderr)
        raise KeyboardInterrupt from None


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
    tr.add_argument("--no-progress", action="store_true")
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
    tu.add_argument("--storage", help="Ray storage path or URI; default outputs/tune")
    tu.add_argument("--name", help="job name (default: <space>-<preset>-<time>)")
    tu.add_argument("--resume", metavar="EXPERIMENT_PATH", help="continue an interrupted job")
    tu.set_defaults(fn=cmd_tune)

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
