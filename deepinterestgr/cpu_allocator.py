"""Keep freed memory inside the process on glibc, so that CPU training does not page-fault its tensors in every step.

glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it to the
kernel on `free`; a CPU training step allocates and frees the same large tensors every step (the identity table's
dense gradient is 32 MiB on Beauty, the catalog's item vectors and item logits several MiB each), so each step pays
the kernel to zero and map those pages again. With mmap off and the heap never trimmed, freed blocks are reused as
PyTorch's own caching allocator reuses GPU memory: measured 1.19x per generator training step on Beauty, 2 threads
(`benchmarks/bench_train_path.py`). The price is that the process keeps its peak heap until it exits.

`DIG_KEEP_FREED_MEMORY=0` leaves glibc's defaults alone. jemalloc/tcmalloc (`LD_PRELOAD`) do the same job where
installed; they are not on the package index, so this is the dependency-free route.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest trim threshold mallopt accepts (an int); the heap is never trimmed below it
NEVER_TRIM = 2**31 - 1
ENV = "DIG_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Turn glibc's mmap and heap trimming off for the rest of the process. True where it took effect; False on a
    non-glibc libc (macOS, musl), when `DIG_KEEP_FREED_MEMORY=0`, or when mallopt refuses."""
    if os.environ.get(ENV, "1") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    if not ok:
        log.debug("mallopt refused; glibc's allocator keeps its defaults")
    return ok


def restore_defaults() -> None:
    """glibc's defaults again (mmap for large blocks, trim at 128 KiB), and give the free heap top back."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_MAX, 65536)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)


def _glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # only glibc has mallopt with these meanings (and gnu_get_libc_version names it)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc
