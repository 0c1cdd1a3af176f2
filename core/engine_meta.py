"""What a TensorRT engine is (its pipeline spec and settings) and whether it loads here (its meta.json against
the running TensorRT and GPU), in pure Python.

Shared by the engine builder (core.tensorrt) and the loader (core.backends.trt_backend); kept apart from both so
that the loader needs nothing from the builder (the builder checks its engines with the loader)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendUnavailableError, WorkbenchError
from .pipeline.onnx_specs import OnnxExport, OnnxVariant
from .pipeline.store import Spec

TRT_MISSING = "TensorRT not installed: install tensorrt-cu12 or tensorrt-cu13"
PRECISIONS = ("fp32", "fp16", "mixed", "int8")


class EngineIncompatibleError(BackendUnavailableError):
    """A built engine that this TensorRT / GPU cannot load."""


def tensorrt_available() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, TRT_MISSING
    return True, ""


def runtime_env() -> dict:
    """The running TensorRT version and GPU: what an engine must have been built for."""
    env = {"tensorrt": None, "gpu": None, "gpu_cc": None}
    try:
        import tensorrt as trt
        env["tensorrt"] = trt.__version__
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_cc"] = "%d.%d" % torch.cuda.get_device_capability(0)
    except ImportError:
        pass
    return env


def check_compatible(meta: dict, env: dict) -> tuple[bool, str]:
    """Whether an engine with sidecar `meta` loads under `env` (runtime_env()); if not, the exact reason.
    TensorRT plans deserialize only in the exact TensorRT version that built them, and only on GPUs of the
    compute capability they were built for (keyed on those two, not on the GPU's name)."""
    built_trt, built_gpu, built_cc = meta.get("tensorrt"), meta.get("gpu"), meta.get("gpu_cc")
    if not env.get("tensorrt"):
        return False, TRT_MISSING
    if not (built_trt and built_gpu and built_cc):
        return False, "the engine's meta.json does not say which TensorRT and GPU built it"
    if built_trt != env["tensorrt"]:
        return False, (f"the engine was built with TensorRT {built_trt}, but TensorRT {env['tensorrt']} is "
                       "running; engines only load in the TensorRT version that built them")
    if not env.get("gpu"):
        return False, "no CUDA GPU is visible (TensorRT engines run on NVIDIA GPUs only)"
    if built_cc != env.get("gpu_cc"):
        return False, (f"the engine was built for {built_gpu} (compute capability {built_cc}), but this GPU is "
                       f"{env['gpu']} (compute capability {env.get('gpu_cc')})")
    return True, ""   # same TensorRT and compute capability: it loads (kernels tuned on another model of GPU)


def rebuild_hint(meta: dict) -> str:
    return (f"Build it for this machine: python -m core trt-build --model {meta.get('source', '<model>')} --precision "
            f"{meta.get('precision', 'fp16')} (or the Build page).")


def ensure_compatible(meta: dict, env: dict | None = None) -> None:
    ok, reason = check_compatible(meta, env or runtime_env())
    if not ok:
        if reason == TRT_MISSING:
            raise EngineIncompatibleError("TensorRT not installed.", "install tensorrt-cu12 or tensorrt-cu13")
        raise EngineIncompatibleError(f"Cannot load this TensorRT engine: {reason}.", rebuild_hint(meta))




def read_engine_meta(directory: Path) -> dict | None:
    try:
        return json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class EngineBuildError(WorkbenchError):
    pass


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is built for. Audio lengths in seconds; shapes are [batch, samples]."""
    min_seconds: float = 1.0
    opt_seconds: float = 5.0
    max_seconds: float = 30.0
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_gb: float = 4.0
    optimization_level: int = 3  # TensorRT's default; 5 searches longest
    keep_fp32_ops: tuple = ()     # mixed only; empty means pipeline.onnx_specs.DEFAULT_KEEP_FP32

    def validate(self) -> "EngineSettings":
        if not 0 < self.min_seconds <= self.opt_seconds <= self.max_seconds:
            raise EngineBuildError(f"Audio lengths must satisfy 0 < min <= opt <= max (got {self.min_seconds}, "
                                   f"{self.opt_seconds}, {self.max_seconds}).", "e.g. --min-seconds 1 "
                                   "--opt-seconds 5 --max-seconds 30")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineBuildError(f"Batch sizes must satisfy 1 <= min <= opt <= max (got {self.min_batch}, "
                                   f"{self.opt_batch}, {self.max_batch}).", "e.g. --max-batch 8")
        if self.workspace_gb <= 0 or not 0 <= self.optimization_level <= 5:
            raise EngineBuildError("Workspace must be positive and the optimization level 0-5.", "--workspace-gb 4")
        return self

    def profile(self, rate: int) -> dict:
        """min/opt/max shapes of every input, [batch, samples]."""
        n = lambda s: int(round(s * rate))  # noqa: E731
        return {"min": [self.min_batch, n(self.min_seconds)], "opt": [self.opt_batch, n(self.opt_seconds)],
                "max": [self.max_batch, n(self.max_seconds)]}

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "keep_fp32_ops": list(self.keep_fp32_ops)}


def strongly_typed(precision: str) -> bool:
    """INT8 engines are built from the Q/DQ ONNX as strongly typed networks; FP16/mixed too where TensorRT no
    longer has weak typing (its FP16 builder flag is gone in TensorRT 11), from the ONNX variants."""
    if precision == "int8":
        return True
    if precision not in ("fp16", "mixed"):
        return False
    try:
        import tensorrt as trt
    except ImportError:
        return False
    return not hasattr(trt.BuilderFlag, "FP16")


class TrtEngine(Spec):
    """A TensorRT engine: built from the FP32 export (TensorRT lowers precision itself) or an ONNX variant
    (strongly typed builds), for one TensorRT version and compute capability."""
    name, file = "trt", "model.plan"

    def __init__(self, loaded, precision: str, settings: EngineSettings | None = None, env: dict | None = None):
        if precision not in PRECISIONS:
            raise EngineBuildError(f"Unknown TensorRT precision '{precision}'.",
                                   f"Choose from {', '.join(PRECISIONS)}.")
        self.engine_settings = (settings or EngineSettings()).validate()
        self.env = env or runtime_env()
        self.strong = strongly_typed(precision)
        parent = OnnxVariant(loaded, precision) if self.strong else OnnxExport(loaded)
        super().__init__(loaded, precision, parent, {**self.engine_settings.as_dict(),
                                                     "typing": "strong" if self.strong else "weak"})

    def toolchain(self) -> dict:
        return {"tensorrt": self.env["tensorrt"], "gpu_cc": self.env["gpu_cc"]}
