"""The FID floor of the embedded MNIST: FID between two disjoint halves of the real digits
with the LeNet detector, the number a perfect generator would score at that sample size.

    .venv/bin/python bench/fid_floor.py
"""

from __future__ import annotations

import tempfile

import torch

from distgan.data import prepare
from distgan.data.reader import load_all
from distgan.metrics import detectors
from distgan.metrics.frechet import feature_stats, frechet_distance


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepare.mnist_embedded(f"{tmp}/mnist")
        x, _, _ = load_all(f"{tmp}/mnist")
    det = detectors.build("lenet-mnist", tuple(x.shape[1:]))
    with torch.no_grad():
        feats = torch.cat([det(x[i:i + 1000])[0] for i in range(0, len(x), 1000)]).numpy()
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0)).numpy()
    print(f"embedded MNIST, {len(feats)} digits, detector {det.id}")
    for n in (2000, len(feats) // 2):
        a, b = feats[order[:n]], feats[order[n:2 * n]]
        print(f"FID of two disjoint sets of {n} real digits: {frechet_distance(*feature_stats(a), *feature_stats(b)):.2f}")


if __name__ == "__main__":
    main()
