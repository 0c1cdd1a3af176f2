"""Peak memory of a backend while it loads and runs: device memory (PyTorch's allocator peak, and NVML's
per-process usage, which also sees ONNX Runtime's and a Triton server's allocations) and host RSS."""
from __future__ import annotations

import os
import threading

from .backends.base import on_gpu

SAMPLE_S = 0.02


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class _Nvml:
    """GPU memory used by a set of processes, through nvidia-ml-py; `why` says why it cannot tell."""

    def __init__(self):
        self.handles, self.why = [], ""
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except ImportError:
            self.why = "nvidia-ml-py not installed"
        except Exception as err:  # noqa: BLE001 - NVMLError_LibraryNotFound etc.: no NVIDIA driver here
            self.why = f"NVML unavailable ({type(err).__name__})"

    def used_mb(self, pids: set[int]) -> float | None:
        total, seen = 0, False
        for h in self.handles:
            try:
                procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(h)
            except Exception:  # noqa: BLE001
                continue
            for p in procs:
                if p.pid in pids and p.usedGpuMemory is not None:
                    total += p.usedGpuMemory
                    seen = True
        return total / 2**20 if seen else None


class MemoryTracker:
    """with MemoryTracker(device, pids) as m: ...; m.result() -> peak_host_rss_mb, peak_device_mb, peak_mem_mb
    (the device figure for GPU backends, host RSS otherwise), mem_scope and, when a figure is missing, mem_note."""

    def __init__(self, device: str, pids=()):
        self.gpu = on_gpu(device)
        self.pids = {os.getpid(), *pids}
        self.peak_rss = 0.0
        self.peak_nvml: float | None = None
        self._stop = threading.Event()

    def _sample(self):
        rss = sum(v for p in self.pids if (v := rss_mb(p)) is not None)
        self.peak_rss = max(self.peak_rss, rss)
        if self.nvml and self.nvml.handles:
            used = self.nvml.used_mb(self.pids)
            if used is not None:
                self.peak_nvml = max(self.peak_nvml or 0.0, used)

    def _loop(self):
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def __enter__(self):
        self.nvml = _Nvml() if self.gpu else None
        if self.gpu:
            import torch
            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.torch_peak = None
        if self.gpu:
            import torch
            self.torch_peak = torch.cuda.max_memory_allocated() / 2**20

    def result(self) -> dict:
        out = {"peak_host_rss_mb": round(self.peak_rss, 1), "peak_device_mb": None, "mem_scope": "host"}
        if self.gpu:
            device = [v for v in (self.torch_peak, self.peak_nvml) if v]
            out["peak_device_mb"] = round(max(device), 1) if device else None
            out["mem_scope"] = "device"
            if self.peak_nvml is None:
                out["mem_note"] = (f"device peak from PyTorch's allocator only ({self.nvml.why or 'NVML saw no usage'}"
                                   "): ONNX Runtime / TensorRT / Triton allocations are not in it")
        out["peak_mem_mb"] = out["peak_device_mb"] if self.gpu else out["peak_host_rss_mb"]
        return out
