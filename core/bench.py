"""Latency harness: warm-up, many repeats, device synchronisation, percentiles."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from .envinfo import environment


@contextmanager
def timed(device: str, out: list):
    """Append the elapsed milliseconds of the block: CUDA events on GPU backends, perf_counter on CPU."""
    if device in ("cuda", "tensorrt"):
        import torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        yield
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    else:
        t = time.perf_counter()
        yield
        out.append((time.perf_counter() - t) * 1e3)


def summarize(times_ms: list[float], audio_seconds: float, batch: int) -> dict:
    t = np.asarray(times_ms)
    p50 = float(np.percentile(t, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
            "mean_ms": float(t.mean()), "std_ms": float(t.std()), "min_ms": float(t.min()), "repeats": len(t),
            # real-time factor: compute time per second of audio (lower is better)
            "rtf": p50 / 1e3 / (audio_seconds * batch),
            "audio_s_per_s": audio_seconds * batch / (p50 / 1e3), "items_per_s": batch / (p50 / 1e3)}


def speech_input(loaded, seconds: float, batch: int, source: np.ndarray | None = None, seed: int = 0):
    """Model inputs of exactly `seconds` per item: real speech tiled to length when given, else seeded noise
    (never zeros, which can run faster than real data)."""
    from .transcribe import features
    n = int(seconds * loaded.sample_rate)
    rng = np.random.default_rng(seed)
    items = []
    for b in range(batch):
        if source is not None and len(source):
            base = np.tile(source, int(np.ceil((n + len(source)) / len(source))))
            off = int(rng.integers(0, len(source)))
            items.append(base[off:off + n])
        else:
            items.append((0.1 * rng.standard_normal(n)).astype(np.float32))
    return features(loaded.processor, items, loaded.sample_rate)


def bench_backend(backend, loaded, seconds_list=(1, 5, 10), batches=(1, 8), warmup: int = 5,
                  repeats: int = 30, source: np.ndarray | None = None, progress=None) -> list[dict]:
    """One result row per (audio length, batch) for a loaded backend."""
    rows = []
    env = environment()
    for seconds in seconds_list:
        for batch in batches:
            values, mask = speech_input(loaded, seconds, batch, source)
            for _ in range(warmup):
                backend.logits(values, mask)
            times: list[float] = []
            for _ in range(repeats):
                with timed(backend.device, times):
                    backend.logits(values, mask)
            row = {"kind": "latency", "model": loaded.source, "model_label": loaded.label,
                   "random_weights": loaded.random_weights, "backend": backend.name, "runtime": backend.spec.runtime,
                   "precision": backend.precision, "device": backend.device, "audio_s": seconds, "batch": batch,
                   "warmup": warmup, **summarize(times, seconds, batch), "env": env}
            rows.append(row)
            if progress:
                progress(row)
    return rows
