"""NISTP-style data: 62 classes of 32x32 characters (digits, upper and lower case) with random distortions.

The paper's NISTP set (Bengio et al. 2011) perturbs NIST SD19 characters with a pipeline of
distortions and streams 81.92 million of them. Here the source characters are EMNIST ``byclass``
(the same 62 classes, derived from NIST SD19), read from the IDX files torchvision downloads
(``formats.IdxFile``: a damaged file is named, with what is wrong and the fix), and the
distortions are those of ``lightning_rect.data.distortions``, drawn on the fly in vectorised chunks.

- Source images: EMNIST stores each 28x28 image transposed; it is turned upright and padded with
  2 black pixels a side to 32x32 (padding, not resizing, keeps the stroke width of the source).
- Training: an epoch is a stream of ``train_size`` freshly distorted examples (default the paper's
  81,920,000, so one epoch is the paper's whole stream; use ``trainer.val_check_interval`` to
  validate within it). Source characters are drawn by cycling through seeded permutations of the
  EMNIST training images, so every character is used once per pass. Permutations and distortions
  are seeded by (seed, epoch, ...): the same run repeats exactly, a new epoch sees new distortions.
- Validation and test: fixed distorted sets (``val_size`` 80,000, ``test_size`` 20,000 by default)
  made from disjoint parts of the EMNIST *test* images, chosen by a permutation with seed 0 and
  distorted on the CPU with fixed seeds, independent of the run's seed and the hardware, so every
  run is evaluated on the same images. They are stored as uint8, and training batches are rounded
  to the same 1/255 steps, so train and evaluation inputs have the same distribution.
- ``labeled_fraction`` keeps a class-balanced subset of the source training characters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_rect.checks import check_positive_int
from lightning_rect.data.base import InMemoryDataModule, Split, fixed_split
from lightning_rect.data.batches import Affine, Batch, BatchTransform, as_is
from lightning_rect.data.distortions import distort
from lightning_rect.data.formats import redownload
from lightning_rect.data.mnist import read_images_and_labels
from lightning_rect.errors import ConfigError, DataFileError

EMNIST_FOLDER = "EMNIST"
EMNIST_FILES = [
    f"emnist-byclass-{part}-{kind}" for part in ("train", "test") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
]
#: Characters per byclass file as published: a header announcing more is corrupt (and is not read).
EMNIST_SIZES = {"train": 697_932, "test": 116_323}
EMNIST_URL = "https://www.nist.gov/itl/products-and-services/emnist-dataset"
EMNIST_SOURCE = f"set `data.init_args.download: true`, or unpack it from gzip.zip at {EMNIST_URL}"
PAPER_TRAIN_SIZE = 81_920_000
EVAL_SEED = 0  # fixes the validation/test sources and their distortions, whatever the run's seed
_VAL_STREAM, _TEST_STREAM = 1, 2


class NISTPDataModule(InMemoryDataModule):
    """Distorted 32x32 characters as 1024-vectors in [0, 1], 62 classes.

    Args:
        data_dir: folder holding ``EMNIST/raw/`` in torchvision's layout.
        download: let torchvision download EMNIST (about 560 MB) if it is missing (needs internet).
        train_size: distorted training examples per epoch (the paper: 81,920,000 in all).
        val_size: size of the fixed distorted validation set (the paper: 80k).
        test_size: size of the fixed distorted test set (the paper: 20k).
        distortion_strength: scales every distortion's magnitude (0: clean characters; 1: default).
        chunk_size: training examples distorted together; larger is faster, costs more memory.
        distort_device: where training batches are distorted: ``auto`` (the Trainer's device), ``cpu``.
    """

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        train_size: int = PAPER_TRAIN_SIZE,
        val_size: int = 80_000,
        test_size: int = 20_000,
        distortion_strength: float = 1.0,
        chunk_size: int = 4096,
        distort_device: Literal["auto", "cpu"] = "auto",
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        labeled_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        for name, value in (
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
            ("chunk_size", chunk_size),
        ):
            check_positive_int(f"NISTP {name}", value)
        if not (isinstance(distortion_strength, (int, float)) and 0 <= distortion_strength <= 2):
            raise ConfigError(f"NISTP distortion_strength must be in [0, 2], got {distortion_strength!r}")
        if distort_device not in ("auto", "cpu"):
            raise ConfigError(f"NISTP distort_device must be 'auto' or 'cpu', got {distort_device!r}")
        self.data_dir = data_dir
        self.download = download
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        self.distortion_strength = float(distortion_strength)
        self.chunk_size = chunk_size
        self.distort_device = distort_device
        self.input_size = 32 * 32
        self.num_classes = 62
        self.transform = Affine(scale=1 / 255)

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import EMNIST

            EMNIST(self.data_dir, split="byclass", train=True, download=True)

    def data_source(self) -> str:
        return str(emnist_raw_dir(self.data_dir))

    def load_splits(self) -> dict[str, Split]:
        train_x, train_y = read_emnist(self.data_dir, train=True)
        test_x, test_y = read_emnist(self.data_dir, train=False)
        if not len(test_y):  # validation and test are drawn from the test characters
            raise DataFileError(
                f"{emnist_raw_dir(self.data_dir) / 'emnist-byclass-test-images-idx3-ubyte'} holds no "
                f"images, so validation and test would be empty (val_size={self.val_size}, "
                f"test_size={self.test_size}); {redownload(EMNIST_SOURCE)}"
            )
        sources = eval_sources(len(test_y), self.val_size, self.test_size)
        splits = {"train": (train_x, train_y)}
        for name, idx, stream in (("val", sources[0], _VAL_STREAM), ("test", sources[1], _TEST_STREAM)):
            splits[name] = (fixed_distortions(test_x[idx], stream, self.distortion_strength), test_y[idx])
        return splits

    def train_dataloader(self) -> DataLoader:
        x, y = self._set_up_splits()["train"]
        rank, world = self._rank_and_world()
        device = torch.device("cpu")
        trainer = getattr(self, "trainer", None)
        if self.distort_device == "auto" and trainer is not None:
            device = trainer.strategy.root_device
        sampler = CyclingSampler(len(y), self.train_size, seed=self.seed, rank=rank, world_size=world)
        chunk_size = self.batch_size * max(1, self.chunk_size // self.batch_size)  # chunks hold whole batches
        transform = self.transform
        assert transform is not None  # set by __init__
        stream = DistortedStream(x, y, sampler, transform, self.distortion_strength, chunk_size, device)
        return DataLoader(
            stream,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=as_is,  # type: ignore[arg-type]  # gets __getitems__' batch, not the list torch types it with
        )


# -- source characters --------------------------------------------------------------------------
def emnist_raw_dir(data_dir: str) -> Path:
    return Path(data_dir).resolve() / EMNIST_FOLDER / "raw"


def read_emnist(data_dir: str, train: bool) -> Split:
    """EMNIST byclass images (uint8, ``(n, 28, 28)`` as stored, i.e. transposed) and int64 labels."""
    raw = emnist_raw_dir(data_dir)
    missing = [name for name in EMNIST_FILES if not (raw / name).exists()]
    if missing:
        gz = [name for name in missing if (raw / f"{name}.gz").exists()]
        hint = f" ({', '.join(n + '.gz' for n in gz)} exist: gunzip them)" if gz else ""
        raise DataFileError(
            f"EMNIST byclass files not found in {raw} (missing: {', '.join(missing)}){hint}. Set "
            "`data.init_args.download: true` to fetch them with torchvision, or unpack gzip.zip from "
            f"{EMNIST_URL} into that folder and gunzip the files."
        )
    part = "train" if train else "test"
    return read_images_and_labels(
        raw / f"emnist-byclass-{part}-images-idx3-ubyte",
        raw / f"emnist-byclass-{part}-labels-idx1-ubyte",
        62,
        EMNIST_SOURCE,
        max_images=EMNIST_SIZES[part],
    )


def to_float_images(source: torch.Tensor) -> torch.Tensor:
    """Stored EMNIST uint8 ``(n, 28, 28)`` -> upright float ``(n, 1, 32, 32)`` in [0, 1]."""
    x = source.transpose(-1, -2).unsqueeze(1).to(torch.float32) / 255
    return F.pad(x, (2, 2, 2, 2))


def distort_to_uint8(source: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Distort stored EMNIST characters; uint8 ``(n, 32, 32)``, rounded to the nearest 1/255 step."""
    x = distort(to_float_images(source), generator, strength)
    return (x * 255).round_().to(torch.uint8).squeeze(1)


def eval_sources(num_test: int, val_size: int, test_size: int) -> list[torch.Tensor]:
    """Indices into the EMNIST test images for validation and test: disjoint while they fit (116,323
    images hold the paper's 80k + 20k); beyond that the fixed order repeats (with new distortions)."""
    order = fixed_split(num_test, [num_test], seed=EVAL_SEED)[0]
    picks = order.repeat(math.ceil((val_size + test_size) / num_test))
    return [picks[:val_size], picks[val_size : val_size + test_size]]


def fixed_distortions(source: torch.Tensor, stream: int, strength: float, chunk: int = 8192) -> torch.Tensor:
    """The fixed distorted copy of ``source``: CPU generator seeded by ``(EVAL_SEED, stream)``."""
    generator = torch.Generator().manual_seed(mix_seed(EVAL_SEED, stream))
    return torch.cat(
        [distort_to_uint8(source[i : i + chunk], generator, strength) for i in range(0, len(source), chunk)]
        or [torch.empty(0, 32, 32, dtype=torch.uint8)]
    )


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (an order-sensitive polynomial hash)."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part) + 1) % (2**63 - 1)
    return seed


# -- training stream ----------------------------------------------------------------------------
class CyclingSampler(DistributedSampler):
    """Which source character each training position of one rank's epoch uses.

    Global position ``p`` uses ``perm_k[p % n]`` with ``k = p // n`` and ``perm_k`` a permutation
    of the ``n`` source characters seeded by ``(seed, epoch, k)``; rank ``r`` of ``world_size``
    takes positions ``r, r + world_size, ...``. Like ``EpochShuffle``: ``set_epoch`` (called by
    Lightning) reseeds, and every rank gets ``ceil(num_examples / world_size)`` positions. It yields
    the rank's local positions ``0, 1, ...`` in order (``DistortedStream`` makes the examples); it is
    a ``DistributedSampler`` so that under DDP Lightning and Fabric keep it instead of sharding the
    rank's positions again.
    """

    def __init__(self, num_sources: int, num_examples: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if num_sources < 1:
            raise ConfigError("NISTP has no training characters to draw from")
        # The positions that even out the ranks are fresh draws, not repeats: the stream's length is
        # the padded one, so torch's padding arithmetic (which SparsityMonitor reads) finds none.
        padded = math.ceil(num_examples / world_size) * world_size
        super().__init__(
            range(padded),  # type: ignore[arg-type]  # torch types it as a Dataset; only its len() is read
            num_replicas=world_size,
            rank=rank,
            shuffle=False,
            seed=seed,
        )
        self.num_sources = num_sources
        self.num_examples = num_examples
        self.world_size = world_size
        self._perm: tuple[tuple[int, int], torch.Tensor] | None = None

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def _permutation(self, k: int) -> torch.Tensor:
        key = (self.epoch, k)
        if self._perm is None or self._perm[0] != key:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, k))
            self._perm = (key, torch.randperm(self.num_sources, generator=generator))
        return self._perm[1]

    def sources(self, start: int, count: int) -> torch.Tensor:
        """Source indices of this rank's local positions ``start .. start + count - 1``."""
        positions = torch.arange(start, start + count) * self.world_size + self.rank
        passes, offsets = positions // self.num_sources, positions % self.num_sources
        out = torch.empty(count, dtype=torch.int64)
        for k in torch.unique(passes).tolist():
            where = passes == k
            out[where] = self._permutation(k)[offsets[where]]
        return out


class DistortedStream(Dataset):
    """One rank's training examples by local position: freshly distorted characters, made
    ``chunk_size`` at a time on ``device``.

    Chunk ``c`` holds positions ``c * chunk_size ...``; its characters and distortions are seeded
    by ``(seed, epoch, rank, c)`` (the epoch: the one ``sampler`` was last set to), so a rerun on
    the same device repeats exactly. ``__getitems__`` serves a batch of positions from the chunk
    that holds them, distorting each chunk once when positions come in order (the sampler's).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        sampler: CyclingSampler,
        transform: BatchTransform,
        strength: float,
        chunk_size: int,
        device: torch.device,
    ) -> None:
        self.x, self.y = x, y
        self.sampler = sampler
        self.transform = transform
        self.strength = strength
        self.chunk_size = chunk_size
        self.device = torch.device(device)
        self._on_device: Batch | None = None
        self._chunk: tuple[tuple[int, int], Batch] | None = None  # the last chunk made, by (epoch, chunk)

    def __len__(self) -> int:
        return len(self.sampler)

    def _source(self) -> Batch:
        if self._on_device is None:  # uploaded once (uint8), not per chunk
            self._on_device = (self.x.to(self.device), self.y.to(self.device))
        return self._on_device

    def _distorted(self, chunk_no: int) -> Batch:
        sampler = self.sampler
        key = (sampler.epoch, chunk_no)
        if self._chunk is None or self._chunk[0] != key:
            x, y = self._source()
            start = chunk_no * self.chunk_size
            idx = sampler.sources(start, min(self.chunk_size, len(sampler) - start)).to(self.device)
            generator = torch.Generator(self.device)
            generator.manual_seed(mix_seed(sampler.seed, sampler.epoch, sampler.rank, chunk_no))
            self._chunk = (key, (self.transform(distort_to_uint8(x[idx], generator, self.strength)), y[idx]))
        return self._chunk[1]

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        pos = torch.as_tensor(positions, dtype=torch.int64)
        chunks, offsets = pos // self.chunk_size, (pos % self.chunk_size).to(self.device)
        first = int(chunks[0])
        if bool((chunks == first).all()):  # a batch of in-order positions lies in one chunk
            first_images, first_labels = self._distorted(first)
            return first_images.index_select(0, offsets), first_labels.index_select(0, offsets)
        images: torch.Tensor | None = None
        labels: torch.Tensor | None = None
        for chunk_no in torch.unique(chunks).tolist():  # positions from several chunks: another sampler's order
            where = (chunks == chunk_no).nonzero().flatten().to(self.device)
            chunk_images, chunk_labels = self._distorted(chunk_no)
            if images is None or labels is None:  # (both are made together, at the first chunk)
                images = chunk_images.new_empty((len(pos), *chunk_images.shape[1:]))
                labels = chunk_labels.new_empty(len(pos))
            images[where] = chunk_images.index_select(0, offsets[where])
            labels[where] = chunk_labels.index_select(0, offsets[where])
        assert images is not None and labels is not None  # positions is not empty: chunks[0] was read
        return images, labels

    def __getitem__(self, position: int) -> Batch:
        images, labels = self.__getitems__([position])
        return images[0], labels[0]
