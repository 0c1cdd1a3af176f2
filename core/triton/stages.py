"""Host-side time of each stage of a served batch, summarised while the server runs and when it stops: where a
batch's server time goes besides the GPU (two H200s: 17-35 ms a batch in the server against 3.6 ms of GPU time;
bench/NOTES.md)."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np

PREFIX = "STAGES"   # the summary line's first word in the server log (bench/gpu_multi.py prints those lines)


class StageTimes:
    """Printed every `every_s` seconds of serving (after a batch; default WORKBENCH_STAGES_EVERY_S or 10), each summary
    over the batches since the last one, which are then dropped: a long-running server keeps only one interval's
    times, and a server stopped by force (the Python backend's finalize() never runs) has still printed its own."""

    def __init__(self, label: str = "", every_s: float | None = None):
        self.label, self.ms = label, {}
        self.every_s = float(os.environ.get("WORKBENCH_STAGES_EVERY_S", 10)) if every_s is None else every_s
        self.last = time.monotonic()

    def batch_done(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            print(self.summary(), flush=True)
            self.ms = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms.setdefault(stage, []).append((time.perf_counter() - start) * 1e3)

    def summary(self) -> str:
        """'STAGES <label> batches N | stage p50/p90 ms ...' over the batches since the last summary (run queues the
        GPU work, to_host waits for it)."""
        n = max((len(v) for v in self.ms.values()), default=0)
        parts = [f"{k} {np.percentile(v, 50):.2f}/{np.percentile(v, 90):.2f}" for k, v in self.ms.items()]
        return f"{PREFIX} {self.label} batches {n} | p50/p90 ms: " + ", ".join(parts)
