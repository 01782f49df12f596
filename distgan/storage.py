"""Where a job's files live: a local path or an object-store URI (s3://, gs://, ...).

A URI is never a `Path` (`Path("s3://b/x")` is `s3:/b/x`): every location is resolved once
with `pyarrow.fs.FileSystem.from_uri`, joined with posixpath and written through that
filesystem. pyarrow (like boto3) reads the standard AWS_ENDPOINT_URL, which points it at
MinIO or any S3-compatible store; credentials come from the environment or the node's role
and never travel with a location.
"""

from __future__ import annotations

import errno
import os
import posixpath
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

SCHEMES = {"S3FileSystem": "s3", "GcsFileSystem": "gs", "HadoopFileSystem": "hdfs"}


class StorageError(OSError):
    """A location that cannot be reached or read; one line naming it."""


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def normalize(location: str | os.PathLike) -> str:
    """A URI as given (without a trailing slash); a local path made absolute."""
    text = str(location)
    if is_uri(text):
        scheme, _, rest = text.partition("://")
        if not rest.strip("/"):
            raise StorageError(f"{text}: no bucket or path after {scheme}://")
        return f"{scheme}://{rest.rstrip('/')}"
    return str(Path(text).expanduser().resolve())


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a location; local paths use the local filesystem."""
    text = normalize(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), text
    try:
        return pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as e:  # pyarrow: ArrowInvalid (a ValueError) or an OSError
        raise StorageError(f"{location}: {first_line(e)}") from None


def join(location: str | os.PathLike, *parts: str) -> str:
    text = str(location)
    if is_uri(text):
        return posixpath.join(text.rstrip("/"), *parts)
    return os.path.join(text, *parts)


def name(location: str | os.PathLike) -> str:
    return posixpath.basename(str(location).rstrip("/"))


def uri(fs: pafs.FileSystem, path: str) -> str:
    """The location of `path` inside `fs` with its scheme restored (Ray and Tune hand out
    paths without it: `bucket/key` for s3://bucket/key)."""
    scheme = SCHEMES.get(type(fs).__name__)
    if scheme is None or is_uri(path):
        return path
    return f"{scheme}://{path.lstrip('/')}"


def exists(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return _info(fs, path, location).type != pafs.FileType.NotFound


def is_dir(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return _info(fs, path, location).type == pafs.FileType.Directory


def list_dir(location: str | os.PathLike) -> list[str]:
    """Names directly inside a directory ([] when it does not exist)."""
    fs, path = resolve(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as e:
        raise StorageError(f"{location}: {first_line(e)}") from None
    return sorted(posixpath.basename(i.path) for i in infos)


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            raise FileNotFoundError(errno.ENOENT, "no such file", location) from None
        raise StorageError(f"{location}: {first_line(e)}") from None


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode()


def write_bytes(location: str | os.PathLike, data: bytes) -> str:
    """Whole or not at all: locally a temp file in the same directory, fsync, os.replace;
    an object store's PUT is atomic by itself. Returns the normalized location."""
    text = normalize(location)
    if not is_uri(text):
        atomic_write_local(Path(text), data)
        return text
    fs, path = resolve(text)
    try:
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as e:
        raise StorageError(f"{location}: {first_line(e)}") from None
    return text


def write_text(location: str | os.PathLike, text: str) -> str:
    return write_bytes(location, text.encode())


def atomic_write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a crash right after os.replace keeps it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def upload(local: str | os.PathLike, location: str | os.PathLike) -> str:
    """Copy a local file or directory to a location (local or remote)."""
    src = Path(local)
    if src.is_file():
        return write_bytes(location, src.read_bytes())
    fs, path = resolve(location)
    try:
        pafs.copy_files(str(src.resolve()), path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
    except OSError as e:
        raise StorageError(f"{location}: {first_line(e)}") from None
    return normalize(location)


def download(location: str | os.PathLike, local: str | os.PathLike) -> Path:
    """Copy a directory (or file) at a location into a local path."""
    fs, path = resolve(location)
    dest = Path(local)
    info = _info(fs, path, location)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", location)
    if info.type == pafs.FileType.File:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_bytes(location))
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        pafs.copy_files(path, str(dest.resolve()), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as e:
        raise StorageError(f"{location}: {first_line(e)}") from None
    return dest


def make_dirs(location: str | os.PathLike) -> None:
    """A directory locally; nothing to do in an object store (prefixes need no creation)."""
    if not is_uri(location):
        Path(normalize(location)).mkdir(parents=True, exist_ok=True)


def check_writable(location: str | os.PathLike, flag: str) -> str:
    """Fail before a job starts when its storage cannot take a file (one line naming it)."""
    text = normalize(location)
    probe = join(text, f".distgan-write-test-{os.getpid()}")
    try:
        make_dirs(text)
        write_bytes(probe, b"ok")
        fs, path = resolve(probe)
        fs.delete_file(path)
    except OSError as e:
        raise StorageError(f"{flag} {location}: cannot write there ({first_line(e)})") from None
    return text


def _info(fs: pafs.FileSystem, path: str, location) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except OSError as e:
        raise StorageError(f"{location}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
