"""Bad data for tests: data modules with NaN inputs (for the divergence guard's tests, usable from the
CLI as ``--data=helpers.bad_data.NaNDigits``, since the tests folder is on ``sys.path`` under pytest),
and files whose headers lie about what follows them."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from lightning_rect.data import DigitsDataModule
from lightning_rect.data.base import Split


class NaNDigits(DigitsDataModule):
    """The bundled digits with one NaN pixel in example ``example`` of ``split``."""

    def __init__(
        self,
        split: Literal["train", "val", "test"] = "train",
        example: int = 3,
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        labeled_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.split = split
        self.example = example

    def load_splits(self) -> dict[str, Split]:
        splits = super().load_splits()
        x, y = splits[self.split]
        x = x.clone()
        x[self.example, 5] = float("nan")
        return {**splits, self.split: (x, y)}


def gzip_with_zeros(path: Path, header: bytes, zeros: int) -> Path:
    """``path``: a gzip stream of ``header`` and then ``zeros`` zero bytes, whatever the header announces
    (64 MB of zeros compress to about 64 KB: a small file that decompresses to far more)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    block = bytes(1 << 20)
    parts = [compressor.compress(header)]
    parts += [compressor.compress(block) for _ in range(zeros >> 20)]
    parts += [compressor.compress(bytes(zeros & ((1 << 20) - 1))), compressor.flush()]
    path.write_bytes(b"".join(parts))
    return path


def peak_memory_of(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    """The exception ``action()`` raised (None if none) and the peak of the memory Python and numpy
    allocated meanwhile, in bytes (``tracemalloc``: in this process, no child)."""
    tracemalloc.start()
    try:
        action()
        raised = None
    except Exception as err:  # noqa: BLE001 - the caller checks what it is
        raised = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak
