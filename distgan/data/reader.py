"""Parquet rows to torch tensors. Images decode to uint8 (N, C, H, W), a quarter of float32 on
the wire and in memory, and become [-1, 1] floats with `normalize` where they are used (on the
GPU for training); points are float32 as stored; labels int64."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from distgan.data.schema import DataError, DatasetInfo, held_rows, inspect


def decode_raw(images: list[bytes] | np.ndarray, info: DatasetInfo) -> np.ndarray:
    """One batch of `image` cells: uint8 NCHW pixels, or float32 (N, D) points."""
    if len(images) == 0:  # a split at read time can leave none
        return np.zeros((0, *info.sample_shape), np.float32 if info.is_points else np.uint8)
    try:
        if info.encoding == "float32":
            return np.stack([np.frombuffer(b, np.float32) for b in images]).copy()
        if info.encoding == "uint8":
            arr = np.stack([np.frombuffer(b, np.uint8) for b in images])
        else:
            arr = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in images])
        arr = arr.reshape(len(images), info.height, info.width, info.channels)
    except (ValueError, OSError) as e:  # a cell of the wrong size, or not an image
        raise DataError(f"{info.location}: a row does not decode as {info.height}x{info.width}x{info.channels} "
                        f"{info.encoding} ({e})") from None
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to [-1, 1] floats; floats pass through."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x


def decode(images: list[bytes] | np.ndarray, info: DatasetInfo) -> torch.Tensor:
    """One batch as model input: images in [-1, 1], points as stored."""
    return normalize(torch.from_numpy(decode_raw(images, info)))


def load_all(directory: str, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """The whole training set in memory (one-process training, reference statistics); `raw`
    keeps images as uint8."""
    info = inspect(directory)
    x, y = load_rows(info, info.files, raw=raw)
    return x, y, info


def load_rows(info: DatasetInfo, files: tuple[str, ...], limit: int | None = None, raw: bool = False,
              held: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` rows (None: all) of some of the data set's shards, in their order.
    A data set split at read time gives its training rows, or with `held` its held-out ones;
    shards are read one at a time until `limit` rows are in."""
    tables, have = [], 0
    for f in files:
        if limit is not None and have >= limit:
            break
        try:
            table = pq.read_table(f, columns=["image", "label"], filesystem=info.filesystem())
        except OSError as e:
            raise DataError(f"{info.location}: cannot read the shards ({e})") from None
        if info.held_at_read:
            table = table.filter(pa.array(held_rows(table.column("image")) == held))
        tables.append(table)
        have += table.num_rows
    table = pa.concat_tables(tables).slice(0, limit)
    x = torch.from_numpy(decode_raw(table.column("image").to_pylist(), info))
    y = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    return (x if raw else normalize(x)), y


def check_batch(batch: int, world_size: int, n: int) -> int:
    """The global batch's rows, if n training rows hold one."""
    rows = batch * world_size
    if rows > n:
        raise DataError(f"train.batch_size x train.n_d = {batch} rows x {world_size} workers: more than the data "
                        f"set's {n}")
    return rows


def epoch_batches(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, batch: int, seed: int, start: int = 0,
                  rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches of `batch` rows for each of `world_size` ranks: global batch
    k (batch x world_size rows) is a pure function of (seed, k) and rank r takes its r-th
    slice. The position is the step: a run resumed at `start` draws exactly what it would
    have, on every rank, and N ranks draw together what one process draws with N x batch.
    `x` and `y` may be numpy arrays (read-only ones from Ray's object store included)."""
    n, rows = len(x), check_batch(batch, world_size, len(x))
    per_epoch = n // rows
    k, perm_epoch, perm = start, -1, None
    while True:
        epoch, offset = divmod(k, per_epoch)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            perm_epoch = epoch
        idx = perm[offset * rows + rank * batch:offset * rows + (rank + 1) * batch]
        if isinstance(x, np.ndarray):
            yield torch.from_numpy(x[idx.numpy()]), torch.from_numpy(y[idx.numpy()])
        else:
            yield x[idx], y[idx]
        k += 1
