"""Parquet rows to torch tensors: images in [-1, 1] (N, C, H, W), points as stored, labels int64."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from distgan.data.schema import DatasetInfo, inspect


def decode(images: list[bytes] | np.ndarray, info: DatasetInfo) -> torch.Tensor:
    """Decode one batch of `image` cells; shared by the local reader and Ray Data batches."""
    if info.encoding == "float32":
        arr = np.stack([np.frombuffer(b, np.float32) for b in images])
        return torch.from_numpy(arr.copy())
    if info.encoding == "uint8":
        arr = np.stack([np.frombuffer(b, np.uint8) for b in images])
    else:
        arr = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in images])
    arr = arr.reshape(len(images), info.height, info.width, info.channels)
    x = torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images back to uint8 pixels, the exact inverse of decode for uint8 data."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def load_all(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """The whole data set in memory: for one-process training and for reference statistics."""
    info = inspect(directory)
    table = pq.read_table(list(info.files), columns=["image", "label"])
    x = decode(table.column("image").to_pylist(), info)
    y = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    return x, y, info


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int, start: int = 0
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches; batch k of the stream is a pure function of (seed, k),
    so a resumed run continues the exact data order from `start`."""
    n = len(x)
    if batch > n:
        raise ValueError(f"batch of {batch} rows is larger than the data set ({n} rows)")
    per_epoch = n // batch
    k, perm_epoch, perm = start, -1, None
    while True:
        epoch, offset = divmod(k, per_epoch)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            perm_epoch = epoch
        idx = perm[offset * batch:(offset + 1) * batch]
        yield x[idx], y[idx]
        k += 1
