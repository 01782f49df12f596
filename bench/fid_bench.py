"""FID benchmark: our Fréchet distance vs the pytorch-fid formula (scipy sqrtm), side by
side in one run, and feature throughput of the detectors on this machine.

    .venv/bin/python bench/fid_bench.py [--dim 2048] [--repeats 3] [--inception-images 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from distgan.data.prepare import mnist_embedded_arrays
from distgan.metrics.detectors import Inception, LeNetMnist
from distgan.metrics.frechet import feature_stats, frechet_distance


def gaussian_stats(dim: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of n samples with a power-law spectrum, as deep features have."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    scales = 1.0 / np.sqrt(1 + np.arange(dim))
    x = (rng.standard_normal((n, dim)) * scales) @ basis.T + rng.standard_normal(dim) * 0.1
    return tuple(t.numpy() for t in feature_stats(x))


def best_time(fn, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--inception-images", type=int, default=32)
    a = p.parse_args()
    from pytorch_fid.fid_score import calculate_frechet_distance

    s1, s2 = gaussian_stats(a.dim, 3 * a.dim, 0), gaussian_stats(a.dim, 3 * a.dim, 1)
    t_ours, ours = best_time(lambda: frechet_distance(*s1, *s2), a.repeats)
    t_ref, ref = best_time(lambda: calculate_frechet_distance(*s1, *s2), a.repeats)
    print(f"frechet {a.dim}-d: ours {t_ours:.3f} s, pytorch-fid {t_ref:.3f} s, speed-up {t_ref / t_ours:.1f}x, "
          f"relative difference {abs(ours - ref) / ref:.2e} (FID {ours:.4f})")

    x, _ = mnist_embedded_arrays()
    imgs = torch.from_numpy(x[:2000]).float()[:, None] / 127.5 - 1
    lenet = LeNetMnist()
    lenet(imgs[:100])
    t, _ = best_time(lambda: lenet(imgs), a.repeats)
    print(f"lenet-mnist features: {len(imgs) / t:.0f} img/s (batch {len(imgs)}, {torch.get_num_threads()} threads)")
    inc = Inception()
    batch = imgs[:a.inception_images]
    inc(batch[:2])
    t, _ = best_time(lambda: inc(batch), 1)
    print(f"inception features: {len(batch) / t:.1f} img/s (batch {len(batch)}, 28x28 -> 299x299)")


if __name__ == "__main__":
    main()
