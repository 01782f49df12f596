"""Distributed training on a real local Ray: Train V2 workers, DDP over gloo, Ray Data."""

import json
import math
import shutil
import sys

import pytest
import ray.cloudpickle as cloudpickle
import ray.train
import ray.train.torch
import torch

from distgan import checkpoint, cluster, presets, storage
from distgan.config import ConfigError
from distgan.data.reader import load_all
from distgan.data.schema import inspect
from distgan.engine import GANEngine
from distgan.launch import await_real_stats, best_checkpoint, build_trainer, real_stats
from distgan.loop import evaluate_engine
from distgan.metrics.evaluate import Evaluator
from distgan.worker import WorkerSpec, build_engine

pytestmark = pytest.mark.slow


def _smoke(**over):
    return presets.mnist_smoke().with_overrides({"scaling.num_workers": 2, **over})


def _spec(cfg, data_dir, tmp_path, **kw) -> WorkerSpec:
    info = inspect(str(data_dir))
    return WorkerSpec(cfg, info, await_real_stats(real_stats(cfg, info, str(tmp_path / "stats"))), **kw)


@pytest.mark.timeout(300)  # with a whole CPU per worker on 2 cores, Ray Data starves and this hangs
def test_two_workers_stream_ray_data_report_distances_and_checkpoints_restore(ray_session, mnist_dir, tmp_path):
    cfg = _smoke()
    result = build_trainer(_spec(cfg, mnist_dir, tmp_path), str(tmp_path / "smoke")).fit()
    assert result.error is None
    df = result.metrics_dataframe.sort_values("step")  # Ray orders rows by checkpoint score
    assert df["step"].tolist() == [10, 20] and df["world_size"].tolist() == [2, 2]
    assert all(math.isfinite(v) for v in df["fd_lenet500"]) and "fid500" not in df  # LeNet features: no "fid"
    # the second report's checkpoint restores an engine that evaluates to the reported distance
    ckpt, metrics = [cm for cm in result.best_checkpoints if cm[1]["step"] == 20][0]
    state, saved_cfg, _ = checkpoint.load(ckpt.path)
    engine = GANEngine.from_config(saved_cfg)
    engine.load_state_dict(state)
    assert engine.step_count == 20
    again = evaluate_engine(engine, Evaluator.build(saved_cfg, inspect(str(mnist_dir)), torch.device("cpu")))
    assert again["fd_lenet500"] == pytest.approx(metrics["fd_lenet500"], rel=1e-6)
    assert (tmp_path / "smoke" / "step_0000020" / "samples.png").is_file()
    assert best_checkpoint(result, "fd_lenet500").metrics["fd_lenet500"] == min(df["fd_lenet500"])
    # one real-statistics computation for the run, in the run's storage
    assert len(storage.list_dir(str(tmp_path / "stats"))) == 1


def _equivalence_loop(config):
    """Each rank trains on its slice of the same global batches."""
    from distgan.config import RunConfig

    cfg = RunConfig.from_dict(config["run"])
    torch.set_default_dtype(torch.float64)
    engine = build_engine(cfg)
    data, b = config["data"], cfg.train.batch_size
    for k in range(config["steps"]):
        glob = data[k * b * engine.world_size:(k + 1) * b * engine.world_size]
        engine.step(glob[engine.rank * b:(engine.rank + 1) * b])
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if engine.rank == 0:
            path = checkpoint.save(f"{tmp}/c", engine.state_dict(), cfg, {})
            ckpt = ray.train.Checkpoint.from_directory(str(path))
        ray.train.report({"done": 1}, checkpoint=ckpt)


@pytest.mark.parametrize("loss", ["ns", "wgan-gp"])
def test_two_workers_equal_one_worker_with_twice_the_batch(ray_session, ring8_dir, tmp_path, loss):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    # float64 on both sides: Adam divides by sqrt(v), so float32 reduction-order noise in a
    # near-zero gradient can move a weight by a visible fraction of lr; a real bug moves it more.
    steps, b = 5, 32
    data, _, _ = load_all(ring8_dir)
    data = data.double()
    cfg = presets.ring8().with_overrides({"train.batch_size": b, "loss.kind": loss})
    trainer = ray.train.torch.TorchTrainer(
        _equivalence_loop, train_loop_config={"run": cfg.to_dict(), "data": data[:steps * 2 * b], "steps": steps},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="equiv", storage_path=str(tmp_path)))
    result = trainer.fit()
    two, _, _ = checkpoint.load(result.checkpoint.path)
    torch.set_default_dtype(torch.float64)
    try:
        one = GANEngine.from_config(cfg.with_overrides({"train.batch_size": 2 * b}))
        for k in range(steps):
            one.step(data[k * 2 * b:(k + 1) * 2 * b])
    finally:
        torch.set_default_dtype(torch.float32)
    for net in ("G", "D"):
        ref = one.state_dict()[net]
        for key, value in two[net].items():
            assert torch.allclose(value, ref[key], atol=1e-5), f"{net}.{key} {(value - ref[key]).abs().max()}"


def _family_loop(config):
    """Each rank trains each family's config on its slice of the same global image batches;
    rank 0 reports how far the ranks' parameters lie apart and checkpoints its own."""
    import tempfile

    from distgan.config import RunConfig
    from distgan.distributed import all_gather_object

    torch.set_default_dtype(torch.float64)
    (x, y), report = config["data"], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in config["runs"].items():
            cfg = RunConfig.from_dict(run)
            engine, b = build_engine(cfg), cfg.train.batch_size
            for k in range(config["steps"]):
                start = k * b * engine.world_size + engine.rank * b
                engine.step(x[start:start + b], y[start:start + b])
            flat = torch.cat([p.detach().flatten().double() for net in (engine.G, engine.D) for p in net.parameters()])
            everyone = all_gather_object(flat)
            report[f"{name}/rank_spread"] = max(float((f - everyone[0]).abs().max()) for f in everyone)
            report[f"{name}/aug_p"] = float(engine.aug_p)
            if engine.rank == 0:
                checkpoint.save(f"{tmp}/c/{name}", engine.state_dict(), cfg, {})
        ckpt = ray.train.Checkpoint.from_directory(f"{tmp}/c") if engine.rank == 0 else None
        ray.train.report(report, checkpoint=ckpt)


def test_resnet_stylegan2_and_infogan_train_under_ddp_like_one_process(ray_session, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    steps, b = 3, 8
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(steps * 2 * b, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1)
    y = torch.randint(0, 10, (steps * 2 * b,), generator=g)
    cfgs = {  # stylegan2: lazy R1, ADA with p moving (all ranks must agree on r_t);
              # resnet: self-attention, DiffAugment, LeCam's averages over the global batch
        "stylegan2": presets.get("mnist_stylegan2_smoke").with_overrides({"train.batch_size": b, "aug.target": 0.01}),
        # InfoGAN codes: the Q head in D's main and lazy-R1 steps, the codes' draws rank-sliced
        "infogan": presets.get("mnist_stylegan2_smoke").with_overrides(
            {"train.batch_size": b, "model.style_mixing": 0.0, "model.codes": 2, "model.code_categories": 3}),
        "resnet": presets.get("mnist_resnet_smoke").with_overrides({"train.batch_size": b, "loss.lecam_weight": 0.3})}
    trainer = ray.train.torch.TorchTrainer(
        _family_loop, train_loop_config={"runs": {k: c.to_dict() for k, c in cfgs.items()}, "data": (x, y),
                                         "steps": steps},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="family", storage_path=str(tmp_path)))
    result = trainer.fit()
    assert result.error is None
    one = {}
    torch.set_default_dtype(torch.float64)
    try:
        for name, cfg in cfgs.items():
            assert result.metrics[f"{name}/rank_spread"] == 0.0  # DDP kept the ranks identical
            one[name] = GANEngine.from_config(cfg.with_overrides({"train.batch_size": 2 * b}))
            for k in range(steps):
                one[name].step(x[k * 2 * b:(k + 1) * 2 * b], y[k * 2 * b:(k + 1) * 2 * b])
    finally:
        torch.set_default_dtype(torch.float32)
    two = {name: checkpoint.load(f"{result.checkpoint.path}/{name}")[0] for name in cfgs}
    p = result.metrics["stylegan2/aug_p"]
    assert p > 0 and float(one["stylegan2"].aug_p) == p
    # No BatchNorm: the same numbers as one process with the global batch, except W's running
    # mean, a per-rank buffer (rank 0's is broadcast before an evaluation).
    for name in ("stylegan2", "infogan"):
        for net in ("G", "D"):
            ref = one[name].state_dict()[net]
            for key, value in two[name][net].items():
                if key != "w_avg":
                    assert torch.allclose(value, ref[key], atol=1e-5), f"{name} {net}.{key} {(value - ref[key]).abs().max()}"
    # The ResNet G's BatchNorm normalizes over each rank's batch (SyncBatchNorm needs CUDA), so
    # D sees other fakes than one process does: agreement of the ranks is exact (above), and
    # D's closeness to the one-process D, below a loose bound, says the global batch was split right.
    ref = one["resnet"].state_dict()["D"]
    worst = max(float((v - ref[k]).abs().max()) for k, v in two["resnet"]["D"].items())
    assert 0 < worst < 0.05


def test_bad_resources_and_storage_fail_before_anything_starts(ray_session, tmp_path):
    cap = cluster.capacity()
    assert not cap.autoscaling  # a local instance cannot grow
    with pytest.raises(ConfigError, match=r"^scaling.num_workers: 8 workers x 0.5 CPU need 4 CPUs, Ray has 2$"):
        cluster.check_fits(_smoke(**{"scaling.num_workers": 8}), cap)
    with pytest.raises(ConfigError, match="no GPU"):
        cluster.check_fits(_smoke(**{"scaling.use_gpu": True}), cap)
    with pytest.raises(storage.StorageError, match="--storage /proc/distgan: cannot write there"):
        storage.check_writable("/proc/distgan", "--storage")
    assert storage.check_writable(str(tmp_path / "new"), "--storage") == str(tmp_path / "new")


@pytest.mark.timeout(120)
def test_real_statistics_waiting_on_a_cluster_whose_cpus_are_held_say_so(ray_session):
    # seen: a stray placement group held both CPUs and a job sat silently in ray.get
    from ray.util.placement_group import placement_group, remove_placement_group

    held = placement_group([{"CPU": 2}])
    ray_session.get(held.ready())
    said = []

    def say(line: str) -> None:
        said.append(line)
        if len(said) == 2:  # two notices, then the CPUs come free
            remove_placement_group(held)

    task = ray_session.remote(lambda: ("where", "computed", 0.5)).options(num_cpus=0.5)
    try:
        assert await_real_stats(task.remote(), say, notice_s=1.0) == "where"
    finally:
        if len(said) < 2:
            remove_placement_group(held)
    assert said[:2] == ["real statistics: not ready after 1 s; the cluster has 0 of 2 CPU free (`ray status` shows "
                        "what holds them)", "real statistics: not ready after 3 s; the cluster has 0 of 2 CPU "
                        "free (`ray status` shows what holds them)"]
    assert said[-1] == "real statistics: computed where in 0.5 s"


@pytest.mark.timeout(600)
def test_train_command_with_workers_guards_replaces_and_resumes_exactly(ray_session, mnist_dir, tmp_path, capsys):
    """One layout, one stream: a run replaced with --force in a --storage that is not the
    parent of --out, then resumed, ends bit for bit where an uninterrupted run ends."""
    from distgan.cli import main

    base = ["train", "--preset", "mnist_smoke", "--workers", "2", "--set", f"data.path={mnist_dir}"]
    b = [*base, "--out", str(tmp_path / "b"), "--storage", str(tmp_path / "s")]
    run = tmp_path / "s" / "b"
    # uninterrupted (what the resumed run must end at), in the same run directory named the other way
    assert main([*base, "--out", str(run), "--set", "train.steps=30"]) == 0
    assert f"best checkpoint: {run}/step_00000" in capsys.readouterr().out
    shutil.copytree(run / "step_0000030", tmp_path / "uninterrupted")
    assert main(b) == 2  # an existing run is not overwritten
    assert "--force" in capsys.readouterr().err
    assert main([*b, "--force", "--set", "train.steps=20"]) == 0  # replaced, though --out is elsewhere
    assert not (run / ".replaced").exists() and not (tmp_path / "b").exists()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [10, 20]
    assert not (run / "step_0000030").exists()
    assert main(["train", "--workers", "2", "--resume", str(tmp_path / "b"), "--storage", str(tmp_path / "s"),
                 "--set", "train.steps=30"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 30  # after its first good step
    assert (run / "samples" / "step_0000030.png").is_file() and json.loads((run / "best.json").read_text())
    one, _, _ = checkpoint.load(tmp_path / "uninterrupted")
    resumed, _, _ = checkpoint.load(run / "step_0000030")
    for net in ("G", "D", "G_ema"):  # the same batches on every rank, before and after the resume
        assert all(torch.equal(one[net][k], resumed[net][k]) for k in one[net]), net
    assert main(["train", "--preset", "mnist_smoke", "--workers", "8", "--out", str(tmp_path / "other")]) == 2
    assert "Ray has 2" in capsys.readouterr().err
