"""The one Parquet schema distgan reads, for images and for 2-D points alike.

Columns: `image` (binary: one sample's bytes), `label` (int64, -1 when unlabelled),
`height`, `width`, `channels` (int32). The file metadata key `distgan` holds JSON
``{"version": 1, "encoding": "uint8"|"png"|"float32", "num_classes": K, "name": ...,
"heldout": share}``: `uint8` is raw HWC pixels, `png` is a PNG file, `float32` is a point's
coordinates (height 1, width = dimension, channels 1). Readers map pixels to [-1, 1]; points
are as stored.

`heldout` is the share `distgan data prepare` wrote to `heldout/`. A data set without the key
(prepared before there was a split, or written by another tool) is split as it is read: the
rows whose bytes hash to 0 modulo HELD_EVERY are held out, on every road and every sharding.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from distgan import storage
from distgan.errors import InputError

ENCODINGS = ("uint8", "png", "float32")
META_KEY = b"distgan"
CONTENT_KEY = b"distgan.sha256"  # per shard: SHA-256 of its rows, written by distgan data prepare
HELDOUT_DIR = "heldout"  # real rows never streamed to training (D's overfitting is read on them)
HELD_EVERY = 20  # a split made at read time holds out 1 row in 20 (5 %, prepare's default share)
SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("label", pa.int64()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("channels", pa.int32()),
])


class DataError(InputError):
    """Bad or missing data; the message is one line naming the file or directory."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    encoding: str
    num_classes: int
    height: int
    width: int
    channels: int
    num_rows: int
    files: tuple[str, ...]
    """Shard paths inside the data set's filesystem (no scheme: see `location`)."""
    location: str = ""
    """The directory as given: a local path or a URI (s3://, gs://)."""
    fingerprint: str = ""
    """Content hash of the shards, from their footers (no data bytes are read)."""
    heldout: tuple[str, ...] = ()
    """Shards of `heldout/`: real rows no run trains on; empty when the data set has none."""
    held_at_read: bool = False
    """No split was prepared (no `heldout` in the metadata): `held_rows` picks it from the shards."""

    @property
    def is_points(self) -> bool:
        return self.encoding == "float32"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One decoded sample: (dimension,) for points, (C, H, W) for images."""
        return (self.width,) if self.is_points else (self.channels, self.height, self.width)

    def check_model(self, model) -> None:
        """That a model (config.ModelConfig) makes samples like these and knows every class."""
        if model.sample_shape != tuple(self.sample_shape):
            raise InputError(f"model: expects samples of shape {model.sample_shape}, but {self.location} holds "
                             f"{tuple(self.sample_shape)} (set model.resolution/model.channels)")
        if model.conditional and model.num_classes < self.num_classes:
            raise InputError(f"model.num_classes: {model.num_classes} is fewer than the {self.num_classes} classes "
                             f"of {self.location}")

    def filesystem(self) -> pafs.FileSystem:
        return storage.resolve(self.location)[0]


def schema_with_meta(name: str, encoding: str, num_classes: int, heldout: float) -> pa.Schema:
    if encoding not in ENCODINGS:
        raise DataError(f"encoding {encoding!r}: expected one of {ENCODINGS}")
    meta = {"version": 1, "encoding": encoding, "num_classes": num_classes, "name": name, "heldout": heldout}
    return SCHEMA.with_metadata({META_KEY: json.dumps(meta).encode()})


def shard_files(directory: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem and the .parquet shards of a data directory, sorted by name."""
    where = str(directory)
    try:
        fs, path = storage.resolve(where)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.Directory:
            raise DataError(f"{where}: data directory does not exist (run `distgan data prepare ...`)")
        files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path))
                       if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    except OSError as e:
        raise DataError(f"{where}: cannot list the data directory ({storage.first_line(e)})") from None
    if not files:
        raise DataError(f"{where}: no .parquet files in the data directory")
    return fs, files


def inspect(directory: str) -> DatasetInfo:
    """Validate every shard's schema and metadata; return what the reader needs to know."""
    where = str(directory)
    fs, files = shard_files(where)
    metas, rows, shape = set(), 0, None
    content = hashlib.sha256()
    for f in files:
        shown = storage.uri(fs, f)
        try:
            with fs.open_input_file(f) as handle:
                pf = pq.ParquetFile(handle)
                schema = pf.schema_arrow
                footer = pf.metadata
                first = (pf.read_row_group(0, columns=["height", "width", "channels"]).slice(0, 1).to_pylist()
                         if shape is None and footer.num_rows and schema.remove_metadata().equals(SCHEMA) else None)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{shown}: not a readable Parquet file ({storage.first_line(e)})") from None
        if not schema.remove_metadata().equals(SCHEMA):
            raise DataError(f"{shown}: wrong schema, expected columns image, label, height, width, channels "
                            f"(got {', '.join(schema.names)})")
        raw = (schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise DataError(f"{shown}: no 'distgan' schema metadata (write it with distgan data prepare)")
        metas.add(raw)
        rows += footer.num_rows
        if first:
            shape = (first[0]["height"], first[0]["width"], first[0]["channels"])
        # content-based: the shard's own hash when distgan wrote it, else its footer (sizes, row
        # groups, column statistics), never the local bytes (an object store's are remote)
        own = (schema.metadata or {}).get(CONTENT_KEY)
        content.update(posixpath.basename(f).encode())
        content.update(own if own else json.dumps(footer.to_dict(), sort_keys=True, default=str).encode())
    if len(metas) != 1:
        raise DataError(f"{where}: shards disagree on their 'distgan' metadata")
    try:
        meta = json.loads(metas.pop())
        encoding, num_classes = meta.get("encoding"), int(meta["num_classes"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{where}: unreadable 'distgan' metadata (expected JSON with encoding and num_classes)") from None
    if encoding not in ENCODINGS:
        raise DataError(f"{where}: unknown encoding {encoding!r} in metadata")
    if shape is None:
        raise DataError(f"{where}: the data set has no rows")
    return DatasetInfo(name=meta.get("name", ""), encoding=encoding, num_classes=num_classes,
                       height=shape[0], width=shape[1], channels=shape[2], num_rows=rows, files=tuple(files),
                       location=storage.normalize(where), fingerprint=content.hexdigest(),
                       heldout=_heldout(fs, files[0], raw), held_at_read="heldout" not in meta)


def held_rows(images: list[bytes] | pa.Array) -> np.ndarray:
    """The rows a split made at read time holds out: a function of each row's bytes alone."""
    cells = images.to_pylist() if isinstance(images, (pa.Array, pa.ChunkedArray)) else images
    return np.fromiter((zlib.crc32(b) % HELD_EVERY == 0 for b in cells), bool, len(cells))


def heldout_rows(info: DatasetInfo) -> int:
    """Rows in the held-out split (from the footers)."""
    fs = info.filesystem()
    total = 0
    for f in info.heldout:
        with fs.open_input_file(f) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _heldout(fs: pafs.FileSystem, first: str, meta: bytes) -> tuple[str, ...]:
    """The held-out shards beside the training ones; each must carry the same metadata."""
    root = posixpath.join(posixpath.dirname(first), HELDOUT_DIR)
    try:
        found = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
                       if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
        for f in found:
            with fs.open_input_file(f) as handle:
                schema = pq.ParquetFile(handle).schema_arrow
            if not schema.remove_metadata().equals(SCHEMA) or (schema.metadata or {}).get(META_KEY) != meta:
                raise DataError(f"{storage.uri(fs, f)}: a held-out shard unlike the data set's (schema or metadata)")
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{storage.uri(fs, root)}: cannot read the held-out split ({storage.first_line(e)})") from None
    return tuple(found)
