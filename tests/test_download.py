"""``download: true`` without the internet: the tiny fixtures are served over HTTP on 127.0.0.1 and
the data modules' URL tables point there (``norb.VARIANTS[...]["url"]``, ``amazon.files.ARCHIVES``).

Shown: NORB (both variants) and Amazon download into ``data_dir`` and then load; a download cut off
half-way, or a ``.part`` left by an earlier run, resumes with a Range request and ends with the same
bytes; a corrupt file (checksum, size, header, truncated stream) is refused with one line naming
the URL and the manual fix, and nothing is left where a loader would take it for good data.
"""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
import torch

from lightning_rect.data import AmazonReviewsDataModule, NORBDataModule, norb
from lightning_rect.data.amazon import files as amazon_files
from lightning_rect.data.download import Remote, fetch
from lightning_rect.errors import DataFileError
from tests.helpers.amazon_corpus import amazon_archives
from tests.helpers.http_files import FileServer
from tests.helpers.norb_files import PAIRS_PER_FILE, norb_downloads

BY_HAND = "by hand"


def served(prefix: str, files: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{prefix}/{name}": data for name, data in files.items()}


def leftovers(folder) -> list[str]:
    """Every file under ``folder`` (a refused download must leave neither its final name nor a ``.part``)."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def one_line_naming(err: pytest.ExceptionInfo, url: str) -> str:
    message = str(err.value)
    assert "\n" not in message and url in message and BY_HAND in message, message
    return message


@pytest.fixture
def norb_server(tmp_path, monkeypatch):
    """Both NORB variants served under /norb-v1.0/ and /norb-v1.0-small/; small NORB with SHA256 and
    sizes in the checksum table (the published kind), jittered-cluttered without (size and header)."""
    files = {variant: norb_downloads(tmp_path / f"src-{variant}", variant) for variant in norb.VARIANTS}
    prefixes = {"jittered_cluttered": "/norb-v1.0", "small": "/norb-v1.0-small"}
    with FileServer(
        {k: v for variant in files for k, v in served(prefixes[variant], files[variant]).items()}
    ) as server:
        for variant, prefix in prefixes.items():
            monkeypatch.setitem(norb.VARIANTS[variant], "url", f"{server.url}{prefix}/")
        monkeypatch.setattr(
            norb,
            "CHECKSUMS",
            {name: ("sha256", hashlib.sha256(data).hexdigest(), len(data)) for name, data in files["small"].items()},
        )
        server.sources = files
        server.prefixes = prefixes
        yield server


@pytest.mark.parametrize("variant", ["jittered_cluttered", "small"])
def test_norb_downloads_then_loads(tmp_path, norb_server, variant, capsys):
    data = tmp_path / "data"
    dm = NORBDataModule(data_dir=str(data), variant=variant, val_size=4, download=True)
    dm.prepare_data()
    dm.setup()
    spec = norb.VARIANTS[variant]
    assert f"{spec['test'][-1]}-cat.mat.gz" in capsys.readouterr().err  # a progress bar per file, on stderr
    raw = data / spec["folder"]
    # every -dat/-cat file arrived under its real name, byte for byte, and nothing else is left
    for name, content in norb_server.sources[variant].items():
        assert (raw / name).read_bytes() == content
    assert not list(raw.glob("*.part")) and not list(data.rglob(".*"))
    counts = PAIRS_PER_FILE[variant]
    n_train, n_test = counts["train"] * len(spec["train"]), counts["test"] * len(spec["test"])
    assert sum(len(dm.splits[s][1]) for s in ("train", "val")) == n_train and len(dm.splits["test"][1]) == n_test
    # pair k is constant k with label k % classes (norb_files.write_norb): the test pairs came through intact
    test_x, test_y = dm.splits["test"]
    ids = test_x.flatten(1)[:, 0].long()
    assert torch.equal(ids, torch.arange(n_train, n_train + n_test))
    assert torch.equal(test_y, ids % spec["num_classes"])
    # a second run downloads nothing (the files are there)
    before = len(norb_server.requests)
    (raw / norb.cache_name(variant, 32)).unlink()
    NORBDataModule(data_dir=str(data), variant=variant, val_size=4, download=True).prepare_data()
    assert len(norb_server.requests) == before


def test_norb_connection_dropped_half_way_resumes_with_range(tmp_path, norb_server):
    name = f"{norb.VARIANTS['small']['train'][0]}-dat.mat.gz"
    path = f"{norb_server.prefixes['small']}/{name}"
    content = norb_server.sources["small"][name]
    norb_server.drop_after[path] = len(content) // 2
    data = tmp_path / "data"
    NORBDataModule(data_dir=str(data), variant="small", val_size=4, download=True).prepare_data()
    assert norb_server.paths_requested(path) == [(None, 200), (f"bytes={len(content) // 2}-", 206)]
    assert (data / "smallnorb" / name).read_bytes() == content  # and its published SHA256 matched


def test_part_file_of_an_earlier_run_resumes(tmp_path):
    content = bytes(range(256)) * 400
    with FileServer({"/f.bin": content}) as server:
        remote = Remote(url=f"{server.url}/f.bin", checksum=("md5", hashlib.md5(content).hexdigest()))
        # a run cut off with no retries left: one line, the URL, the bytes kept for the next run
        server.drop_after["/f.bin"] = 30_000
        with pytest.raises(DataFileError) as err:
            fetch(remote, tmp_path, attempts=1)
        message = one_line_naming(err, remote.url)
        assert (
            "30000 bytes received are kept" in message
            and "rerun with download: true" in message
            and "curl -L -o" in message
        )
        assert leftovers(tmp_path) == ["f.bin.part"]
        # the next run asks only for the rest
        assert fetch(remote, tmp_path).read_bytes() == content
        assert server.paths_requested("/f.bin")[-1] == ("bytes=30000-", 206)
        assert leftovers(tmp_path) == ["f.bin"]
        # a .part that already holds every byte: the server answers 416, the file is verified as is
        (tmp_path / "f.bin").rename(tmp_path / "f.bin.part")
        assert fetch(remote, tmp_path).read_bytes() == content
        assert server.paths_requested("/f.bin")[-1] == (f"bytes={len(content)}-", 416)


def test_corrupt_norb_download_is_refused_and_leaves_nothing(tmp_path, norb_server):
    data = tmp_path / "data"
    small = norb.VARIANTS["small"]
    name = f"{small['test'][0]}-dat.mat.gz"
    path = f"{norb_server.prefixes['small']}/{name}"
    url = small["url"] + name
    good = norb_server.sources["small"][name]
    # one flipped byte: same size, wrong SHA256
    norb_server.files[path] = good[:-20] + bytes([good[-20] ^ 0xFF]) + good[-19:]
    with pytest.raises(DataFileError) as err:
        NORBDataModule(data_dir=str(data), variant="small", val_size=4, download=True).prepare_data()
    message = one_line_naming(err, url)
    assert "sha256" in message and "corrupt" in message and "curl -L -o" in message
    assert name not in leftovers(data) and f"{name}.part" not in leftovers(data)
    assert not list(data.rglob("*_cache_*"))
    # fewer bytes than the published size
    norb_server.files[path] = good[:-1]
    with pytest.raises(DataFileError, match=r"bytes where \d+ were expected") as err:
        NORBDataModule(data_dir=str(data), variant="small", val_size=4, download=True).prepare_data()
    one_line_naming(err, url)
    assert name not in leftovers(data) and f"{name}.part" not in leftovers(data)
    # a .part of an earlier run whose bytes are wrong: resumed, fails the checksum, deleted
    norb_server.files[path] = good
    (data / "smallnorb" / f"{name}.part").write_bytes(b"\0" * 100)
    with pytest.raises(DataFileError, match="sha256"):
        NORBDataModule(data_dir=str(data), variant="small", val_size=4, download=True).prepare_data()
    assert name not in leftovers(data) and f"{name}.part" not in leftovers(data)
    # with the right bytes the same command then works
    NORBDataModule(data_dir=str(data), variant="small", val_size=4, download=True).prepare_data()
    assert (data / "smallnorb" / name).read_bytes() == good


@pytest.mark.parametrize("damage", ["error page", "wrong header", "truncated stream", "missing"])
def test_unverifiable_norb_file_checked_by_size_and_header(tmp_path, norb_server, damage):
    """Jittered-cluttered NORB here has no checksum (as for a file without a published one): an HTML
    page, a -cat file served as -dat, or a gzip stream cut short (the server announcing the short
    length) is refused by its header or stream; a missing file (404) names the URL too."""
    import gzip

    data = tmp_path / "data"
    spec = norb.VARIANTS["jittered_cluttered"]
    name = f"{spec['train'][2]}-dat.mat.gz"
    path = f"{norb_server.prefixes['jittered_cluttered']}/{name}"
    good = norb_server.sources["jittered_cluttered"][name]
    expected = {"error page": "gzip", "wrong header": "int32", "truncated stream": "truncated", "missing": "HTTP 404"}
    if damage == "error page":
        norb_server.files[path] = b"<html>503 Service Unavailable</html>"
    elif damage == "wrong header":
        norb_server.files[path] = norb_server.sources["jittered_cluttered"][f"{spec['train'][2]}-cat.mat.gz"]
    elif damage == "truncated stream":
        norb_server.files[path] = gzip.compress(gzip.decompress(good)[:-500])
    else:
        del norb_server.files[path]
    with pytest.raises(DataFileError, match=expected[damage]) as err:
        NORBDataModule(data_dir=str(data), variant="jittered_cluttered", val_size=4, download=True).prepare_data()
    one_line_naming(err, spec["url"] + name)
    assert name not in leftovers(data) and f"{name}.part" not in leftovers(data)
    assert not list(data.rglob("*_cache_*"))


@pytest.fixture
def amazon_server(tmp_path, monkeypatch):
    """processed_acl (with an MD5 in the table) and processed_stars (without) served under /sentiment/."""
    archives = amazon_archives(
        tmp_path / "src", domains=("books", "dvd"), reviews_per_class=20, unlabeled_reviews=20, background_size=200
    )
    with FileServer(served("/sentiment", archives)) as server:
        for folder in ("processed_acl", "processed_stars"):
            monkeypatch.setitem(
                amazon_files.ARCHIVES,
                folder,
                {**amazon_files.ARCHIVES[folder], "url": f"{server.url}/sentiment/{folder}.tar.gz"},
            )
        monkeypatch.setitem(
            amazon_files.ARCHIVES["processed_acl"],
            "checksum",
            ("md5", hashlib.md5(archives["processed_acl.tar.gz"]).hexdigest()),
        )
        server.sources = archives
        yield server


def test_amazon_downloads_then_loads(tmp_path, amazon_server):
    data = tmp_path / "data"
    polarity = AmazonReviewsDataModule(str(data), domains=("books", "dvd"), vocab_size=50, download=True)
    polarity.prepare_data()
    polarity.setup()
    assert sum(len(polarity.splits[s][1]) for s in ("train", "val", "test")) == 2 * 2 * 20
    assert (data / "processed_acl.tar.gz").read_bytes() == amazon_server.sources["processed_acl.tar.gz"]
    assert not (data / "processed_stars").exists()  # only what the task needs
    stars = AmazonReviewsDataModule(str(data), task="stars", vocab_size=50, download=True)
    stars.prepare_data()
    stars.setup()
    assert set(stars.splits["test"][1].tolist()) <= set(range(5)) and len(stars.splits["train"][1]) > 0
    assert sorted(p.name for p in data.iterdir()) == [
        "processed_acl",
        "processed_acl.tar.gz",
        "processed_stars",
        "processed_stars.tar.gz",
        "vocab",
    ]
    # everything there: no request
    before = len(amazon_server.requests)
    AmazonReviewsDataModule(str(data), domains=("books", "dvd"), download=True).prepare_data()
    assert len(amazon_server.requests) == before


def test_amazon_interrupted_then_corrupt_archive(tmp_path, amazon_server):
    data = tmp_path / "data"
    path = "/sentiment/processed_stars.tar.gz"
    good = amazon_server.sources["processed_stars.tar.gz"]
    amazon_server.drop_after[path] = len(good) // 3
    AmazonReviewsDataModule(str(data), task="stars", download=True).prepare_data()
    assert amazon_server.paths_requested(path)[-1] == (f"bytes={len(good) // 3}-", 206)
    assert (data / "processed_stars.tar.gz").read_bytes() == good
    # a truncated tarball (the server announcing the short length; no checksum is published) is refused
    other = tmp_path / "other"
    amazon_server.files[path] = good[: len(good) // 2]
    with pytest.raises(DataFileError, match="not a complete tar archive") as err:
        AmazonReviewsDataModule(str(other), task="stars", download=True).prepare_data()
    one_line_naming(err, amazon_files.ARCHIVES["processed_stars"]["url"])
    assert leftovers(other) == []
    # a tarball that is complete but of the wrong data set (lacks the books file) is refused as well
    amazon_server.files[path] = amazon_server.sources["processed_acl.tar.gz"]
    with pytest.raises(DataFileError, match="lacks processed_stars/books/all_balanced.review"):
        AmazonReviewsDataModule(str(other), task="stars", download=True).prepare_data()
    assert leftovers(other) == []


# -- a full or read-only disk is not a bad download ----------------------------------------------
class FillingFile:
    """A file opened for writing on a disk with ``room`` bytes left: later writes fail with ``code``."""

    def __init__(self, file, room: list[int], code: int) -> None:
        self.file, self.room, self.code = file, room, code

    def write(self, data: bytes) -> int:
        if len(data) > self.room[0]:
            self.file.write(data[: self.room[0]])
            self.room[0] = 0
            raise OSError(self.code, os.strerror(self.code))
        self.room[0] -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def disk_with_room(monkeypatch, module, room: int, code: int = errno.ENOSPC) -> None:
    """Files ``module`` opens for writing get ``room`` bytes in all before each write fails with ``code``."""
    left = [room]

    def opener(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        return FillingFile(file, left, code) if any(c in mode for c in "wa") else file

    monkeypatch.setattr(module, "open", opener, raising=False)


def test_download_on_a_full_disk_keeps_the_bytes_and_resumes(tmp_path, monkeypatch):
    """Before, a full disk looked like a broken connection: four retries, then "download it by hand"."""
    from lightning_rect.data import download
    from lightning_rect.errors import StorageError

    content = bytes(range(256)) * 400
    with FileServer({"/f.bin": content}) as server:
        remote = Remote(url=f"{server.url}/f.bin", checksum=("md5", hashlib.md5(content).hexdigest()))
        disk_with_room(monkeypatch, download, 30_000)
        with pytest.raises(StorageError) as err:
            fetch(remote, tmp_path)
        message = str(err.value)
        assert (
            "\n" not in message and str(tmp_path / "f.bin.part") in message and "no space left on the device" in message
        )
        assert "the 30000 bytes received are kept there" in message and "rerun (the download resumes)" in message
        assert len(server.paths_requested("/f.bin")) == 1  # no retry: the network was not the problem
        monkeypatch.undo()  # space freed: the next run asks only for the rest
        assert fetch(remote, tmp_path).read_bytes() == content
        assert server.paths_requested("/f.bin")[-1] == ("bytes=30000-", 206)


@pytest.mark.parametrize(
    "code, cause, where",
    [
        (errno.ENOSPC, "no space left on the device", "extracting"),
        (errno.EROFS, "the file system is read-only", "temporary folder"),
    ],
)
def test_unpacking_on_a_full_or_read_only_disk_keeps_the_archive(
    tmp_path, amazon_server, monkeypatch, code, cause, where
):
    """Before, the error advised deleting the (good) archive; a read-only folder gave a traceback."""
    import tarfile
    import tempfile

    from lightning_rect.errors import StorageError

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(data / "processed_stars"))

    data = tmp_path / "data"
    monkeypatch.setattr(
        *((tarfile.TarFile, "makefile", refuse) if where == "extracting" else (tempfile, "mkdtemp", refuse))
    )
    with pytest.raises(StorageError) as err:
        AmazonReviewsDataModule(str(data), task="stars", download=True).prepare_data()
    archive = data / "processed_stars.tar.gz"
    message = str(err.value)
    assert "\n" not in message and f"cannot unpack {archive} into {data}: {cause}" in message, message
    assert "the archive is kept" in message and "delete" not in message
    assert archive.read_bytes() == amazon_server.sources["processed_stars.tar.gz"]
    assert sorted(p.name for p in data.iterdir()) == ["processed_stars.tar.gz"]  # no half-unpacked folder
    requests = len(amazon_server.requests)
    monkeypatch.undo()  # room again: the kept archive is unpacked, nothing downloaded
    stars = AmazonReviewsDataModule(str(data), task="stars", download=True, vocab_size=50)
    stars.prepare_data()
    stars.setup()
    assert len(amazon_server.requests) == requests and len(stars.splits["train"][1]) > 0


def test_unpack_zip_gz_and_unsafe_archives(tmp_path):
    """The other archive kinds ``unpack_archive`` handles; a member path leaving the folder is refused."""
    import gzip
    import io
    import tarfile
    import zipfile

    from lightning_rect.data.download import unpack_archive

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("top/x.txt", "x")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(b"b"))
    out = tmp_path / "out"
    (out / "top").mkdir(parents=True)
    (out / "top" / "keep.txt").write_text("mine")
    assert unpack_archive(tmp_path / "a.zip", out) == [out / "top"]
    assert (out / "top" / "x.txt").read_text() == "x" and (out / "top" / "keep.txt").read_text() == "mine"
    unpack_archive(tmp_path / "b.txt.gz", out)
    assert (out / "b.txt").read_bytes() == b"b"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"e"))
    (tmp_path / "evil.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(DataFileError, match="cannot unpack"):
        unpack_archive(tmp_path / "evil.tar.gz", out)
    assert not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["b.txt", "top"]  # no temporary folder left
