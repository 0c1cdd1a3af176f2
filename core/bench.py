"""The one timing protocol: every latency figure of the CLI, the dashboard and bench/ comes from here.

Two scopes, named in every row:
  compute  prepared device inputs -> device logits (Backend.prepare once, Backend.run timed; CUDA events
           around it on GPU backends, after a device synchronisation);
  e2e      audio arrays -> features -> forward -> greedy text (wall clock: what a user waits for).
Per row: warm-up, then measurement windows of `repeats` calls until the p50s of the last three windows agree
within STABLE_WITHIN (perf_analyzer's stability rule), at most `max_windows`; percentiles and a bootstrap
95 % interval of p50 over those three windows. Cold start (load, first call on the shape) is reported apart.
Energy: NVML's GPU energy counter is read through the timed windows of each row (topped up with more calls
to at least core.energy.MIN_WINDOW_S) -> joules and dollars per audio-hour; None with a reason off the GPU.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from .backends.base import on_gpu
from .energy import EnergyMeter
from .envinfo import environment
from .memory import MemoryTracker

SCOPES = ("compute", "e2e")
STABLE_WITHIN = 0.05     # the last three window p50s within 5 % of each other
MIN_WINDOWS, MAX_WINDOWS = 3, 8
@contextmanager
def timed(device: str, out: list):
    """Append the elapsed milliseconds of the block: CUDA events on GPU backends, perf_counter otherwise."""
    if on_gpu(device):
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


def sync(device: str) -> None:
    if on_gpu(device):
        import torch
        torch.cuda.synchronize()


def bootstrap_ci(times_ms, q: float = 50, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap confidence interval of the q-th percentile."""
    t = np.asarray(times_ms, dtype=np.float64)
    rng = np.random.default_rng(seed)
    stats = np.percentile(t[rng.integers(0, len(t), size=(n, len(t)))], q, axis=1)
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def stable(window_p50s: list[float], within: float = STABLE_WITHIN) -> bool:
    last = window_p50s[-MIN_WINDOWS:]
    return len(last) == MIN_WINDOWS and max(last) <= min(last) * (1 + within)


def measure(fn, device: str, warmup: int, repeats: int, max_windows: int = MAX_WINDOWS) -> dict:
    """Warm-up calls, then windows of `repeats` timed calls until stable (or max_windows)."""
    for _ in range(warmup):
        fn()
    windows: list[list[float]] = []
    while len(windows) < max(max_windows, MIN_WINDOWS):
        times: list[float] = []
        for _ in range(repeats):
            with timed(device, times):
                fn()
        windows.append(times)
        if stable([float(np.percentile(w, 50)) for w in windows]):
            break
    p50s = [float(np.percentile(w, 50)) for w in windows]
    return {"times": [t for w in windows[-MIN_WINDOWS:] for t in w], "window_p50s": p50s, "stable": stable(p50s)}


def summarize(times_ms, audio_seconds: float, batch: int) -> dict:
    t = np.asarray(times_ms)
    p50 = float(np.percentile(t, 50))
    lo, hi = bootstrap_ci(t)
    return {"p50_ms": p50, "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
            "p50_ci95_ms": [lo, hi], "mean_ms": float(t.mean()), "std_ms": float(t.std()), "min_ms": float(t.min()),
            "repeats": len(t),
            # real-time factor: time per second of audio (lower is better)
            "rtf": p50 / 1e3 / (audio_seconds * batch),
            "audio_s_per_s": audio_seconds * batch / (p50 / 1e3), "items_per_s": batch / (p50 / 1e3)}


def speech_items(loaded, seconds: float, batch: int, source: np.ndarray | None = None, seed: int = 0):
    """`batch` clips of exactly `seconds`: real speech tiled to length from a random offset each when given,
    else seeded noise (never zeros, which can run faster than real data)."""
    n = int(seconds * loaded.sample_rate)
    rng = np.random.default_rng(seed)
    if source is not None and len(source):
        return [tile_speech(source, n, rng) for _ in range(batch)]
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(batch)]


def tile_speech(source: np.ndarray, n: int, rng) -> np.ndarray:
    """n samples of `source` laid end to end, from a random offset (every item a different stretch)."""
    base = np.tile(source, int(np.ceil((n + len(source)) / len(source))))
    off = int(rng.integers(0, len(source)))
    return base[off:off + n].astype(np.float32)


def speech_input(loaded, seconds: float, batch: int, source: np.ndarray | None = None, seed: int = 0):
    """speech_items as model inputs (input_values, attention_mask)."""
    from .transcribe import features
    return features(loaded.processor, speech_items(loaded, seconds, batch, source, seed), loaded.sample_rate)


def scope_call(scope: str, backend, loaded, items):
    """The no-argument call a scope times, on these audio items."""
    from .transcribe import features, transcribe_batch
    if scope == "compute":
        prepared = backend.prepare(*features(loaded.processor, items, loaded.sample_rate))
        return lambda: backend.run(prepared)
    if scope == "e2e":
        return lambda: transcribe_batch(items, backend, loaded)
    raise ValueError(f"unknown scope {scope!r} (use {', '.join(SCOPES)})")


def bench_backend(backend, loaded, seconds_list=(1, 5, 10), batches=(1, 8), warmup: int = 5, repeats: int = 30,
                  source: np.ndarray | None = None, progress=None, scopes=SCOPES, max_windows: int = MAX_WINDOWS,
                  load_s: float | None = None, gpu_price: float | None = None) -> list[dict]:
    """One latency row per (scope, audio length, batch) for a loaded backend, with its energy and cost per
    audio-hour (`gpu_price` $/hour, else core.energy's default table)."""
    env = environment()
    rows = []
    for seconds in seconds_list:
        for batch in batches:
            items = speech_items(loaded, seconds, batch, source)
            for scope in scopes:
                fn = scope_call(scope, backend, loaded, items)
                t = time.perf_counter()
                fn()                       # the first call on this shape: compiles/captures on some backends
                sync(backend.device)
                first_call_s = time.perf_counter() - t
                for _ in range(warmup):
                    fn()
                with EnergyMeter(backend.device) as meter:   # the timed windows, + calls up to a window NVML resolves
                    m = measure(fn, backend.device, 0, repeats, max_windows)
                    calls = repeats * len(m["window_p50s"])
                    while meter.short():
                        fn()
                        calls += 1
                    sync(backend.device)
                row = {"kind": "latency", "scope": scope, "model": loaded.source, "model_label": loaded.label,
                       "random_weights": loaded.random_weights, **backend.row_fields(),
                       "audio_s": seconds, "batch": batch, "warmup": warmup, **summarize(m["times"], seconds, batch),
                       "stable": m["stable"], "windows": len(m["window_p50s"]), "window_p50s": m["window_p50s"],
                       "load_s": load_s, "first_call_s": first_call_s,
                       "cold_start_s": None if load_s is None else load_s + first_call_s,
                       **meter.result(calls * seconds * batch, gpu_price), "env": env}
                rows.append(row)
                if progress:
                    progress(row)
    return rows


def bench_spec(spec: str, loaded, seconds_list=(1, 5, 10), batches=(1, 8), warmup: int = 5, repeats: int = 30,
               scopes=SCOPES, source: np.ndarray | None = None, progress=None, options: dict | None = None,
               max_windows: int = MAX_WINDOWS, gpu_price: float | None = None) -> list[dict]:
    """Load a backend, measure it, close it: latency rows (with cold start, peak memory, energy and cost per
    audio-hour) + one memory row."""
    from .backends import make_backend
    backend = make_backend(spec, loaded, **(options or {}))
    with MemoryTracker(backend.device, pids=backend.server_pids()) as mem:
        t = time.perf_counter()
        backend.load()
        try:
            sync(backend.device)
            load_s = time.perf_counter() - t
            rows = bench_backend(backend, loaded, seconds_list, batches, warmup, repeats, source, progress, scopes,
                                 max_windows, load_s, gpu_price)
        finally:
            backend.close()
    peak = mem.result()
    for row in rows:
        row.update(peak)
    memory = {"kind": "memory", "model": loaded.source, "model_label": loaded.label,
              "random_weights": loaded.random_weights, **backend.row_fields(), "load_s": load_s, **peak,
              "env": environment()}
    return rows + [memory]
