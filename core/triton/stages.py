"""Host-side time of each stage of a served batch, summarised while the server runs and when it stops: where a
batch's server time goes besides the GPU (two H200s: 17-35 ms a batch in the server against 3.6 ms of GPU time;
bench/NOTES.md)."""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager

import numpy as np

PREFIX = "STAGES"   # the summary line's first word in the server log (bench/gpu_multi.py prints those lines)
_LINE = re.compile(rf"^{PREFIX} (?P<label>.*) batches (?P<n>\d+)(?: at (?P<t0>[\d.]+)-(?P<t1>[\d.]+))? \| "
                   r"p50/p90 ms: (?P<stages>.*)$")


class StageTimes:
    """Printed every `every_s` seconds of serving (after a batch; default WORKBENCH_STAGES_EVERY_S or 10), and before
    a batch that comes after `gap_s` idle seconds (default WORKBENCH_STAGES_GAP_S or 1), each summary over the
    batches since the last one, which are then dropped: a long-running server keeps only one interval's times, a
    server stopped by force (the Python backend's finalize() never runs) has still printed its own, and no summary
    spans an idle gap, so the levels of a load test, which start seconds apart, are summarised one by one."""

    def __init__(self, label: str = "", every_s: float | None = None, gap_s: float | None = None):
        self.label, self.ms = label, {}
        self.every_s = float(os.environ.get("WORKBENCH_STAGES_EVERY_S", 10)) if every_s is None else every_s
        self.gap_s = float(os.environ.get("WORKBENCH_STAGES_GAP_S", 1)) if gap_s is None else gap_s
        self.last = time.monotonic()
        self.span = None   # wall-clock time of the first stage and of the last batch's end, since the last summary

    def batch_done(self) -> None:
        now = time.time()
        self.span = (self.span[0] if self.span else now, now)
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.ms:
            print(self.summary(), flush=True)
        self.ms, self.span = {}, None

    @contextmanager
    def __call__(self, stage: str):
        now = time.time()
        if self.span and now - self.span[1] >= self.gap_s:   # the first stage of a batch after a pause
            self.flush()
        if self.span is None:
            self.span = (now, now)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms.setdefault(stage, []).append((time.perf_counter() - start) * 1e3)

    def summary(self) -> str:
        """'STAGES <label> batches N at <t0>-<t1> | stage p50/p90 ms ...' over the batches since the last summary,
        t0 and t1 their wall-clock span in Unix seconds (run queues the GPU work, to_host waits for it)."""
        n = max((len(v) for v in self.ms.values()), default=0)
        at = f" at {self.span[0]:.3f}-{self.span[1]:.3f}" if self.span else ""
        parts = [f"{k} {np.percentile(v, 50):.2f}/{np.percentile(v, 90):.2f}" for k, v in self.ms.items()]
        return f"{PREFIX} {self.label} batches {n}{at} | p50/p90 ms: " + ", ".join(parts)


def parse_summary(line: str) -> dict | None:
    """A summary line back as {"label", "batches", "t0", "t1", "p50": {stage: ms}, "p90": {...}}; None for any other
    line (t0 and t1 are None in lines written before they were added)."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    p50, p90 = {}, {}
    for part in filter(None, m["stages"].split(", ")):
        stage, _, values = part.rpartition(" ")
        p50[stage], p90[stage] = (float(v) for v in values.split("/"))
    return {"label": m["label"], "batches": int(m["n"]), "t0": float(m["t0"]) if m["t0"] else None,
            "t1": float(m["t1"]) if m["t1"] else None, "p50": p50, "p90": p90}
