"""NORB stereo pairs: jittered-cluttered NORB (the paper's set) or small NORB, subsampled to 2x32x32.

Preprocessing (the paper: "subsampled to 2x32x32, scaled linearly to [-1, 1]"):
- each camera image is resized from 108x108 (small NORB: 96x96) to ``image_size`` x ``image_size``
  by area averaging (``F.interpolate(mode="area")``: every output pixel is the mean of the block of
  input pixels it covers), then rounded back to uint8;
- the uint8 pairs are cached; each batch is mapped to [-1, 1] by ``x * 2/255 - 1``.

Reading and resizing 6 GB of raw files takes minutes, so it happens once (with a progress bar) and
the result is cached by ``prepare_data()`` as ``norb_cache_<size>x<size>.pt`` (small NORB:
``smallnorb_cache_<size>x<size>.pt``; uint8, about 700 MB for jittered-cluttered) next to the raw
files or in ``cache_dir``; ``setup()`` only loads it, in seconds. Variant and size are in the file
name, so both variants and several sizes can share one ``cache_dir``. Delete a cache to rebuild it.

Splits:
- jittered-cluttered: the 10 training files (291,600 pairs) are split by a permutation fixed with
  seed 0 (independent of the run's seed) into 233,172 training and 58,428 validation pairs, the
  paper's sizes; the 2 testing files (58,320 pairs, other object instances) are the test set.
  Validation pairs thus show the same object instances as training pairs (the paper's 58,428 is
  not a whole number of instances, so it cannot have held out instances).
- small NORB: the same rule; 24,300 training pairs -> 19,440 training + 4,860 validation (20%, the
  paper's NORB ratio), the 24,300 testing pairs test.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lightning_rect.checks import check_positive_int
from lightning_rect.data.base import InMemoryDataModule, Split, fixed_split
from lightning_rect.data.batches import Affine
from lightning_rect.data.download import GZIP_MAGIC, CorruptDownload, Remote, fetch
from lightning_rect.data.formats import MAGIC_DTYPES, BinaryMatrix, redownload
from lightning_rect.errors import ConfigError, DataFileError
from lightning_rect.files import atomic_write

CACHE_VERSION = 1
_CHUNK = 1024  # pairs resized at once: bounds memory at ~25 MB of raw pixels per chunk

VARIANTS: dict[str, dict[str, Any]] = {
    "jittered_cluttered": {
        "folder": "norb",
        "train": [f"norb-5x46789x9x18x6x2x108x108-training-{i:02d}" for i in range(1, 11)],
        "test": [f"norb-5x01235x9x18x6x2x108x108-testing-{i:02d}" for i in range(1, 3)],
        "raw_size": 108,
        "pairs_per_file": 29_160,  # every training and testing file; a header announcing more is corrupt
        "num_classes": 6,  # 0 animal, 1 human, 2 airplane, 3 truck, 4 car, 5 blank (no object)
        "val_size": 58_428,
        "url": "https://cs.nyu.edu/~ylclab/data/norb-v1.0/",
    },
    "small": {
        "folder": "smallnorb",
        "train": ["smallnorb-5x46789x9x18x6x2x96x96-training"],
        "test": ["smallnorb-5x01235x9x18x6x2x96x96-testing"],
        "raw_size": 96,
        "pairs_per_file": 24_300,
        "num_classes": 5,
        "val_size": 4_860,
        "url": "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/",
    },
}

#: Published checksums of the ``.mat.gz`` files ``download=True`` fetches: file name -> (algorithm,
#: digest, size in bytes or None). Small NORB: tensorflow/datasets, url_checksums/smallnorb.txt
#: (size and SHA256). Jittered-cluttered NORB: jaberg/skdata's NORB file table (SHA1; no sizes
#: published there, so the size checked is the one the server announces). A file missing here is
#: verified by the announced size and a full read of its gzip stream and binary-matrix header.
CHECKSUMS: dict[str, tuple[str, str, int | None]] = {
    "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat.gz": (
        "sha256",
        "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873",
        131_896_188,
    ),
    "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat.gz": (
        "sha256",
        "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa",
        348,
    ),
    "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat.gz": (
        "sha256",
        "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474",
        130_799_817,
    ),
    "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat.gz": (
        "sha256",
        "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff",
        347,
    ),
    **{
        f"norb-5x01235x9x18x6x2x108x108-testing-{name}.mat.gz": ("sha1", digest, None)
        for name, digest in (
            ("01-cat", "ba6e05ca90b151997d3fca7082e7a6bd3a470fd4"),
            ("01-dat", "4a2a765a8a351e0c005aef54cf320ca53b04d50c"),
            ("02-cat", "13d11d472f26492e2ee68cf1cfccc23e143a97cb"),
            ("02-dat", "79e037950a5423fb126685705b4dfb874ca471f3"),
        )
    },
    **{
        f"norb-5x46789x9x18x6x2x108x108-training-{name}.mat.gz": ("sha1", digest, None)
        for name, digest in (
            ("01-cat", "b9ed38a6af5d9287872ab7064c416fd35dcea79b"),
            ("01-dat", "38789c74538b0a3f86a4f854f0f0e3482451fd09"),
            ("02-cat", "192e87e661f29890e0536bc6445b8fa43fbad832"),
            ("02-dat", "a559ad82aad672ea281db8c437ea89ca6a76a9fa"),
            ("03-cat", "ca6f995f9f5b39ae614f8a355a70d53bf1ce4dff"),
            ("03-dat", "4318343182078b87af6e93eb7a1a0d63b55a7af4"),
            ("04-cat", "2353025bfcf02ec6fd91171fcf1f964c2ff1f00b"),
            ("04-dat", "32e193bb7234de588b67592ce04c57cb5b36412a"),
            ("05-cat", "931f63df18ec27e18a3859e35953a6f2a6478b11"),
            ("05-dat", "0669b2942215f05c33d7be07df352d96b5a4bbe3"),
            ("06-cat", "48b91f77aa94dfbd04ccf57b753e4cd42d0631cf"),
            ("06-dat", "779bf6ce2e69cc8cabaf0a1716e6528313c250b0"),
            ("07-cat", "f29cd673bd9840abf0fecd68a4d328b698f50cfa"),
            ("07-dat", "ef6410b90cae2d11a4609787806ae44cb2bbe719"),
            ("08-cat", "d3bc1d9111404d683b8ac6b7adb7e4fa972b765f"),
            ("08-dat", "73302e20486b64824e29a907ec7a353c14c12215"),
            ("09-cat", "801d3b16f7813a9e383507a933b1d8a292f3722b"),
            ("09-dat", "26ad80a8b99283804ab69207f81ff902343037b3"),
            ("10-cat", "1496bce011b0435da3f54e50560b66abfda9824e"),
            ("10-dat", "f9d53d3cb99188b085ce304f826c95f1e3dc8e14"),
        )
    },
}
CHECKSUM_SOURCES = {"sha256": "tensorflow/datasets (url_checksums/smallnorb.txt)", "sha1": "jaberg/skdata's NORB table"}


class NORBDataModule(InMemoryDataModule):
    """NORB stereo pairs as ``2 * image_size**2`` inputs in [-1, 1].

    Args:
        data_dir: folder holding ``norb/`` (jittered-cluttered files) or ``smallnorb/`` (small NORB),
            each with the ``*-dat.mat`` and ``*-cat.mat`` files (``.mat.gz`` works too; ``-info``
            files are not needed).
        variant: ``jittered_cluttered`` (the paper, 6 classes) or ``small`` (5 classes).
        image_size: side of each subsampled camera image (the paper: 32).
        val_size: validation pairs held out of the training files; default: the paper's 58,428
            (small NORB: 4,860).
        cache_dir: where to write the converted cache; default: the raw files' folder.
        download: fetch the missing ``-dat``/``-cat`` ``.mat.gz`` files from the variant's NYU URL
            into ``data_dir/norb/`` (``smallnorb/``) before converting; each is verified (published
            checksum, size, header) and a broken download resumes on the next run.
    """

    def __init__(
        self,
        data_dir: str = "data",
        variant: Literal["jittered_cluttered", "small"] = "jittered_cluttered",
        image_size: int = 32,
        val_size: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        labeled_fraction: float = 1.0,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.download = download
        if variant not in VARIANTS:
            raise ConfigError(f"NORB variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        check_positive_int("NORB image_size", image_size)
        if val_size is not None:
            check_positive_int("NORB val_size", val_size)
        self.spec = VARIANTS[variant]
        self.variant = variant
        self.image_size = image_size
        self.raw_dir = Path(data_dir) / self.spec["folder"]
        self.cache_path = Path(cache_dir or self.raw_dir) / cache_name(variant, image_size)
        self.val_size = self.spec["val_size"] if val_size is None else val_size
        self.input_size = 2 * image_size * image_size
        self.num_classes = self.spec["num_classes"]
        self.transform = Affine(scale=2 / 255, offset=-1.0)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, so DDP ranks do not convert concurrently.
        if not self.cache_path.exists():
            if self.download:
                download_raw(self.raw_dir, self.spec)
            build_cache(self.raw_dir, self.spec, self.image_size, self.cache_path)

    def data_source(self) -> str:
        return f"{self.cache_path.resolve()}, converted from {self.raw_dir.resolve()}"

    def load_splits(self) -> dict[str, Split]:
        if not self.cache_path.exists():
            raise DataFileError(
                f"NORB cache not found: {self.cache_path.resolve()}; call prepare_data() before "
                "setup() (the Trainer does) to build it from the raw files in "
                f"{self.raw_dir.resolve()}"
            )
        cache = load_cache(self.cache_path, self.variant, self.image_size)
        x, y = cache["train_x"], cache["train_y"]
        if self.val_size >= len(y):
            raise ConfigError(
                f"NORB val_size={self.val_size} leaves no training pairs: the training files "
                f"in {self.raw_dir} hold {len(y)} pairs"
            )
        train, val = fixed_split(len(y), [len(y) - self.val_size, self.val_size], seed=0)
        return {
            "train": (x[train], y[train]),
            "val": (x[val], y[val]),
            "test": (cache["test_x"], cache["test_y"]),
        }


# -- conversion ---------------------------------------------------------------------------------
def cache_name(variant: str, image_size: int) -> str:
    """The cache file of one variant and size, prefixed by the variant's folder name: jittered-cluttered
    keeps the ``norb_cache_*`` name its caches always had, small NORB's no longer collides with it."""
    return f"{VARIANTS[variant]['folder']}_cache_{image_size}x{image_size}.pt"


def find_file(raw_dir: Path, stem: str, spec: dict) -> Path:
    """``stem.mat`` or ``stem.mat.gz`` in ``raw_dir``; a DataFileError naming all missing files otherwise."""
    for name in (f"{stem}.mat", f"{stem}.mat.gz"):
        if (raw_dir / name).exists():
            return raw_dir / name
    raise _missing(raw_dir, spec)


def _missing(raw_dir: Path, spec: dict) -> DataFileError:
    stems = [f"{s}-{kind}" for s in spec["train"] + spec["test"] for kind in ("dat", "cat")]
    missing = [s + ".mat" for s in stems if not any((raw_dir / f"{s}{ext}").exists() for ext in (".mat", ".mat.gz"))]
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return DataFileError(
        f"NORB files not found in {raw_dir.resolve()}: missing {shown} (.mat or .mat.gz). "
        f"Download the -dat and -cat files from {spec['url']} into that folder "
        "(gunzipping is optional), or set data.init_args.download: true."
    )


def download_raw(raw_dir: Path, spec: dict) -> None:
    """Fetch every ``-dat``/``-cat`` file of the variant that is in ``raw_dir`` neither as .mat nor .mat.gz."""
    for stem in spec["train"] + spec["test"]:
        for kind in ("dat", "cat"):
            name = f"{stem}-{kind}"
            if any((raw_dir / f"{name}{ext}").exists() for ext in (".mat", ".mat.gz")):
                continue
            known = CHECKSUMS.get(f"{name}.mat.gz")  # (algorithm, digest, size)
            fetch(
                Remote(
                    url=spec["url"] + f"{name}.mat.gz",
                    checksum=(known[0], known[1]) if known else None,
                    size=known[2] if known else None,
                    check=_download_check(kind, spec, full=known is None),
                    source=CHECKSUM_SOURCES.get(known[0], "") if known else "",
                ),
                raw_dir,
            )


def _download_check(kind: str, spec: dict, full: bool):
    """The content check of a downloaded ``.mat.gz`` (named ``*.part`` while it is checked): a gzip
    stream whose binary-matrix header is a -dat (or -cat) file of the variant; without a checksum,
    also the whole stream is read and its length compared with the header's."""
    size = spec["raw_size"]

    def check(path: Path) -> None:
        with open(path, "rb") as f:
            if f.read(2) != GZIP_MAGIC:
                raise CorruptDownload("it is not a gzip file (the server may have sent an error page)")
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(8)
                magic, ndim = struct.unpack("<iI", head) if len(head) == 8 else (0, 0)
                dtype = MAGIC_DTYPES.get(magic & 0xFFFFFFFF)
                if dtype is None or not 1 <= ndim <= 16:
                    raise CorruptDownload(f"its header {head.hex()} is not a NORB binary matrix header")
                dims = f.read(4 * max(3, ndim))
                if len(dims) < 4 * max(3, ndim):
                    raise CorruptDownload("it is truncated inside its header")
                shape = struct.unpack(f"<{max(3, ndim)}i", dims)[:ndim]
                if kind == "dat":
                    ok, what = (
                        dtype == np.uint8 and ndim == 4 and shape[1:] == (2, size, size),
                        f"uint8 stereo pairs (n, 2, {size}, {size})",
                    )
                else:
                    ok, what = dtype == np.int32 and ndim == 1, "an int32 label vector"
                ok = ok and 0 <= shape[0] <= spec["pairs_per_file"]
                what += f" of at most {spec['pairs_per_file']:,} entries"
                if not ok:
                    raise CorruptDownload(
                        f"its header announces a {dtype.name} array of shape {shape}, not {what} "
                        f"(a -{kind} file of {spec['folder']})"
                    )
                if full:
                    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    got = 0
                    while got <= expected and (block := f.read(1 << 20)):  # not read on past the header's size
                        got += len(block)
                    if got != expected:
                        raise CorruptDownload(
                            f"{'it is truncated: ' if got < expected else ''}its header announces "
                            f"{expected} bytes of data, the stream holds "
                            f"{got if got < expected else 'more'}"
                        )
        except (OSError, EOFError, zlib.error) as err:
            raise CorruptDownload(f"the gzip stream is truncated or damaged ({err})") from err

    return check


def build_cache(raw_dir: Path, spec: dict, image_size: int, cache_path: Path) -> None:
    """Read every raw file, resize the pairs, and save them as uint8 in ``cache_path`` (atomically)."""
    from tqdm.auto import tqdm

    parts = {
        name: [(find_file(raw_dir, f"{s}-dat", spec), find_file(raw_dir, f"{s}-cat", spec)) for s in spec[name]]
        for name in ("train", "test")
    }
    result: dict[str, torch.Tensor | int | str] = {}
    with ExitStack() as stack:  # closes every opened file, also when a later one turns out damaged
        opened = {
            name: [
                (stack.enter_context(BinaryMatrix(dat, spec["url"], spec["pairs_per_file"])), labels_of(cat, spec))
                for dat, cat in files
            ]
            for name, files in parts.items()
        }
        for files in opened.values():
            for dat, labels in files:
                check_pairs(dat, labels, spec)
        total = sum(len(labels) for files in opened.values() for _, labels in files)
        with tqdm(total=total, unit="pairs", desc=f"NORB -> {image_size}x{image_size} cache") as progress:
            for name, files in opened.items():
                # Filled in place: the converted set is held once, never also as a list of chunks.
                x = torch.empty((sum(len(labels) for _, labels in files), 2, image_size, image_size), dtype=torch.uint8)
                row = 0
                for dat, _ in files:
                    while dat.rows_read < dat.shape[0]:
                        chunk = subsample(torch.from_numpy(dat.read_rows(_CHUNK)), image_size)
                        x[row : row + len(chunk)] = chunk
                        row += len(chunk)
                        progress.update(len(chunk))
                result[f"{name}_x"] = x
                result[f"{name}_y"] = torch.from_numpy(np.concatenate([labels for _, labels in files]).astype(np.int64))
    result.update(version=CACHE_VERSION, variant=spec["folder"], image_size=image_size, method="area")
    with atomic_write(cache_path, elsewhere="set data.init_args.cache_dir to a folder on another disk") as file:
        torch.save(result, file)


def labels_of(cat: Path, spec: dict) -> np.ndarray:
    with BinaryMatrix(cat, spec["url"], max_rows=spec["pairs_per_file"]) as matrix:
        if matrix.dtype != np.int32 or len(matrix.shape) != 1:
            raise DataFileError(
                f"{cat} should hold a vector of int32 category labels, but holds a "
                f"{matrix.dtype.name} array of shape {matrix.shape}: it is not a -cat file; "
                f"{redownload(spec['url'])}"
            )
        labels = matrix.read_all()
    bad = labels[(labels < 0) | (labels >= spec["num_classes"])]
    if len(bad):
        raise DataFileError(
            f"{cat} holds label {int(bad[0])} outside 0..{spec['num_classes'] - 1}; "
            f"is it a file of the other NORB variant? {redownload(spec['url'])}"
        )
    return labels


def check_pairs(dat: BinaryMatrix, labels: np.ndarray, spec: dict) -> None:
    size = spec["raw_size"]
    expected = (len(labels), 2, size, size)
    if dat.dtype != np.uint8 or dat.shape != expected:
        raise DataFileError(
            f"{dat.path} should hold uint8 stereo pairs of shape {expected} (matching its -cat "
            f"file), but holds a {dat.dtype.name} array of shape {dat.shape}; "
            f"{redownload(spec['url'])}"
        )


def subsample(pairs: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 ``(n, 2, H, W)`` -> uint8 ``(n, 2, image_size, image_size)`` by area averaging."""
    small = F.interpolate(pairs.to(torch.float32), size=(image_size, image_size), mode="area")
    return small.round_().clamp_(0, 255).to(torch.uint8)


def load_cache(path: Path, variant: str, image_size: int) -> dict:
    try:
        cache = torch.load(path, weights_only=True)
        ok = (
            cache.get("version") == CACHE_VERSION
            and cache.get("image_size") == image_size
            and cache.get("variant") == VARIANTS[variant]["folder"]
            and all(k in cache for k in ("train_x", "train_y", "test_x", "test_y"))
        )
    except Exception as err:  # unpickling raises many types; all mean "damaged"
        raise DataFileError(
            f"the NORB cache {path} cannot be read ({err}); delete it to rebuild it from the raw files"
        ) from err
    if not ok:
        raise DataFileError(
            f"the NORB cache {path} is from another version, variant or image size; delete it "
            f"to rebuild it for variant {variant!r}, image_size {image_size}"
        )
    return cache
