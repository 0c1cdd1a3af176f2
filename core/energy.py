"""GPU energy and cost per audio-hour, from NVML's total-energy counter.

nvmlDeviceGetTotalEnergyConsumption is the GPU's energy since the driver loaded, in millijoules, and it updates
every 20–100 ms: one reading says nothing, and two readings a fraction of a second apart can differ by a whole
update. So EnergyMeter samples the counter through a window of at least MIN_WINDOW_S and the pure functions below
integrate the readings (the error is about one update period at each end: under 5 % at 2 s, less for longer).
The counter covers the whole GPU, every process on it: measure on an otherwise idle GPU.

Cost per audio-hour is the GPU's rental price times the GPU hours one audio-hour takes (the same window's wall
time over the audio seconds it processed). Where NVML is absent, or the backend does not run on the GPU, the figures
are None with the reason, never zero.
"""
from __future__ import annotations

import threading
import time

from .backends.base import on_gpu

MIN_WINDOW_S = 2.0          # shortest window integrated: several counter updates at either end's granularity
SAMPLE_S = 0.1              # the meter reads the counter this often (resets are then found within one step)
UPDATE_S = 0.1              # the counter's slowest update period: a step can hold this much energy at once
COUNTER_MODULUS = 2 ** 64   # the counter is an unsigned long long: it wraps here
MAX_PLAUSIBLE_W = 5000.0    # a step implying more power than any one GPU draws is a counter reset, not energy

# On-demand $/GPU-hour, the middle of the "specialty cloud" range in Mercatus AI's cloud GPU pricing guide
# (https://www.mercatus-ai.com/blog/cloud-gpu-pricing, May 2026). Prices move: pass --gpu-price for your own.
PRICE_SOURCE = "mid 'specialty cloud' on-demand price, Mercatus AI cloud GPU pricing guide, May 2026"
GPU_PRICES_USD_H = {"H200": 4.00, "H100": 3.00, "A100": 1.30}


def price_for(gpu_name: str | None, user_price: float | None = None) -> tuple[float | None, str]:
    """($/hour, where it came from) for a GPU: the user's price first, else the default table by GPU name."""
    if user_price is not None:
        return float(user_price), "set by the user (--gpu-price)"
    for key, price in GPU_PRICES_USD_H.items():
        if gpu_name and key in gpu_name.upper():
            return price, f"{key}: {PRICE_SOURCE}"
    return None, f"no default price for {gpu_name or 'this GPU'} (the table has {', '.join(GPU_PRICES_USD_H)})"


def integrate(readings: list[tuple[float, int]], min_window_s: float = MIN_WINDOW_S) -> dict:
    """Joules between the first and last of (seconds, counter millijoules) readings.

    A step that goes backwards, or forwards by more than any GPU could draw, is a counter reset (driver reload):
    its interval is left out and the window's energy is scaled from the others' mean power (one sample period
    lost). A step that passes the 64-bit top is a wrap and is unwrapped. Returns joules (None when the window
    cannot be integrated), window_s, resets, and reason (None when joules is a measurement)."""
    pts = sorted(readings)
    window = pts[-1][0] - pts[0][0] if len(pts) >= 2 else 0.0
    out = {"joules": None, "window_s": window, "resets": 0, "reason": None}
    if len(pts) < 2 or window < min_window_s:
        out["reason"] = (f"energy window {window:.2f} s is shorter than {min_window_s:g} s: the counter updates only "
                         "every 20–100 ms, so a shorter window cannot be integrated")
        return out
    mj, counted_s = 0, 0.0
    for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
        dt = t1 - t0
        step = (int(e1) - int(e0)) % COUNTER_MODULUS      # a wrap past 2**64 comes out as the small true step
        if step / 1e3 > MAX_PLAUSIBLE_W * max(dt, UPDATE_S):
            out["resets"] += 1                            # went backwards (or absurdly forwards): a reset
            continue
        mj += step
        counted_s += dt
    if counted_s < min_window_s:
        out["reason"] = f"the energy counter reset {out['resets']} time(s) in the window: too little left to integrate"
    elif mj == 0:
        out["reason"] = "the energy counter did not advance in the window (not supported on this GPU?)"
    else:
        out["joules"] = mj / 1e3 * window / counted_s
    return out


def per_audio_hour(joules: float | None, window_s: float, audio_s: float, price_usd_h: float | None) -> dict:
    """Joules and dollars per hour of audio processed in a window of window_s seconds."""
    if audio_s <= 0 or window_s <= 0:
        raise ValueError("audio seconds and window seconds must be positive")
    return {"energy_j_per_audio_h": None if joules is None else joules / audio_s * 3600,
            "avg_power_w": None if joules is None else joules / window_s,
            "usd_per_audio_h": None if price_usd_h is None else price_usd_h * window_s / audio_s}


def _gpu_handle(pynvml):
    """The NVML handle of the GPU PyTorch calls cuda:0 (by UUID, since CUDA_VISIBLE_DEVICES renumbers GPUs)."""
    try:
        import torch
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # noqa: BLE001 - no torch CUDA, or an older torch without .uuid: the first GPU
        return pynvml.nvmlDeviceGetHandleByIndex(0)


class EnergyMeter:
    """with EnergyMeter(device) as m: <work>; m.result(audio_s, price) -> the energy/cost fields of a row.
    Samples the counter every SAMPLE_S in a thread; `why` says why it cannot measure (CPU backend, no NVML)."""

    def __init__(self, device: str, sample_s: float = SAMPLE_S):
        self.device, self.sample_s = device, sample_s
        self.readings: list[tuple[float, int]] = []
        self.why, self.gpu_name, self._handle, self._thread = "", None, None, None
        self._stop = threading.Event()
        self._t0 = self._t1 = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _open(self) -> None:
        if not on_gpu(self.device):
            self.why = f"{self.device} backend: the GPU energy counter does not measure it"
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = _gpu_handle(pynvml)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # NotSupported on GPUs older than Volta
            self._nvml, self._handle = pynvml, handle
            self.gpu_name = pynvml.nvmlDeviceGetName(handle)
        except ImportError:
            self.why = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        except Exception as err:  # noqa: BLE001 - NVMLError_LibraryNotFound, _NotSupported, ...
            self.why = f"NVML energy counter unavailable ({type(err).__name__})"

    def _read(self) -> None:
        try:
            self.readings.append((time.perf_counter(), int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))))
        except Exception:  # noqa: BLE001 - one failed read is a gap, not a measurement of zero
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_s):
            self._read()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def short(self, min_window_s: float = MIN_WINDOW_S) -> bool:
        """Whether the window needs more work before it can be integrated (never, when nothing is measured)."""
        return self.available and self.elapsed() < min_window_s + 2 * self.sample_s

    def __enter__(self):
        self._open()
        self._t0 = time.perf_counter()
        if self.available:
            self._read()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._t1 = time.perf_counter()
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._read()

    def result(self, audio_s: float, gpu_price: float | None = None) -> dict:
        """energy_j_per_audio_h, usd_per_audio_h (None with energy_reason / usd_reason when they cannot be
        measured), avg_power_w, the window, and the price used with its source."""
        window_s = self._t1 - self._t0
        out = {"energy_j_per_audio_h": None, "usd_per_audio_h": None, "avg_power_w": None,
               "energy_window_s": round(window_s, 3), "energy_reason": self.why or None, "usd_reason": None,
               "gpu_price_usd_h": None, "gpu_price_source": None}
        joules = None
        if self.available:
            e = integrate(self.readings)
            joules, out["energy_reason"] = e["joules"], e["reason"]
            window_s = e["window_s"] or window_s
            out["energy_window_s"] = round(window_s, 3)
        if not on_gpu(self.device):
            out["usd_reason"] = f"{self.device} backend: priced per GPU-hour only for GPU backends"
            price = None
        else:
            if self.gpu_name is None:
                from .envinfo import environment
                self.gpu_name = environment().get("gpu")
            price, source = price_for(self.gpu_name, gpu_price)
            out["gpu_price_usd_h"], out["gpu_price_source"] = price, source
            if price is None:
                out["usd_reason"] = source + ": pass --gpu-price"
        out.update({k: v for k, v in per_audio_hour(joules, window_s, audio_s, price).items() if v is not None})
        return out
