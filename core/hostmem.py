"""glibc malloc settings for the workbench's processes. By default glibc hands large freed blocks back to the
kernel and faults them in again on the next allocation: thousands of page faults per PyTorch CPU forward
(bench/NOTES.md, fourteenth session). ONNX Runtime allocates from its own arena, so the default would penalise only
the PyTorch CPU backends, for the allocator rather than the runtime. With these settings blocks below MMAP_BYTES
come from the heap, which keeps up to TRIM_BYTES of freed memory instead of returning it."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_BYTES = 64 << 20
TRIM_BYTES = 128 << 20
# read by glibc when a process starts: the same settings for the processes we launch (servers, stubs)
ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_BYTES)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (malloc.h)
_state = {"applied": None}


def keep_freed_memory() -> bool:
    """Apply the settings to this process (mallopt) and to the processes it starts (ENV, unless the caller's
    environment sets them already). False where the C library is not glibc (nothing changes)."""
    if _state["applied"] is not None:
        return _state["applied"]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state["applied"] = False
        return False
    try:
        mmap_bytes = int(os.environ.get("MALLOC_MMAP_THRESHOLD_", MMAP_BYTES))
        trim_bytes = int(os.environ.get("MALLOC_TRIM_THRESHOLD_", TRIM_BYTES))
    except ValueError:   # glibc ignores a value it cannot read: so do we
        mmap_bytes, trim_bytes = MMAP_BYTES, TRIM_BYTES
    _state["applied"] = bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes) and mallopt(_M_TRIM_THRESHOLD, trim_bytes))
    if _state["applied"]:
        os.environ.update(MALLOC_MMAP_THRESHOLD_=str(mmap_bytes), MALLOC_TRIM_THRESHOLD_=str(trim_bytes))
    return _state["applied"]


def describe() -> str:
    """What this process runs with, for the environment recorded beside every result (a process started with
    ENV, like a Triton stub, has them from glibc's start-up)."""
    if _state["applied"] is False:
        return "default (not glibc)"
    mmap_bytes, trim_bytes = (os.environ.get(k) for k in ENV)
    if not (mmap_bytes or trim_bytes):
        return "glibc default"
    mib = lambda v: f"{int(v) >> 20} MiB" if v and v.isdigit() else "default"  # noqa: E731
    return f"glibc mmap threshold {mib(mmap_bytes)}, trim threshold {mib(trim_bytes)}"
