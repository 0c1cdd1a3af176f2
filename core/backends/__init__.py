"""Backend registry: one place that turns a spec string into a ready backend, or says why it can't."""
from __future__ import annotations

import importlib

from ..errors import BackendUnavailableError
from .base import PRECISIONS, Backend, BackendSpec

# Every backend the workbench knows, in the order the UI offers them.
KNOWN = ["torch:fp32:cpu", "torch:fp32:cuda", "torch:fp16:cuda", "torch:bf16:cuda",
         "ort:fp32:cpu", "ort:int8:cpu", "ort:fp32:cuda", "ort:fp16:cuda", "ort:mixed:cuda", "ort:int8:cuda",
         "ort:fp16:tensorrt", "trt:fp32:cuda", "trt:fp16:cuda", "trt:mixed:cuda", "trt:int8:cuda"]


def _cuda_ok() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch not installed: pip install torch"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    return True, ""


def availability(spec: str | BackendSpec) -> tuple[bool, str]:
    """(usable here, why not) without loading any model."""
    spec = BackendSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.precision not in PRECISIONS:
        return False, f"unknown precision '{spec.precision}'"
    if spec.runtime == "torch":
        if spec.precision not in ("fp32", "fp16", "bf16"):
            return False, "PyTorch runs fp32/fp16/bf16 only"
        return _cuda_ok() if spec.device == "cuda" else (True, "")
    if spec.runtime == "ort":
        from .ort_backend import ort_available
        return ort_available(spec.device)
    if spec.runtime == "trt":
        try:
            mod = importlib.import_module(".trt_backend", __name__)
        except ImportError:
            return False, "TensorRT backend not built into this version"
        return mod.trt_available()
    if spec.runtime == "triton":
        return True, ""
    return False, f"unknown runtime '{spec.runtime}'"


def make_backend(spec: str | BackendSpec, loaded, **options) -> Backend:
    """A backend for `loaded` (core.models.LoadedModel), not yet loaded. ONNX files and engines the
    spec needs are built (or taken from the artifact cache) here."""
    spec = BackendSpec.parse(spec) if isinstance(spec, str) else spec
    ok, why = availability(spec)
    if not ok:
        head, _, hint = why.partition(": ")
        raise BackendUnavailableError(f"Backend {spec} is not available: {head}.", hint or "Pick another backend.")
    if spec.runtime == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(spec, loaded)
    if spec.runtime == "ort":
        from ..export import ensure_onnx
        from .ort_backend import OrtBackend
        return OrtBackend(spec, ensure_onnx(loaded, spec.precision), **options)
    if spec.runtime == "trt":
        mod = importlib.import_module(".trt_backend", __name__)
        return mod.make(spec, loaded, **options)
    if spec.runtime == "triton":
        mod = importlib.import_module(".triton_backend", __name__)
        return mod.make(spec, loaded, **options)
    raise BackendUnavailableError(f"Unknown runtime '{spec.runtime}'.", "Use torch, ort, trt or triton.")


def catalogue() -> list[dict]:
    """Every known backend with whether it runs here, for `info` and the dashboard."""
    return [{"backend": s, "available": ok, "why": why} for s in KNOWN for ok, why in [availability(s)]]


__all__ = ["Backend", "BackendSpec", "KNOWN", "availability", "catalogue", "make_backend"]
