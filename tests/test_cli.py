import json
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distgan import checkpoint
from distgan.cli import main

SMOKE = ["--preset", "mnist_smoke", "--no-progress"]


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    r = subprocess.run([sys.executable, "-m", "distgan.cli", "train", *SMOKE, "--out", str(out),
                        "--set", f"data.path={mnist_dir}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_train_writes_grid_checkpoint_and_metrics(smoke_run):
    out, stdout = smoke_run
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_0000010.png", "step_0000020.png"]
    assert (out / "samples" / "step_0000020.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20]
    assert all("fd_lenet500" in m and "d_real" in m and "classes_covered" in m for m in lines)
    assert checkpoint.is_checkpoint(out / "step_0000020")
    assert "step 10 | fd_lenet500" in stdout and "best checkpoint:" in stdout


def test_existing_run_is_not_overwritten_without_force(smoke_run, capsys):
    out, _ = smoke_run
    before = (out / "step_0000020" / "state.pt").read_bytes()
    assert main(["train", *SMOKE, "--out", str(out)]) == 2
    _one_error_line(capsys, str(out), "--force")
    assert (out / "step_0000020" / "state.pt").read_bytes() == before


def test_resume_continues_exactly(tmp_path, mnist_dir):
    data = f"data.path={mnist_dir}"
    assert main(["train", *SMOKE, "--out", str(tmp_path / "a"), "--set", data]) == 0
    assert main(["train", *SMOKE, "--out", str(tmp_path / "b"), "--set", data, "--set", "train.steps=10"]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--set", "train.steps=20", "--no-progress"]) == 0
    a, _, ma = checkpoint.load(tmp_path / "a" / "step_0000020")
    b, _, mb = checkpoint.load(tmp_path / "b" / "step_0000020")
    for net in ("G", "D", "G_ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
    assert ma["fd_lenet500"] == mb["fd_lenet500"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


@pytest.mark.parametrize("args, needles", [
    (["--set", "optim.lr_g=0"], ["optim.lr_g: 0"]),
    (["--set", "train.nd=2"], ["train.nd: unknown config key"]),
    (["--set", "model.resolution=30"], ["model.resolution: 30"]),
    (["--set", "data.path=/nonexistent/dir"], ["/nonexistent/dir"]),
    (["--set", "data.materialize=sometimes"], ["data.materialize: 'sometimes'", "auto"]),
    (["--set", "stop.max_loss=-1"], ["stop.max_loss: -1"]),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, args, needles):
    assert main(["train", *SMOKE, "--out", str(tmp_path / "r"), *args]) == 2
    _one_error_line(capsys, *needles)
    assert not (tmp_path / "r").exists()


def test_wrong_schema_and_missing_checkpoint_are_named(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"pixels": [b"x"]}), bad / "part-0.parquet")
    assert main(["train", *SMOKE, "--out", str(tmp_path / "r"), "--set", f"data.path={bad}"]) == 2
    _one_error_line(capsys, "part-0.parquet", "wrong schema")
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    _one_error_line(capsys, "--resume", "no checkpoint")


def test_data_prepare_command(tmp_path, capsys):
    assert main(["data", "prepare", "ring8", "--out", str(tmp_path / "ring"), "--n", "4000"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3800 rows in 4 shards" in out and "200 more held out of training" in out
    assert main(["data", "prepare", "ring8", "--out", str(tmp_path / "ring")]) == 2
    _one_error_line(capsys, "--force")


def test_fid_of_a_checkpoint_matches_the_evaluation_that_wrote_it(smoke_run, mnist_dir, capsys):
    out, _ = smoke_run
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert main(["fid", "--real", str(mnist_dir), "--fake", str(out / "step_0000020"),
                 "--n", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fd_lenet500"] == pytest.approx(logged["fd_lenet500"], rel=1e-9)
    assert result["classes_covered"] == logged["classes_covered"]


@pytest.mark.parametrize("command", [["train", *SMOKE, "--workers", "1", "--out", "run"],
                                     ["tune", "--preset", "mnist_smoke", "--space", "tune_spaces/dcgan-core.yaml",
                                      "--storage", "tune"]])
def test_an_address_where_no_ray_answers_is_one_line_within_seconds(tmp_path, command):
    import shutil
    import time

    from distgan.server import free_port

    shutil.copytree("tune_spaces", tmp_path / "tune_spaces")
    env = {**__import__("os").environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}", "MLFLOW_TRACKING_URI": ""}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "distgan.cli", *command], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert time.monotonic() - t0 < 60  # Ray's own client retries for minutes
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "RAY_ADDRESS 127.0.0.1:" in lines[0] and "no Ray cluster answers there" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune_spaces"]  # nothing written


def test_a_bug_in_distgan_keeps_its_traceback(monkeypatch, capsys):
    from distgan import api

    def broken(*args, **kwargs):
        return {}["no such key"]  # what a slip in distgan's own code raises

    monkeypatch.setattr(api, "config", broken)
    with pytest.raises(KeyError):
        main(["config", "show"])
    monkeypatch.setattr(api, "config", lambda *a, **k: int("x"))  # a ValueError that is no input of the user's
    with pytest.raises(ValueError, match="invalid literal"):
        main(["config", "show"])


@pytest.mark.parametrize("command", [["train"], ["tune"], ["promote"], ["sample"], ["fid"], ["submit"],
                                     ["data", "prepare"], ["ui"]])
def test_help_names_each_default_once_and_never_none(command, capsys):
    assert main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in text
    assert not re.search(r"\(default: [^)]*\) \(default:", text), text
