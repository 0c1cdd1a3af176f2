"""The environment every result is recorded with: hardware, driver and library versions."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess

LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx-cu13",
             "nvidia-pytriton", "tritonclient", "numpy", "jiwer")


def version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """A flat dict: cpu, gpu, compute capability, driver, CUDA, and library versions."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "gpu": None, "gpu_cc": None,
           "driver": None, "cuda": None}
    try:
        import torch
        env["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_cc"] = "%d.%d" % torch.cuda.get_device_capability(0)
            env["driver"] = _nvidia_driver()
    except ImportError:
        pass
    for lib in LIBRARIES:
        env[lib] = version(lib)
    from .hostmem import describe
    env["malloc"] = describe()   # changes the PyTorch CPU backends' times (core/hostmem.py)
    try:  # with both onnxruntime and onnxruntime-gpu installed, one module is imported: record that one
        import onnxruntime
        env["onnxruntime"] = onnxruntime.__version__
        env["onnxruntime_providers"] = ",".join(onnxruntime.get_available_providers())
    except ImportError:
        pass
    return env


def device_label() -> str:
    env = environment()
    return env["gpu"] or f"CPU ({env['cpu']})"
