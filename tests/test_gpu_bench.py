"""The benchmarks of a step near the hardware and of an evaluation run with plain torch; here
on CPU with tiny sizes (the GPU figures are recorded in docs/benchmarks.md when a GPU
machine runs them)."""

import benches


def test_gpu_bench_runs_on_cpu_with_tiny_sizes(capsys):
    rows = benches.load("gpu_bench").main([
        "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "4", "--fid-n", "16", "--fid-batch", "8",
        "--amp", "off", "--variants", "eager", "channels_last", "all", "--check", "2",
        "--checks", "channels_last", "fused_adam", "bf16",
        "--check-presets", "mnist_smoke", "mnist_resnet_smoke", "mnist_stylegan2_smoke"])
    engine = [r for r in rows if "variant" in r]
    assert [(r["preset"], r["variant"]) for r in engine] == [(p, v) for p in ("cifar10_dcgan", "celeba64")
                                                             for v in ("eager", "channels_last", "all")]
    assert all(r["img_per_s"] > 0 for r in engine)
    evals = [r for r in rows if "fid_s" in r]
    assert len(evals) == 2 and all(0 < r["fid_s"] and 0 < r["fid_full_s"] for r in evals)
    checks = [r for r in rows if "check" in r]
    assert [(r["preset"], r["check"]) for r in checks] == [
        (p, c) for p in ("mnist_smoke", "mnist_resnet_smoke", "mnist_stylegan2_smoke") for c in ("channels_last", "fused_adam", "bf16")]
    # fp32 options on CPU: the same arithmetic, so well within tolerance; bf16 measurably different
    assert all(r["ok"] for r in checks if r["check"] != "bf16"), checks
    assert all(r["weight_diff"] > 0 for r in checks if r["check"] == "bf16")
    out = capsys.readouterr().out
    assert "device cpu" in out and "vs eager" in out and "+ kd + prdc" in out and "against eager fp32" in out


def test_eval_bench_agrees_old_and_new_and_the_references(capsys):
    rows = benches.load("eval_bench").main(["--n", "300", "--dim", "64", "--device", "cpu", "--reference-n", "300"])
    (r,) = rows
    assert r["feat_equal"] == 0.0
    assert abs(r["fd"][0] - r["fd"][1]) <= 1e-6 * abs(r["fd"][1])
    assert abs(r["kid"][0] - r["kid"][1]) <= 1e-6 * abs(r["kid"][1])
    out = capsys.readouterr().out
    assert "default evaluation" in out and "references at N = 300" in out
