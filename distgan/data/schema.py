"""The one Parquet schema distgan reads, for images and for 2-D points alike.

Columns: `image` (binary: one sample's bytes), `label` (int64, -1 when unlabelled),
`height`, `width`, `channels` (int32). The file metadata key `distgan` holds JSON
``{"version": 1, "encoding": "uint8"|"png"|"float32", "num_classes": K, "name": ...}``:
`uint8` is raw HWC pixels, `png` is a PNG file, `float32` is a point's coordinates
(height 1, width = dimension, channels 1). Readers map pixels to [-1, 1]; points are as stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ENCODINGS = ("uint8", "png", "float32")
META_KEY = b"distgan"
SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("label", pa.int64()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("channels", pa.int32()),
])


class DataError(ValueError):
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

    @property
    def is_points(self) -> bool:
        return self.encoding == "float32"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One decoded sample: (dimension,) for points, (C, H, W) for images."""
        return (self.width,) if self.is_points else (self.channels, self.height, self.width)


def schema_with_meta(name: str, encoding: str, num_classes: int) -> pa.Schema:
    if encoding not in ENCODINGS:
        raise DataError(f"encoding {encoding!r}: expected one of {ENCODINGS}")
    meta = {"version": 1, "encoding": encoding, "num_classes": num_classes, "name": name}
    return SCHEMA.with_metadata({META_KEY: json.dumps(meta).encode()})


def shard_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: data directory does not exist (run `distgan data prepare ...`)")
    files = sorted(d.glob("*.parquet"))
    if not files:
        raise DataError(f"{d}: no .parquet files in the data directory")
    return files


def inspect(directory: str | Path) -> DatasetInfo:
    """Validate every shard's schema and metadata; return what the reader needs to know."""
    files = shard_files(directory)
    metas, rows, shape = set(), 0, None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{f}: not a readable Parquet file ({e})") from None
        schema = pf.schema_arrow
        if not schema.remove_metadata().equals(SCHEMA):
            raise DataError(f"{f}: wrong schema, expected columns image, label, height, width, channels "
                            f"(got {', '.join(schema.names)})")
        raw = (schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise DataError(f"{f}: no 'distgan' schema metadata (write it with distgan data prepare)")
        metas.add(raw)
        rows += pf.metadata.num_rows
        if shape is None and pf.metadata.num_rows:
            first = pf.read_row_group(0, columns=["height", "width", "channels"]).slice(0, 1).to_pylist()[0]
            shape = (first["height"], first["width"], first["channels"])
    if len(metas) != 1:
        raise DataError(f"{directory}: shards disagree on their 'distgan' metadata")
    meta = json.loads(metas.pop())
    if meta.get("encoding") not in ENCODINGS:
        raise DataError(f"{directory}: unknown encoding {meta.get('encoding')!r} in metadata")
    if shape is None:
        raise DataError(f"{directory}: the data set has no rows")
    return DatasetInfo(name=meta.get("name", ""), encoding=meta["encoding"], num_classes=int(meta["num_classes"]),
                       height=shape[0], width=shape[1], channels=shape[2], num_rows=rows,
                       files=tuple(str(f) for f in files))
