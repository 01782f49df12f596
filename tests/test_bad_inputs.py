"""Bad input, every command: exit 2, exactly one line on stderr naming the culprit (key, file,
value or address), no traceback, and every file that existed before byte-identical after.

One workspace holds what a user has lying around: prepared data, a finished run, spaces,
configs, broken Parquet, a damaged checkpoint, a half-written job. Each case runs the real
command line in this process against it (MLflow cases against the session's real server)."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from distgan.cli import main
from distgan.data import prepare

SMOKE = ["--preset", "mnist_smoke", "--no-progress"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mnist_dir):
    ws = tmp_path_factory.mktemp("workspace")
    shutil.copytree(mnist_dir, ws / "mnist")
    prepare.mixture("ring8", str(ws / "ring8"), n=2000)
    old = os.getcwd()
    os.chdir(ws)
    try:
        assert main(["train", *SMOKE, "--out", "run", "--set", "data.path=mnist"]) == 0
    finally:
        os.chdir(old)
    (ws / "space.yaml").write_text(yaml.safe_dump({"params": {"optim.lr_g": {"dist": "loguniform", "low": 1e-4,
                                                                             "high": 1e-3}}}))
    (ws / "bad.yaml").write_text("model:\n  z_dim: [1, 2\n")
    (ws / "widht.yaml").write_text("model:\n  widht: 3\n")
    (ws / "metric.yaml").write_text("metric: fid\nparams:\n  train.n_d: {dist: choice, values: [1]}\n")
    (ws / "noparam.yaml").write_text("params:\n  optim.lr_x: {dist: uniform, low: 0.1, high: 0.2}\n")
    (ws / "schema").mkdir()
    pq.write_table(pa.table({"pixels": [b"x"]}), ws / "schema" / "part-0.parquet")
    (ws / "corrupt").mkdir()
    (ws / "corrupt" / "part-00000.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    (ws / "emptydir").mkdir()
    damaged = ws / "damaged"
    shutil.copytree(ws / "run" / "step_0000020", damaged)
    raw = bytearray((damaged / "state.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (damaged / "state.pt").write_bytes(bytes(raw))
    (ws / "images" / "cats").mkdir(parents=True)
    (ws / "images" / "cats" / "broken.png").write_bytes(b"\x89PNG not really")
    (ws / "noimages").mkdir()
    (ws / "job").mkdir()
    (ws / "job" / "distgan_job.json").write_text('{"name": "job", "storage": ')  # cut mid-write
    (ws / "grid.png").write_bytes(b"\x89PNG an existing picture")
    (ws / "lenet.pt").write_bytes(b"weights someone trained")
    (ws / "distgan").mkdir()  # a working dir that looks like a checkout
    nan = np.full((600, 2), np.nan, np.float32)  # points a diverged generator wrote out
    prepare.write_shards(str(ws / "nanpoints"), "ring8", "float32", 8, [p.tobytes() for p in nan],
                         np.zeros(600, np.int64), (1, 2, 1))
    return ws


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CASES = [
    # --- train: config keys and values
    (["train", *SMOKE, "--out", "new", "--set", "optim.lr_g=0"], ["optim.lr_g: 0"]),
    (["train", *SMOKE, "--out", "new", "--set", "optim.lr_g=nan"], ["optim.lr_g", "not a finite number"]),
    (["train", *SMOKE, "--out", "new", "--set", "optim.lr_d=inf"], ["optim.lr_d", "not a finite number"]),
    (["train", *SMOKE, "--out", "new", "--set", "train.nd=2"], ["train.nd: unknown config key"]),
    (["train", *SMOKE, "--out", "new", "--set", "model.resolution=30"], ["model.resolution: 30"]),
    (["train", *SMOKE, "--out", "new", "--set", "train.n_d=two"], ["train.n_d: 'two' is not a int"]),
    (["train", *SMOKE, "--out", "new", "--set", "model.sn_d=1"], ["model.sn_d: 1 is not a bool"]),
    (["train", *SMOKE, "--out", "new", "--set", "model.cond=film"], ["model.cond: 'film'"]),
    (["train", *SMOKE, "--out", "new", "--set", "optim.lr_decay=cosine"], ["optim.lr_decay: 'cosine'"]),
    (["train", *SMOKE, "--out", "new", "--set", "data.path=/nonexistent/dir"], ["/nonexistent/dir"]),
    (["train", *SMOKE, "--out", "new", "--set", "eval.metrics=[kd]"], ["eval.metrics", "'fd' must be listed"]),
    (["train", *SMOKE, "--out", "new", "--set", "eval.metrics=[fd, xx]"], ["eval.metrics", "'xx': unknown metric"]),
    (["train", *SMOKE, "--out", "new", "--set", "eval.metrics=[fd, kd@0]"], ["eval.metrics", "'kd@0'"]),
    (["train", *SMOKE, "--out", "new", "--set", "eval.metrics=fd"], ["eval.metrics: 'fd' is not a list"]),
    (["train", *SMOKE, "--out", "new", "--set", "eval.detector=resnet"], ["eval.detector: 'resnet'"]),
    (["train", *SMOKE, "--out", "new", "--set", "eval.num_samples=5", "--set", "eval.metrics=[fd, prdc]"],
     ["eval.num_samples: 5", "prdc"]),
    (["train", *SMOKE, "--out", "new", "--set", "scaling.max_failures=-5"], ["scaling.max_failures: -5"]),
    (["train", *SMOKE, "--out", "new", "--set", "stop.plateau_delta=2"], ["stop.plateau_delta: 2"]),
    (["train", *SMOKE, "--out", "new", "--set", "train.compile=yes"], ["train.compile: 'yes'"]),
    (["train", *SMOKE, "--out", "new", "--set", "model.sn_d=on"], ["model.sn_d: 'on' is not a bool"]),
    (["train", *SMOKE, "--out", "new", "--set", "tracking.mlflow_uri=http://me:pw@127.0.0.1:5000"],
     ["tracking.mlflow_uri", "password"]),
    (["train", *SMOKE, "--out", "new", "--set", "optim.lr_g"], ["--set 'optim.lr_g'", "key=value"]),
    (["train", *SMOKE, "--out", "new", "--set", "model=1"], ["model: unknown config key"]),
    (["train", "--config", "missing.yaml", "--out", "new"], ["--config missing.yaml", "no such file"]),
    (["train", "--config", "bad.yaml", "--out", "new"], ["bad.yaml", "not valid YAML"]),
    (["train", "--config", "widht.yaml", "--out", "new"], ["model.widht: unknown config key"]),
    (["train", "--preset", "mnist_huge", "--out", "new"], ["--preset 'mnist_huge'", "mnist_smoke"]),
    (["train", "--preset", "mnist_smoke", "--config", "space.yaml", "--out", "new"], ["--preset and --config"]),
    (["train", *SMOKE], ["--out DIR is required"]),
    (["train", *SMOKE, "--out", "new", "--device", "tpu"], ["--device tpu"]),
    (["train", *SMOKE, "--out", "new", "--device", "cuda"], ["--device cuda", "no CUDA"]),
    (["train", *SMOKE, "--out", "new", "--workers", "-1"], ["--workers", "-1"]),
    (["train", *SMOKE, "--out", "new", "--gpus-per-worker", "1"], ["--gpus-per-worker needs --workers"]),
    # --- train: data
    (["train", *SMOKE, "--out", "new", "--set", "data.path=schema"], ["part-0.parquet", "wrong schema"]),
    (["train", *SMOKE, "--out", "new", "--set", "data.path=corrupt"], ["part-00000.parquet", "not a readable Parquet"]),
    (["train", *SMOKE, "--out", "new", "--set", "data.path=emptydir"], ["emptydir", "no .parquet files"]),
    (["train", *SMOKE, "--out", "new", "--set", "data.path=ring8"], ["model: expects samples of shape (1, 28, 28)",
                                                                    "(2,)"]),
    (["train", *SMOKE, "--out", "new", "--set", "data.path=mnist", "--set", "train.batch_size=6000"],
     ["train.batch_size x train.n_d = 6000 rows", "more than the data set's 4750"]),
    # --- train: an existing run is never touched by a refused command
    (["train", *SMOKE, "--out", "run"], ["run", "--force"]),
    (["train", *SMOKE, "--out", "run", "--force", "--set", "optim.lr_g=-1"], ["optim.lr_g: -1.0"]),
    (["train", *SMOKE, "--out", "run", "--force", "--set", "data.path=corrupt"], ["not a readable Parquet"]),
    (["train", "--resume", "run", "--set", "model.z_dim=64"], ["model.z_dim: a resumed run cannot change it"]),
    (["train", "--resume", "run", "--set", "eval.num_samples=1000"], ["eval.num_samples: a resumed run cannot change"]),
    (["train", "--resume", "run", "--set", "eval.detector=coords"], ["eval.detector: a resumed run cannot change"]),
    (["train", "--resume", "run", "--preset", "mnist"], ["--resume takes its config from the run"]),
    (["train", "--resume", "emptydir"], ["--resume", "emptydir", "no checkpoint"]),
    # --- tune (all before Ray starts)
    (["tune", "--preset", "mnist_smoke", "--space", "nospace.yaml"], ["--space nospace.yaml", "no such file"]),
    (["tune", "--preset", "mnist_smoke", "--space", "bad.yaml"], ["bad.yaml", "not valid YAML"]),
    (["tune", "--preset", "mnist_smoke", "--space", "metric.yaml"], ["metric.yaml", "metric: not a setting"]),
    (["tune", "--preset", "mnist_smoke", "--space", "noparam.yaml"], ["params.optim.lr_x: unknown config key"]),
    (["tune", "--preset", "mnist_smoke"], ["--space FILE is required"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--trials", "0"], ["--trials", "0"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--scheduler", "bohb"], ["--scheduler", "bohb"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--reduction-factor", "1"], ["--reduction-factor"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--max-concurrent", "-1"], ["--max-concurrent"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--storage", "/proc/distgan"],
     ["--storage /proc/distgan", "cannot write there"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--storage", "s3://"], ["s3://", "no bucket"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--mlflow-uri", "./mlruns"],
     ["--mlflow-uri ./mlruns", "file store"]),
    (["tune", "--preset", "mnist_smoke", "--space", "space.yaml", "--mlflow-uri", "http://127.0.0.1:{dead}"],
     ["--mlflow-uri http://127.0.0.1:", "does not answer"]),
    (["tune", "--resume", "emptydir"], ["--resume emptydir", "distgan_job.json missing"]),
    (["tune", "--resume", "job"], ["distgan_job.json", "unreadable job file"]),
    (["tune", "status", "emptydir"], ["emptydir", "no status.json"]),
    (["tune", "status"], ["tune status: give the experiment directory"]),
    # --- fid
    (["fid", "--real", "mnist", "--fake", "mnist", "--n", "-5"], ["--n", "-5"]),
    (["fid", "--real", "mnist", "--fake", "mnist", "--n", "6000"], ["n=6000", "--allow-repeat"]),
    (["fid", "--real", "mnist", "--fake", "mnist", "--batch", "0"], ["--batch", "0"]),
    (["fid", "--real", "nodata", "--fake", "mnist"], ["nodata", "does not exist"]),
    (["fid", "--real", "mnist", "--fake", "grid.png"], ["--fake grid.png", "expected a Parquet directory"]),
    (["fid", "--real", "mnist", "--fake", "ring8", "--n", "500"], ["--fake ring8", "(2,)"]),
    (["fid", "--real", "mnist", "--fake", "damaged", "--n", "500"], ["damaged", "checksum mismatch"]),
    (["fid", "--real", "mnist", "--fake", "mnist", "--detector", "vgg"], ["--detector", "vgg"]),
    (["fid", "--real", "ring8", "--fake", "nanpoints", "--n", "500"], ["--fake nanpoints", "not finite"]),
    # --- data prepare
    (["data", "prepare", "mnist-embedded", "--out", "mnist"], ["mnist", "--force"]),
    (["data", "prepare", "ring8", "--out", "ring8", "--n", "0", "--force"], ["--n", "0"]),
    (["data", "prepare", "folder", "--out", "newdata"], ["give the image folder"]),
    (["data", "prepare", "folder", "nofolder", "--out", "newdata"], ["nofolder", "does not exist"]),
    (["data", "prepare", "folder", "noimages", "--out", "newdata"], ["noimages", "no images"]),
    (["data", "prepare", "folder", "images", "--out", "newdata"], ["broken.png", "not a readable image"]),
    (["data", "prepare", "folder", "images", "--out", "newdata", "--size", "2"], ["--size", "2"]),
    (["data", "prepare", "folder", "images", "--out", "newdata", "--channels", "4"], ["--channels", "4"]),
    (["data", "prepare", "cifar", "--out", "newdata"], ["cifar"]),
    # --- promote and sample (the session's MLflow server)
    (["promote", "--mlflow-uri", "./mlruns"], ["--mlflow-uri ./mlruns", "file store"]),
    (["promote", "--mlflow-uri", "http://127.0.0.1:{dead}"], ["does not answer"]),
    (["promote", "--mlflow-uri", "{server}", "--eval-n", "0"], ["--eval-n", "0"]),
    (["promote", "--mlflow-uri", "{server}", "--experiment", "no-such-experiment"],
     ["--experiment no-such-experiment", "no such MLflow experiment"]),
    (["sample", "--mlflow-uri", "{server}", "--out", "grid.png"], ["--out grid.png", "exists"]),
    (["sample", "--mlflow-uri", "{server}", "--out", "grid.jpg"], ["--out grid.jpg", ".png"]),
    (["sample", "--mlflow-uri", "{server}", "--out", "g.png", "--n", "0"], ["--n", "0"]),
    (["sample", "--mlflow-uri", "{server}", "--out", "g.png", "--steps", "1"], ["--steps", "1"]),
    (["sample", "--mlflow-uri", "{server}", "--out", "g.png", "--model", "models:/no-such-model@champion"],
     ["--model models:/no-such-model@champion", "not found"]),
    (["sample", "--mlflow-uri", "{server}", "--out", "g.png", "--model", "champion"],
     ["--model champion", "models:/NAME@ALIAS"]),
    (["sample", "--mlflow-uri", "http://u:pw@127.0.0.1:5000", "--out", "g.png"], ["password"]),
    # --- submit and jobs
    (["submit", "--address", "not-a-url", "--", "tune"], ["--address not-a-url", "http://"]),
    (["submit", "--address", "http://127.0.0.1:{dead}", "--", "tune"], ["--address", "not reachable"]),
    (["submit", "--address", "http://127.0.0.1:{dead}", "--env", "NOEQUALS", "--", "tune"], ["--env NOEQUALS"]),
    (["submit", "--address", "http://127.0.0.1:{dead}", "--env", "API_KEY=x", "--", "tune"], ["API_KEY", "secret"]),
    (["submit", "--address", "http://127.0.0.1:{dead}", "--", "train"], ["give the tune command"]),
    (["submit", "--address", "http://127.0.0.1:{dead}", "--working-dir", "nowhere", "--", "tune"], ["nowhere"]),
    (["submit", "--address", "http://127.0.0.1:{dead}", "--mlflow-uri", "http://u:pw@h:1", "--", "tune"],
     ["password"]),
    (["jobs", "status"], ["give the JOB_ID"]),
    (["jobs", "status", "raysubmit_x", "--address", "ftp://head"], ["--address ftp://head"]),
    (["jobs", "restart", "raysubmit_x"], ["restart"]),
    (["jobs", "status", "raysubmit_x", "--wait", "-1"], ["--wait", "-1"]),
    # --- detector, config, ui
    (["detector", "train", "--data", "mnist", "--out", "lenet.pt"], ["--out lenet.pt", "exists"]),
    (["detector", "train", "--data", "nodata", "--out", "new.pt"], ["nodata", "does not exist"]),
    (["detector", "train", "--data", "mnist", "--out", "new.pt", "--epochs", "0"], ["--epochs", "0"]),
    (["detector", "train", "--data", "ring8", "--out", "new.pt"], ["ring8", "28x28x1"]),
    (["config", "show", "--set", "optim.lr_gg=1"], ["optim.lr_gg: unknown config key"]),
    (["config", "show", "--preset", "nope"], ["--preset 'nope'"]),
    (["ui", "--host", "0.0.0.0"], ["--host 0.0.0.0", "--allowed-hosts"]),
    (["ui", "--mlflow-uri", "{server}"], ["already a server"]),
    (["ui", "--port", "0"], ["--port", "0"]),
    (["ui", "--port", "99999"], ["--port", "99999", "65535"]),
]


@pytest.mark.parametrize("argv, needles", CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_changes(workspace, mlflow_server, argv, needles, capfd,
                                                          monkeypatch):
    from distgan.server import free_port

    monkeypatch.chdir(workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dead = str(free_port())
    argv = [a.replace("{server}", mlflow_server).replace("{dead}", dead) for a in argv]
    before = snapshot(workspace)
    code = _run(argv)
    _, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err and lines[0].startswith("distgan: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(workspace) == before  # nothing written, overwritten or deleted


def _run(argv: list[str]) -> int:
    """main(), with argparse's own exit (a usage error) turned into its status."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_the_sweep_is_wide():
    assert len(CASES) >= 60
    commands = {c[0][0] for c in CASES}
    assert {"train", "tune", "fid", "data", "promote", "sample", "submit", "jobs", "detector"} <= commands


def test_distgan_debug_shows_the_traceback_instead_of_one_line(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    assert _run(["train", *SMOKE, "--out", "new", "--set", "optim.lr_g=0"]) == 2
    monkeypatch.setenv("DISTGAN_DEBUG", "1")
    with pytest.raises(ValueError, match="optim.lr_g: 0"):  # raised through, for its traceback
        main(["train", *SMOKE, "--out", "new", "--set", "optim.lr_g=0"])
