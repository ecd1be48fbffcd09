"""Keep freed heap memory in the process, so training steps do not page-fault their buffers back in.

Every step frees the gradients (``zero_grad(set_to_none=True)``) and the activations, then the next
step allocates the same sizes again. With glibc's default dynamic thresholds, blocks of a few MB
are often handed back to the OS (``munmap`` or a heap trim) and the next step touches them anew:
measured on the MNIST network at minibatch 10 under the Trainer, about 1,400 page faults per step,
against about 15 with the settings below. This is the glibc counterpart of the jemalloc/tcmalloc
advice for PyTorch on CPU.

The CLI calls ``retain_freed_memory()`` once at start-up; importing the package changes nothing.
Call it yourself in your own scripts if you want the same effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve every allocation from the heap (no per-block ``mmap``) and return freed memory to the
    OS only once more than ``trim_threshold`` bytes are free at the top of the heap.

    Returns False, changing nothing, where the C library is not glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim = min(trim_threshold, 2**31 - 1)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
