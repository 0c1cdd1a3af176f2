"""More than one GPU: which GPUs a Triton model's instances go to (`--gpus all` or a list of indices), and how busy
each GPU was while a sweep level ran (NVML utilisation sampled in a background thread)."""
from __future__ import annotations

import contextlib
import socket
import threading

from ..errors import WorkbenchError

ALL = "all"
SAMPLE_S = 0.1   # NVML's utilisation is the share of its own last 1/6-1 s window with a kernel running


class GpuSelectionError(WorkbenchError):
    pass


def parse_gpus(tokens, available: int | None = None) -> str | tuple[int, ...] | None:
    """`--gpus` words -> None (not given), ALL, or distinct GPU indices in the order given. `available`: how many
    GPUs the caller can see (None: the list is for another machine, e.g. an exported model repository)."""
    if tokens is None:
        return None
    words = [str(t).strip().lower() for t in tokens]
    hint = "Give --gpus all, or GPU indices such as --gpus 0 1."
    if not words:
        raise GpuSelectionError("--gpus needs 'all' or at least one GPU index.", hint)
    if ALL in words:
        if len(words) > 1:
            raise GpuSelectionError(f"--gpus {' '.join(words)}: 'all' cannot be combined with indices.", hint)
        return ALL
    try:
        ids = [int(w) for w in words]
    except ValueError:
        raise GpuSelectionError(f"--gpus {' '.join(words)}: GPU indices are whole numbers.", hint) from None
    if any(i < 0 for i in ids):
        raise GpuSelectionError(f"--gpus {' '.join(words)}: GPU indices start at 0.", hint)
    if len(set(ids)) < len(ids):
        raise GpuSelectionError(f"--gpus {' '.join(words)}: a GPU is listed twice.",
                                "List each GPU once; --instances sets how many instances each one runs.")
    if available is not None and max(ids) >= available:
        raise GpuSelectionError(f"--gpus {' '.join(words)}: this machine has {available} GPU(s) visible "
                                f"(indices 0-{available - 1})." if available else
                                f"--gpus {' '.join(words)}: no GPU is visible here.",
                                "nvidia-smi lists them; CUDA_VISIBLE_DEVICES renumbers them from 0.")
    return tuple(ids)


def visible_gpus() -> int:
    """GPUs this process can use (CUDA's count, so CUDA_VISIBLE_DEVICES applies); 0 without CUDA."""
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


@contextlib.contextmanager
def on_device(index: int | None):
    """Make `index` the current CUDA device for the block: backends that place their work on "cuda" (torch, fast)
    then allocate, capture and run on that GPU. The current device is per thread, so every call must be inside."""
    if index is None:
        yield
        return
    import torch
    with torch.cuda.device(index):
        yield


def local_url(url: str) -> bool:
    """Whether a host:port names this machine (NVML sees only local GPUs)."""
    host = url.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "") or host in (socket.gethostname(), socket.getfqdn())


class GpuLoad:
    """with GpuLoad() as g: <work>; g.result() -> {"gpu_load": [per GPU: index, name, mean/max utilisation %, mean
    memory-controller %, max memory used MB, mean/min SM clock MHz (None where unreadable), samples] or None,
    "gpu_load_reason": why None, else None}. The clock tells a level the GPU ran slower in from one it was fed less."""

    def __init__(self, sample_s: float = SAMPLE_S, why_not: str | None = None):
        self.sample_s, self.why = sample_s, why_not or ""
        self.samples: list[list[tuple[int, int, float, int | None]]] = []
        self.names: list[str] = []
        self.handles: list = []
        self._stop, self._thread = threading.Event(), None

    def _open(self) -> None:
        if self.why:
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.names = [str(pynvml.nvmlDeviceGetName(h)) for h in self.handles]
            if not self.handles:
                self.why = "NVML sees no GPU on this machine"
        except ImportError:
            self.why = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        except Exception as err:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no NVIDIA driver
            self.why = f"NVML unavailable ({type(err).__name__}): no NVIDIA driver on this machine"
        self.samples = [[] for _ in self.handles] if not self.why else []

    def _read(self) -> None:
        for i, h in enumerate(self.handles):
            try:
                u = self.nvml.nvmlDeviceGetUtilizationRates(h)
                used = self.nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
            except Exception:  # noqa: BLE001 - one failed read is a gap, not an idle GPU
                continue
            try:
                clock = int(self.nvml.nvmlDeviceGetClockInfo(h, self.nvml.NVML_CLOCK_SM))
            except Exception:  # noqa: BLE001 - some virtual GPUs do not report clocks
                clock = None
            self.samples[i].append((int(u.gpu), int(u.memory), float(used), clock))

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_s):
            self._read()

    def __enter__(self):
        self._open()
        if self.handles and not self.why:
            self._read()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._read()

    def result(self) -> dict:
        if self.why:
            return {"gpu_load": None, "gpu_load_reason": self.why}
        load = []
        for i, (name, s) in enumerate(zip(self.names, self.samples)):
            if not s:
                continue
            util, mem, used, clock = zip(*s)
            clock = [c for c in clock if c is not None]
            load.append({"gpu": i, "name": name, "util_mean_pct": sum(util) / len(util), "util_max_pct": max(util),
                         "mem_util_mean_pct": sum(mem) / len(mem), "mem_used_max_mb": max(used),
                         "sm_clock_mean_mhz": sum(clock) / len(clock) if clock else None,
                         "sm_clock_min_mhz": min(clock) if clock else None, "samples": len(s)})
        return {"gpu_load": load or None, "gpu_load_reason": None if load else "every NVML read failed"}


__all__ = ["ALL", "GpuLoad", "GpuSelectionError", "local_url", "on_device", "parse_gpus", "visible_gpus"]
