"""bench/gpu_bench.py runs with plain torch; here on CPU with tiny sizes (the GPU figures
are recorded in docs/benchmarks.md when a GPU machine runs it)."""

import importlib.util
from pathlib import Path


def test_gpu_bench_runs_on_cpu_with_tiny_sizes(capsys):
    path = Path(__file__).resolve().parent.parent / "bench" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "4", "--fid-n", "16",
                       "--fid-batch", "8", "--amp", "off"])
    assert [r["preset"] for r in rows] == ["cifar10_dcgan", "celeba64"]
    assert all(r["img_per_s"] > 0 and r["fid_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "device cpu" in out and "celeba64" in out
