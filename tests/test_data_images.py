"""The image data modules on tiny files written in each data set's real format, and on damaged copies.

CIFAR10: Python-2-style pickles in ``cifar-10-batches-py/``; MNIST and EMNIST: uncompressed IDX
files under ``MNIST/raw/`` and ``EMNIST/raw/`` as torchvision lays them out (both written by
``helpers/image_files.py``); NORB: binary matrix files (plain and gzipped) with the real 108x108 /
96x96 image sizes and file names, written by ``helpers/norb_files.py``. Each example carries an id
(pixel values) so the tests can check that validation and test never share an example with training.
Every damaged file must be named, with what is wrong with it and the fix (delete it, then download
or copy it again).
"""

from __future__ import annotations

import gzip
import inspect
import math
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.bad_data import gzip_with_zeros, peak_memory_of
from helpers.image_files import (
    CIFAR_PER_BATCH,
    CIFAR_TEST,
    EMNIST_TEST,
    EMNIST_TRAIN,
    MNIST_TEST,
    MNIST_TRAIN,
    truncate,
    write_cifar,
    write_emnist,
    write_idx,
    write_mnist,
)
from helpers.norb_files import PAIRS_PER_FILE, write_binary_matrix, write_norb
from helpers.threads import one_torch_thread

from lightning_rect.data import CIFAR10DataModule, MNISTDataModule, NISTPDataModule, NORBDataModule
from lightning_rect.data.formats import BinaryMatrix, read_binary_matrix
from lightning_rect.data.nistp import CyclingSampler, eval_sources
from lightning_rect.data.norb import VARIANTS, subsample
from lightning_rect.errors import ConfigError, DataFileError
from lightning_rect.reproduce.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[1]


def all_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# -- CIFAR10 ------------------------------------------------------------------------------------
def test_cifar10_shapes_ranges_and_split(tmp_path):
    write_cifar(tmp_path)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=8, eval_batch_size=7)
    assert (dm.input_size, dm.num_classes) == (3072, 10)
    dm.setup()
    sizes = {name: len(y) for name, (_, y) in dm.splits.items()}
    assert sizes == {"train": 5 * CIFAR_PER_BATCH, "val": 8, "test": CIFAR_TEST - 8}
    assert all(x.dtype == torch.uint8 and x.shape[1:] == (3072,) for x, _ in dm.splits.values())
    ids = {name: set(x[:, 0].tolist()) for name, (x, _) in dm.splits.items()}
    assert ids["train"] == set(range(30))
    assert ids["val"] | ids["test"] == set(range(30, 50)) and not ids["val"] & ids["test"]
    x, y = all_batches(dm.val_dataloader())
    assert x.dtype == torch.float32 and x.shape == (8, 3072)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    assert set(y.tolist()) <= set(range(10)) and y.dtype == torch.int64
    xb, _ = next(iter(dm.train_dataloader()))
    assert xb.shape == (10, 3072)
    # the split of the test images is fixed, whatever the run's seed
    other = CIFAR10DataModule(data_dir=str(tmp_path), val_size=8, seed=5)
    other.setup()
    assert torch.equal(other.splits["val"][0], dm.splits["val"][0])


FIX = "delete it, then download or copy it again"


def assert_names_damage(err: pytest.ExceptionInfo, path: Path, problem: str) -> None:
    """One line naming the file, what is wrong with it, and the fix."""
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message and problem in message and FIX in message, message


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(DataFileError, match=r"data_batch_1.*download: true.*cs.toronto.edu") as err:
        CIFAR10DataModule(data_dir=str(tmp_path)).setup()
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: data[:500], "is truncated"),
        (lambda data: b"", "is empty"),
        (lambda data: b"hello, this is not a pickle\n", "is not a pickle"),
        (lambda data: b"<!DOCTYPE html><html>403 Forbidden</html>", "looks like an HTML page"),
        (lambda data: gzip.compress(data), "is a gzip file, not a pickle"),
        (lambda data: bytes(len(data)), "starts with zero bytes"),
        (lambda data: pickle.dumps([1, 2, 3], protocol=2), "not a dict"),
    ],
)
def test_cifar10_damaged_pickle_is_named_with_the_fix(tmp_path, damage, problem):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(damage(batch.read_bytes()))
    with pytest.raises(DataFileError) as err:
        CIFAR10DataModule(data_dir=str(tmp_path)).setup()
    assert_names_damage(err, batch, problem)
    assert "cs.toronto.edu" in str(err.value)


def test_cifar10_pickles_of_any_protocol_but_no_code(tmp_path):
    from lightning_rect.data.cifar10 import read_batch

    data = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    (tmp_path / "new").write_bytes(pickle.dumps({"data": data, "labels": [3, 4]}, protocol=pickle.HIGHEST_PROTOCOL))
    x, y = read_batch(tmp_path / "new")
    assert torch.equal(x, torch.from_numpy(data)) and y.tolist() == [3, 4]

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataFileError, match="unexpected object builtins.print"):
        read_batch(tmp_path / "evil")


# -- NORB binary matrix format ------------------------------------------------------------------
def test_binary_matrix_round_trip_plain_and_gzip(tmp_path):
    for name in ("a.mat", "a.mat.gz"):
        images = np.random.default_rng(0).integers(0, 256, (5, 2, 4, 3), dtype=np.uint8)
        write_binary_matrix(tmp_path / name, images)
        assert np.array_equal(read_binary_matrix(tmp_path / name), images)
    labels = np.arange(7, dtype=np.int32)
    write_binary_matrix(tmp_path / "cat.mat", labels)
    assert (tmp_path / "cat.mat").stat().st_size == 8 + 12 + 28  # a vector still stores 3 dimensions
    assert read_binary_matrix(tmp_path / "cat.mat").tolist() == labels.tolist()
    with BinaryMatrix(tmp_path / "a.mat") as matrix:  # streamed in chunks
        assert matrix.shape == (5, 2, 4, 3)
        assert [len(matrix.read_rows(2)) for _ in range(3)] == [2, 2, 1]


def test_binary_matrix_reports_truncation_and_wrong_magic(tmp_path):
    write_binary_matrix(tmp_path / "x.mat", np.zeros((4, 10), dtype=np.uint8))
    data = (tmp_path / "x.mat").read_bytes()
    (tmp_path / "short.mat").write_bytes(data[:-3])
    with pytest.raises(DataFileError, match=r"short\.mat is truncated"):
        read_binary_matrix(tmp_path / "short.mat")
    (tmp_path / "header.mat").write_bytes(data[:6])
    with pytest.raises(DataFileError, match=r"header\.mat is truncated"):
        read_binary_matrix(tmp_path / "header.mat")
    with gzip.open(tmp_path / "short.mat.gz", "wb") as f:
        f.write(data[:-3])
    with pytest.raises(DataFileError, match=r"short\.mat\.gz is truncated"):
        read_binary_matrix(tmp_path / "short.mat.gz")
    cut = gzip.compress(data)
    (tmp_path / "cut.mat.gz").write_bytes(cut[: len(cut) // 2])
    with pytest.raises(DataFileError, match=r"cut\.mat\.gz is truncated"):
        read_binary_matrix(tmp_path / "cut.mat.gz")
    (tmp_path / "idx.mat").write_bytes(struct.pack(">iiii", 0x803, 1, 2, 2) + bytes(4))  # an MNIST IDX file
    with pytest.raises(DataFileError, match=r"idx\.mat has the wrong magic number 0x03080000"):
        read_binary_matrix(tmp_path / "idx.mat")
    (tmp_path / "plain.mat.gz").write_bytes(data)
    with pytest.raises(DataFileError, match="not a gzip file"):
        read_binary_matrix(tmp_path / "plain.mat.gz")


# -- NORB data module ---------------------------------------------------------------------------
NORB_PER_TRAIN_FILE = PAIRS_PER_FILE["jittered_cluttered"]["train"]


def norb_ids(x: torch.Tensor) -> set[int]:
    return set(x[:, 0, 0, 0].tolist())


def prepared(dm: NORBDataModule) -> NORBDataModule:
    """What the Trainer does before training: build the cache (``prepare_data``), then load it (``setup``)."""
    dm.prepare_data()
    dm.setup()
    return dm


def test_norb_jittered_cluttered_split_ranges_and_cache(tmp_path):
    spec = VARIANTS["jittered_cluttered"]
    write_norb(tmp_path, gz=(spec["train"][2], spec["test"][1]))
    dm = NORBDataModule(data_dir=str(tmp_path), val_size=12, eval_batch_size=8)
    assert (dm.input_size, dm.num_classes) == (2048, 6)
    prepared(dm)
    n_train = 10 * NORB_PER_TRAIN_FILE
    assert {k: len(y) for k, (_, y) in dm.splits.items()} == {"train": n_train - 12, "val": 12, "test": 10}
    x, _ = dm.splits["train"]
    assert x.dtype == torch.uint8 and x.shape[1:] == (2, 32, 32)
    assert bool((x == x[:, :1, :1, :1]).all())  # constant pairs stay constant: area averaging
    ids = {k: norb_ids(x) for k, (x, _) in dm.splits.items()}
    assert ids["train"] | ids["val"] == set(range(n_train)) and not ids["train"] & ids["val"]
    assert ids["test"] == set(range(n_train, n_train + 10))
    for split in ("train", "val", "test"):  # labels travel with their images
        x, y = dm.splits[split]
        assert torch.equal(x[:, 0, 0, 0].long() % 6, y)
    xb, yb = all_batches(dm.test_dataloader())
    assert xb.shape == (10, 2048) and xb.dtype == torch.float32
    assert torch.allclose(xb[:, 0], torch.arange(n_train, n_train + 10) * 2 / 255 - 1)
    assert -1 <= xb.min() and xb.max() <= 1 and set(yb.tolist()) <= set(range(6))

    cache = tmp_path / "norb" / "norb_cache_32x32.pt"
    assert cache.exists()
    for f in (tmp_path / "norb").glob("*.mat*"):
        f.unlink()  # the second load must not need the raw files
    again = prepared(NORBDataModule(data_dir=str(tmp_path), val_size=12))
    assert torch.equal(again.splits["val"][0], dm.splits["val"][0])


def test_norb_variants_and_sizes_sharing_a_cache_dir_each_get_their_own_data(tmp_path):
    """Regression: with one ``cache_dir``, small NORB was served the jittered-cluttered cache."""
    write_norb(tmp_path, "jittered_cluttered")  # pairs 0..69, labels id % 6
    write_norb(tmp_path, "small", first_id=100)  # pairs 100..129, labels id % 5
    shared = tmp_path / "cache"
    common = dict(data_dir=str(tmp_path), cache_dir=str(shared))
    jittered = NORBDataModule(variant="jittered_cluttered", val_size=12, **common)
    small = NORBDataModule(variant="small", val_size=4, **common)
    small16 = NORBDataModule(variant="small", val_size=4, image_size=16, **common)
    for dm in (jittered, small, small16):  # every cache is built before any is read
        dm.prepare_data()
    assert sorted(p.name for p in shared.iterdir()) == [
        "norb_cache_32x32.pt",
        "smallnorb_cache_16x16.pt",
        "smallnorb_cache_32x32.pt",
    ]
    for dm in (jittered, small, small16):
        dm.setup()

    def pairs(dm: NORBDataModule) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.cat([x for x, _ in dm.splits.values()]), torch.cat([y for _, y in dm.splits.values()]))

    (jx, jy), (sx, sy), (s16x, s16y) = pairs(jittered), pairs(small), pairs(small16)
    assert {k: len(y) for k, (_, y) in jittered.splits.items()} == {"train": 48, "val": 12, "test": 10}
    assert {k: len(y) for k, (_, y) in small.splits.items()} == {"train": 16, "val": 4, "test": 10}
    assert norb_ids(jx) == set(range(70)) and norb_ids(sx) == norb_ids(s16x) == set(range(100, 130))
    assert torch.equal(jy, jx[:, 0, 0, 0].long() % 6) and set(jy.tolist()) == set(range(6))
    assert torch.equal(sy, sx[:, 0, 0, 0].long() % 5) and set(sy.tolist()) == set(range(5))
    assert jx.shape[1:] == sx.shape[1:] == (2, 32, 32) and s16x.shape[1:] == (2, 16, 16)
    assert torch.equal(s16x, sx[:, :, :16, :16]) and torch.equal(s16y, sy)  # same pairs, smaller images
    assert (jittered.input_size, small.input_size, small16.input_size) == (2048, 2048, 512)

    # a cache of the wrong variant under this variant's name is refused, not served
    (shared / "smallnorb_cache_32x32.pt").write_bytes((shared / "norb_cache_32x32.pt").read_bytes())
    with pytest.raises(DataFileError, match=r"smallnorb_cache_32x32\.pt is from another version, variant"):
        NORBDataModule(variant="small", val_size=4, **common).setup()


def test_norb_full_range_maps_to_minus_one_one():
    pairs = torch.zeros(1, 2, 108, 108, dtype=torch.uint8)
    pairs[..., 54:] = 255
    small = subsample(pairs, 32)
    assert small.shape == (1, 2, 32, 32) and small[..., :15].max() == 0 and small[..., 17:].min() == 255
    x = NORBDataModule().transform(small)
    assert x.min() == -1 and x.max() == 1 and x.shape == (1, 2048)


def test_small_norb(tmp_path):
    write_norb(tmp_path, variant="small")
    dm = NORBDataModule(data_dir=str(tmp_path), variant="small", val_size=4)
    assert (dm.input_size, dm.num_classes) == (2048, 5)
    prepared(dm)
    assert {k: len(y) for k, (_, y) in dm.splits.items()} == {"train": 16, "val": 4, "test": 10}
    assert set(torch.cat([y for _, y in dm.splits.values()]).tolist()) == set(range(5))
    assert (tmp_path / "smallnorb" / "smallnorb_cache_32x32.pt").exists()


def test_norb_missing_and_damaged_files(tmp_path):
    with pytest.raises(
        DataFileError,
        match=r"norb-5x46789x9x18x6x2x108x108-training-01-dat\.mat.*"
        r"cs\.nyu\.edu/~ylclab/data/norb-v1\.0/",
    ) as err:
        NORBDataModule(data_dir=str(tmp_path)).prepare_data()
    assert str((tmp_path / "norb").resolve()) in str(err.value)
    with pytest.raises(DataFileError, match=r"norb-v1\.0-small"):
        NORBDataModule(data_dir=str(tmp_path), variant="small").prepare_data()
    # setup() only reads the cache prepare_data() builds, and says so when it is missing
    with pytest.raises(DataFileError) as err:
        NORBDataModule(data_dir=str(tmp_path)).setup()
    message = str(err.value)
    assert "\n" not in message and str((tmp_path / "norb" / "norb_cache_32x32.pt").resolve()) in message
    assert "call prepare_data() before setup()" in message
    write_norb(tmp_path)
    dat = tmp_path / "norb" / f"{VARIANTS['jittered_cluttered']['train'][4]}-dat.mat"
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(DataFileError) as err:
        NORBDataModule(data_dir=str(tmp_path), val_size=2).prepare_data()
    assert_names_damage(err, dat, "is truncated")
    assert "cs.nyu.edu/~ylclab/data/norb-v1.0/" in str(err.value)
    assert not (tmp_path / "norb" / "norb_cache_32x32.pt").exists()  # no half-written cache


# -- NISTP (EMNIST sources) ---------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """Distorting a few dozen characters on 2 threads of a busy machine mostly waits for thread hand-offs."""
    with one_torch_thread():
        yield


@pytest.fixture
def emnist_dir(tmp_path) -> str:
    write_emnist(tmp_path)
    return str(tmp_path)


def nistp(data_dir: str, **kwargs) -> NISTPDataModule:
    args = {"train_size": 95, "val_size": 30, "test_size": 20, "chunk_size": 40, "batch_size": 10, **kwargs}
    dm = NISTPDataModule(data_dir=data_dir, **args)
    dm.setup()
    return dm


def test_nistp_eval_sets_are_fixed_upright_and_in_range(emnist_dir, one_thread):
    clean = nistp(emnist_dir, distortion_strength=0)
    assert (clean.input_size, clean.num_classes) == (1024, 62)
    x, y = clean.splits["val"]
    assert x.shape == (30, 32, 32) and x.dtype == torch.uint8 and len(clean.splits["test"][1]) == 20
    column = (y % 20 + 4 + 2).tolist()  # the stored row, transposed, plus 2 pixels of padding
    assert all(x[i, 8:24, c].min() == 255 and x[i].sum() == 16 * 255 for i, c in enumerate(column))

    dm = nistp(emnist_dir)
    assert torch.equal(dm.splits["val"][1], y)  # same source characters, now distorted
    assert not torch.equal(dm.splits["val"][0], x)
    assert torch.equal(nistp(emnist_dir, seed=7).splits["val"][0], dm.splits["val"][0])  # independent of the run seed
    xb, yb = all_batches(dm.val_dataloader())
    assert xb.shape == (30, 1024) and 0 <= xb.min() and xb.max() <= 1
    assert set(yb.tolist()) <= set(range(62))
    val, test = eval_sources(EMNIST_TEST, 30, 20)
    assert not set(val.tolist()) & set(test.tolist())  # disjoint sources while they fit
    # training draws from the EMNIST training images only; the eval sets from the test images
    assert len(dm.splits["train"][1]) == EMNIST_TRAIN


def test_nistp_training_stream(emnist_dir, one_thread):
    dm = nistp(emnist_dir)
    stream = dm.train_dataloader()
    assert len(stream) == 10  # ceil(95 / 10)
    stream.sampler.set_epoch(0)
    x0, y0 = all_batches(stream)
    assert x0.shape == (95, 1024) and x0.dtype == torch.float32 and 0 <= x0.min() and x0.max() <= 1
    assert torch.allclose(x0 * 255, (x0 * 255).round(), atol=1e-4)  # same 1/255 steps as the eval sets
    assert set(y0.tolist()) <= set(range(62))
    first_pass = stream.sampler.sources(0, EMNIST_TRAIN)
    assert sorted(first_pass.tolist()) == list(range(EMNIST_TRAIN))  # cycling: each character once per pass
    x0_again, y0_again = all_batches(stream)
    assert torch.equal(x0, x0_again) and torch.equal(y0, y0_again)  # same (seed, epoch): same batches
    stream.sampler.set_epoch(1)
    x1, _ = all_batches(stream)
    assert not torch.equal(x0, x1)  # a new epoch: new draws and new distortions

    clean = nistp(emnist_dir, distortion_strength=0).train_dataloader()
    xc, yc = all_batches(clean)
    assert torch.equal(yc, y0)  # the same characters...
    assert (xc - x0).abs().amax(dim=1).min() > 0.05  # ...and every one of them changed by the distortions


def test_nistp_shards_by_rank_and_keeps_labeled_fraction(emnist_dir, one_thread):
    r0 = CyclingSampler(100, 95, seed=0, rank=0, world_size=2)
    r1 = CyclingSampler(100, 95, seed=0, rank=1, world_size=2)
    a, b = r0.sources(0, len(r0)), r1.sources(0, len(r1))
    assert len(a) == len(b) == 48 and not set(a.tolist()) & set(b.tolist())
    # together the ranks take the global stream's first 96 positions (95 padded to a multiple of 2)
    assert set(a.tolist()) | set(b.tolist()) == set(CyclingSampler(100, 96).sources(0, 96).tolist())
    half = nistp(emnist_dir, labeled_fraction=0.5)
    assert len(half.splits["train"][1]) < EMNIST_TRAIN
    assert len(half.splits["val"][1]) == 30  # evaluation sets stay complete


def test_nistp_missing_and_corrupt_files(tmp_path, emnist_dir):
    with pytest.raises(DataFileError, match=r"emnist-byclass-train-images-idx3-ubyte.*download: true"):
        nistp(str(tmp_path / "nowhere"))
    images = Path(emnist_dir) / "EMNIST" / "raw" / "emnist-byclass-test-images-idx3-ubyte"
    truncate(images, 1000)
    with pytest.raises(DataFileError) as err:
        nistp(emnist_dir)
    assert_names_damage(err, images, "is truncated")
    labels = images.with_name("emnist-byclass-test-labels-idx1-ubyte")
    images.write_bytes(labels.read_bytes())  # the labels file under the images' name
    with pytest.raises(DataFileError) as err:
        nistp(emnist_dir)
    assert_names_damage(err, images, "has the wrong magic number 0x00000801 (expected 0x00000803")


# -- MNIST --------------------------------------------------------------------------------------
def test_mnist_reads_idx_files_plain_or_gzipped(tmp_path):
    write_mnist(tmp_path)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=6)
    dm.setup()
    assert {name: len(y) for name, (_, y) in dm.splits.items()} == {
        "train": MNIST_TRAIN - 6,
        "val": 6,
        "test": MNIST_TEST,
    }
    x, y = dm.splits["train"]
    assert x.dtype == torch.uint8 and x.shape == (MNIST_TRAIN - 6, 28, 28) and y.dtype == torch.int64
    assert x[:, 0, 0].tolist() == list(range(MNIST_TRAIN - 6)) and y.tolist() == [
        k % 10 for k in range(MNIST_TRAIN - 6)
    ]
    assert dm.splits["val"][0][:, 0, 0].tolist() == list(range(MNIST_TRAIN - 6, MNIST_TRAIN))  # the file's last images
    raw = tmp_path / "MNIST" / "raw"
    for path in raw.iterdir():  # only the .gz files, as downloaded
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    gzipped = MNISTDataModule(data_dir=str(tmp_path), val_size=6)
    gzipped.setup()
    assert torch.equal(gzipped.splits["test"][0], dm.splits["test"][0])
    assert torch.equal(gzipped.splits["val"][0], dm.splits["val"][0])


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        (
            "train-images-idx3-ubyte",
            lambda data: data[:-100],
            "is truncated: its header announces a uint8 array of shape (30, 28, 28)",
        ),
        ("train-images-idx3-ubyte", lambda data: data[:10], "is truncated: its header needs 16 bytes"),
        ("t10k-labels-idx1-ubyte", lambda data: b"", "is truncated: it holds 0 bytes"),
        (
            "t10k-images-idx3-ubyte",
            lambda data: struct.pack(">I", 0x801) + data[4:],
            "has the wrong magic number 0x00000801",
        ),
        ("train-labels-idx1-ubyte", lambda data: b"<html>404 Not Found</html>", "it is not an IDX file"),
        ("train-labels-idx1-ubyte", lambda data: data + b"\x00" * 7, "7 bytes longer than its header announces"),
        ("t10k-labels-idx1-ubyte", lambda data: data[:8] + bytes([12]) + data[9:], "holds label 12 outside 0..9"),
    ],
)
def test_mnist_damaged_file_is_named_with_the_fix(tmp_path, name, damage, problem):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataFileError) as err:
        MNISTDataModule(data_dir=str(tmp_path)).setup()
    assert_names_damage(err, path, problem)
    assert "download: true" in str(err.value) and "yann.lecun.com" in str(err.value)


def test_mnist_images_and_labels_of_different_downloads(tmp_path):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(MNIST_TEST + 1, dtype=np.uint8))
    with pytest.raises(
        DataFileError,
        match=rf"holds {MNIST_TEST} images but .*t10k-labels-idx1-ubyte holds "
        rf"{MNIST_TEST + 1} labels.*{FIX}",
    ):
        MNISTDataModule(data_dir=str(tmp_path)).setup()


# -- headers that lie: read within what the header may announce -----------------------------------
#: Zeros behind a lying header: 16 MB decompressed from a file of about 16 KB.
BOMB = 16 << 20
#: Memory a rejected file may cost: the tiny arrays of the other files and the reader's buffers.
BOUNDED = 4 << 20


def idx_header(*shape: int) -> bytes:
    return struct.pack(f">I{len(shape)}I", 0x0800 | len(shape), *shape)


@pytest.mark.parametrize(
    "name, header, problem",
    [
        # the stream goes on past the 30 images its header announces: read up to there, then one byte more
        ("train-images-idx3-ubyte", idx_header(MNIST_TRAIN, 28, 28), "holds more data than its header announces"),
        # a header announcing more images than the published file holds (2.4 GB): refused before any data is read
        (
            "train-images-idx3-ubyte",
            idx_header(3_000_000, 28, 28),
            "announces 3,000,000 entries in its header, more than the 60,000",
        ),
        (
            "t10k-images-idx3-ubyte",
            idx_header(MNIST_TEST, 32, 32),
            "announces entries of shape (32, 32) in its header, not (28, 28)",
        ),
        (
            "t10k-labels-idx1-ubyte",
            idx_header(2**32 - 1),
            "announces 4,294,967,295 entries in its header, more than the 10,000",
        ),
    ],
    ids=["stream-goes-on", "too-many-images", "wrong-image-shape", "too-many-labels"],
)
def test_mnist_gzip_whose_header_lies_is_refused_within_bounded_memory(tmp_path, name, header, problem):
    """A 16 KB .gz of 16 MB of zeros behind a lying header; before, the reader decompressed it whole (a
    2 MB file raised peak memory to 5 GB)."""
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / name
    path.unlink()
    gzip_with_zeros(path.with_name(name + ".gz"), header, BOMB)
    err, peak = peak_memory_of(lambda: MNISTDataModule(data_dir=str(tmp_path), val_size=6).setup())
    assert isinstance(err, DataFileError), err
    assert "\n" not in str(err) and f"{path}.gz" in str(err) and problem in str(err) and FIX in str(err), str(err)
    assert peak < BOUNDED, f"peak {peak / 2**20:.1f} MiB"


def test_norb_cat_gzip_whose_header_lies_is_refused_within_bounded_memory(tmp_path):
    """-cat files: a header announcing 2**31 - 1 labels (8 GiB) is refused unread; one announcing the
    right 6 labels in a stream that goes on is refused after reading them and one byte more."""
    write_norb(tmp_path)
    spec = VARIANTS["jittered_cluttered"]
    cat = tmp_path / "norb" / f"{spec['train'][3]}-cat.mat"
    cat.unlink()
    lying = cat.with_name(cat.name + ".gz")
    for count, problem in (
        (2**31 - 1, "announces 2,147,483,647 entries in its header, more than the 29,160"),
        (NORB_PER_TRAIN_FILE, "holds more data than its header announces"),
    ):
        gzip_with_zeros(lying, struct.pack("<iI3i", 0x1E3D4C54, 1, count, 1, 1), BOMB)
        err, peak = peak_memory_of(lambda: NORBDataModule(data_dir=str(tmp_path), val_size=12).prepare_data())
        assert isinstance(err, DataFileError), err
        assert "\n" not in str(err) and str(lying) in str(err) and problem in str(err) and FIX in str(err), str(err)
        assert peak < BOUNDED, f"peak {peak / 2**20:.1f} MiB"
    assert not (tmp_path / "norb" / "norb_cache_32x32.pt").exists()


def test_binary_matrix_header_beyond_any_data_file_is_refused_unread(tmp_path):
    path = gzip_with_zeros(tmp_path / "huge.mat.gz", struct.pack("<iI3i", 0x1E3D4C55, 2, 2**31 - 1, 1000, 1), 1 << 20)
    err, peak = peak_memory_of(lambda: read_binary_matrix(path))
    assert isinstance(err, DataFileError) and "more than the 1,073,741,824 any supported data file holds" in str(err)
    assert peak < BOUNDED


def test_cifar10_file_far_larger_than_a_batch_is_refused_unread(tmp_path):
    """A pickle has no header: a file over twice a batch's 31 MB is refused before unpickling reads it whole."""
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(batch, "wb") as f:  # a pickle's first bytes, then 70 MB (sparse: nothing is written)
        f.write(pickle.dumps({b"labels": []}, protocol=2)[:2])
        f.truncate(70 << 20)
    err, peak = peak_memory_of(lambda: CIFAR10DataModule(data_dir=str(tmp_path), val_size=8).setup())
    size = batch.stat().st_size
    assert isinstance(err, DataFileError) and str(batch) in str(err), err
    assert f"is not a CIFAR10 batch: it holds {size:,} bytes" in str(err) and FIX in str(err), err
    assert peak < BOUNDED


# -- empty splits are refused before training ----------------------------------------------------
def test_mnist_training_file_too_short_for_validation_is_refused_naming_the_sizes(tmp_path):
    """Before, a training file of 50,000 images or fewer left validation empty: the fit selected no
    epoch and tested the last weights. The last ``val_size`` images validate; too few is refused."""
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    for val_size in (10_000, MNIST_TRAIN):
        with pytest.raises(ConfigError) as err:
            MNISTDataModule(data_dir=str(tmp_path), val_size=val_size).setup()
        message = str(err.value)
        assert "\n" not in message and str(images) in message, message
        assert f"val_size={val_size} leaves no training images" in message and f"holds {MNIST_TRAIN} images" in message
        assert FIX in message and "lower data.init_args.val_size" in message
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=MNIST_TRAIN - 1)
    dm.setup()
    assert [len(dm.splits[s][1]) for s in ("train", "val", "test")] == [1, MNIST_TRAIN - 1, MNIST_TEST]


def empty_norb_test_files(root: Path) -> None:
    spec = VARIANTS["jittered_cluttered"]
    for stem in spec["test"]:
        write_binary_matrix(root / "norb" / f"{stem}-dat.mat", np.zeros((0, 2, 108, 108), dtype=np.uint8))
        write_binary_matrix(root / "norb" / f"{stem}-cat.mat", np.zeros(0, dtype=np.int32))


def empty_cifar_training_batches(root: Path) -> None:
    for i in range(1, 6):
        (root / "cifar-10-batches-py" / f"data_batch_{i}").write_bytes(
            pickle.dumps({b"data": np.zeros((0, 3072), dtype=np.uint8), b"labels": []}, protocol=2)
        )


def empty_emnist_test_files(root: Path) -> None:
    raw = root / "EMNIST" / "raw"
    write_idx(raw / "emnist-byclass-test-images-idx3-ubyte", np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(raw / "emnist-byclass-test-labels-idx1-ubyte", np.zeros(0, dtype=np.uint8))


@pytest.mark.parametrize(
    "write, empty, make, names",
    [
        (
            write_cifar,
            empty_cifar_training_batches,
            lambda d: CIFAR10DataModule(data_dir=d, val_size=8),
            ("the train split is empty (train 0, val 8, test 12 examples", "cifar-10-batches-py"),
        ),
        (
            write_norb,
            empty_norb_test_files,
            lambda d: NORBDataModule(data_dir=d, val_size=12),
            ("the test split is empty (train 48, val 12, test 0 examples", "norb_cache_32x32.pt"),
        ),
        # before: a ZeroDivisionError while drawing the evaluation sets
        (
            write_emnist,
            empty_emnist_test_files,
            lambda d: NISTPDataModule(data_dir=d, val_size=30, test_size=20),
            ("emnist-byclass-test-images-idx3-ubyte holds no images, so validation and test would be empty",),
        ),
    ],
)
def test_a_data_set_that_leaves_a_split_empty_is_refused_naming_the_sizes(tmp_path, write, empty, make, names):
    write(tmp_path)
    empty(tmp_path)
    dm = make(str(tmp_path))
    dm.prepare_data()
    with pytest.raises(DataFileError) as err:
        dm.setup()
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in names), message
    assert dm.splits is None


def test_any_module_with_an_empty_split_stops_the_fit_before_training(tmp_path):
    """The check sits in ``InMemoryDataModule.setup``: a user's module gets it too, and ``fit`` stops
    before its first step instead of training without validation."""
    from lightning import Trainer

    from lightning_rect import SparseMLP
    from lightning_rect.data import DigitsDataModule

    class NoValidation(DigitsDataModule):
        def load_splits(self):
            splits = super().load_splits()
            x, y = splits["val"]
            return {**splits, "val": (x[:0], y[:0])}

    model = SparseMLP(in_features=64, num_classes=10, hidden_sizes=[8])
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(
        DataFileError,
        match=r"^NoValidation: the val split is empty \(train 1197, val 0, test 300 "
        r"examples, from NoValidation\)",
    ):
        trainer.fit(model, datamodule=NoValidation())
    assert trainer.global_step == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# -- all image modules --------------------------------------------------------------------------
def test_labeled_fraction_passes_through(tmp_path):
    write_cifar(tmp_path)
    write_norb(tmp_path)
    cifar = CIFAR10DataModule(data_dir=str(tmp_path), val_size=8, labeled_fraction=0.5)
    norb = NORBDataModule(data_dir=str(tmp_path), val_size=12, labeled_fraction=0.5)
    norb.prepare_data()
    for dm, full in ((cifar, 30), (norb, 48)):
        dm.setup()
        assert len(dm.splits["train"][1]) < full
        assert len(dm.splits["val"][1]) in (8, 12)


# -- the table of data sets ---------------------------------------------------------------------
def test_every_config_belongs_to_one_data_set_of_the_table():
    """``configs/`` holds exactly the configs the table names: a config without an entry, or an entry
    without its config, fails here."""
    owners = Counter(config for facts in CATALOG.values() for config in facts.configs)
    assert sorted(owners) == sorted(path.name for path in (ROOT / "configs").glob("*.yaml"))
    assert set(owners.values()) == {1}


@pytest.mark.parametrize(
    "dataset, config_name", [(name, config) for name, facts in CATALOG.items() for config in facts.configs]
)
def test_configs_agree_with_the_table_and_their_module(dataset, config_name):
    """Each config names a data module and only arguments it takes; the module reads the folders the
    table names, and a pre-training config reconstructs as the table says (nothing is loaded here)."""
    import importlib

    facts = CATALOG[dataset]
    config = yaml.safe_load((ROOT / "configs" / config_name).read_text())
    module_path, _, class_name = config["data"]["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_path), class_name)
    init_args = config["data"]["init_args"]
    assert set(init_args) <= set(inspect.signature(cls).parameters)
    dm = cls(**init_args)
    assert dm.input_size > 0 and dm.num_classes > 1
    assert ("data_dir" in inspect.signature(cls).parameters) == facts.uses_data_dir
    if facts.uses_data_dir:  # the module's files lie in the first of the table's folders
        assert facts.data_folders[0] in dm.data_source(), dm.data_source()
    assert config["trainer"]["logger"]["init_args"]["name"] == config_name.removesuffix(".yaml")
    model = config["model"]["init_args"]
    assert model["l1"] == 0.001
    if config_name == facts.pretrain_config:
        assert model["reconstruction"] == facts.reconstruction_for(model["activation"])


@pytest.mark.slow  # 6 epochs under the Trainer: 2 to 3 s
def test_nistp_stream_trains_under_lightning(emnist_dir, tmp_path):
    """Under ``Trainer.fit`` the distorted stream gets ``set_epoch(epoch)``, so each epoch brings new
    draws, and a net learns from it: the training loss falls well below the chance level ln(62)."""
    from lightning import Callback, Trainer

    from lightning_rect import SparseMLP

    class FirstBatchAndLosses(Callback):
        def __init__(self) -> None:
            self.first_batch: dict[int, torch.Tensor] = {}
            self.losses: dict[int, list[float]] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.first_batch.setdefault(trainer.current_epoch, batch[0].clone())
            self.losses.setdefault(trainer.current_epoch, []).append(float(outputs["loss"]))

    torch.manual_seed(0)
    dm = NISTPDataModule(data_dir=emnist_dir, train_size=400, val_size=20, test_size=10, chunk_size=100)
    model = SparseMLP(
        in_features=dm.input_size, num_classes=dm.num_classes, hidden_sizes=[64], l1=0.0, lr=0.01, optimizer="adam"
    )
    record = FirstBatchAndLosses()
    trainer = Trainer(
        max_epochs=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[record],
    )
    with one_torch_thread():
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 6 * 40  # 6 epochs x ceil(400 / 10) batches

    stream = trainer.train_dataloader
    for epoch, seen in record.first_batch.items():  # epoch e trained on the batches of set_epoch(e)
        stream.sampler.set_epoch(epoch)
        assert torch.equal(next(iter(stream))[0], seen)
    assert not torch.equal(record.first_batch[0], record.first_batch[1])

    mean_loss = [sum(losses) / len(losses) for losses in record.losses.values()]
    assert mean_loss[0] > math.log(62) - 0.2  # starts at chance (uniform over 62 classes)...
    assert mean_loss[-1] < math.log(62) - 0.5 and mean_loss[-1] < min(mean_loss[:2]) - 0.3  # ...and learns
