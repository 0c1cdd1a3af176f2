"""Instances that share one GPU taking turns at it: one batch's GPU work at a time.

Two instance processes that submit batches together share the GPU in time slices, so both batches end late and
together, their clients come back together, and the next two batches collide again. On an H200 (two Python-backend
instances, concurrency 16, thirteenth session) levels where that happened served batches of ~6 rows in ~7 ms of
compute, the others ~7.7 rows in ~5.5 ms: 63 % against 86 % of in-process. With turns, the second batch starts when
the first has ended, and one instance's host work (inputs, padding, responses) runs under the other's GPU work.
Not measured on a GPU yet (bench/gpu_issue16.sh triton with TURNS=1), so off by default."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


class GpuTurn:
    """An exclusive turn on one GPU among the instances that open the same file: processes (Triton's Python
    backend) or threads (PyTriton) alike, each with its own GpuTurn. flock, so the kernel ends the turn of an
    instance that dies holding it and the others never wait on a dead one."""

    def __init__(self, path: str | Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> "GpuTurn":
        fcntl.flock(self.fd, fcntl.LOCK_EX)   # blocks outside the GIL
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


def turn_file(folder: str | Path, gpu: int | None) -> Path:
    """The file the instances on `gpu` (None: the backend's own, current device) take their turns on."""
    return Path(folder) / f"gpu-{'current' if gpu is None else gpu}.turn"
