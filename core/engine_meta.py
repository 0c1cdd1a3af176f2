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
RTX_MISSING = "TensorRT for RTX not installed: pip install tensorrt-rtx-cu13==1.7.1.116"
PRECISIONS = ("fp32", "fp16", "mixed", "int8", "int4w", "fp8", "bf16", "int8w")
# precision -> why TensorRT 10 (flavor "trt") does not build it. Its documentation: "TensorRT quantizes activations and
# weights for INT8, FP8, and FP4. Weight-only quantization is supported for INT4." (TensorRT 10.11, Working with
# Quantized Types). TensorRT-RTX builds int8w (tests/test_trtrtx.py).
NOT_ON_TRT = {"int8w": "TensorRT 10 supports weight-only quantization for INT4 only (its documentation: \"Weight-only "
                       "quantization is supported for INT4\"); use int4w, or a TensorRT-RTX engine (--flavor trtrtx)"}
# flavor -> (module, what to install). TensorRT for RTX has TensorRT 10's API; it builds engines without a GPU
# (ahead of time, for chosen compute capabilities) and JIT-compiles kernels on the RTX GPU that runs them.
FLAVORS = {"trt": ("tensorrt", TRT_MISSING), "trtrtx": ("tensorrt_rtx", RTX_MISSING)}
# TensorRT-RTX's portable targets: what its runtime said on an H200 (2026-11-29): "Supported compute
# capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0"
RTX_PORTABLE = ("8.0", "8.6", "8.9", "12.0", "12.1")
RTX_TARGETS = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89", "12.0": "SM120", "12.1": "SM121"}


class EngineIncompatibleError(BackendUnavailableError):
    """A built engine that this TensorRT / GPU cannot load."""


def trt_module(flavor: str = "trt"):
    """The TensorRT (or TensorRT for RTX) Python module, or None when it is not installed."""
    import importlib
    try:
        return importlib.import_module(FLAVORS[flavor][0])
    except ImportError:
        return None


def tensorrt_available(flavor: str = "trt") -> tuple[bool, str]:
    return (True, "") if trt_module(flavor) is not None else (False, FLAVORS[flavor][1])


def runtime_env(flavor: str = "trt") -> dict:
    """The running TensorRT (or TensorRT-RTX) version and GPU: what an engine must have been built for."""
    env = {"tensorrt": None, "gpu": None, "gpu_cc": None, "flavor": flavor}
    module = trt_module(flavor)
    env["tensorrt"] = module.__version__ if module is not None else None
    try:
        import torch
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_cc"] = "%d.%d" % torch.cuda.get_device_capability(0)
    except ImportError:
        pass
    return env


def rtx_runs_on(cc: str | None, targets) -> bool:
    """Whether a TensorRT-RTX engine built for `targets` (empty: portable) runs on compute capability `cc`."""
    if not cc:
        return False
    if targets:
        return cc in targets
    major, minor = (int(x) for x in cc.split("."))
    return cc in RTX_PORTABLE or major > 12 or (major == 12 and minor > 1)


RTX_ELSEWHERE = ("here use a TensorRT engine (trt:…:cuda), ONNX Runtime (ort:…:cuda) or the fast backend "
                 "(fast:…:cuda)")


def _rtx_supported(targets) -> str:
    """The compute capabilities an engine built for `targets` (empty: the portable set) runs on, in words."""
    return ", ".join(targets or RTX_PORTABLE) + ("" if targets else " and later")


def rtx_not_here(env: dict, targets=()) -> str:
    """The one sentence for a GPU that TensorRT-RTX (its engines, its ONNX Runtime EP) does not run on."""
    return (f"TensorRT-RTX runs on GPUs of compute capability {_rtx_supported(targets)} (RTX-class), but this GPU is "
            f"{env['gpu']} (compute capability {env['gpu_cc']}); {RTX_ELSEWHERE}")


def _rtx_compatible(meta: dict, env: dict) -> tuple[bool, str]:
    targets = meta.get("targets_cc") or []
    if not env.get("tensorrt"):
        return False, RTX_MISSING
    if meta.get("tensorrt") != env["tensorrt"]:
        return False, (f"the engine was built with TensorRT-RTX {meta.get('tensorrt')}, but TensorRT-RTX "
                       f"{env['tensorrt']} is running; build it again with this version")
    if not env.get("gpu"):
        return False, (f"no CUDA GPU is visible: this TensorRT-RTX engine runs on RTX-class GPUs of compute "
                       f"capability {_rtx_supported(targets)}")
    if not rtx_runs_on(env.get("gpu_cc"), targets):
        return False, rtx_not_here(env, targets)
    return True, ""


def check_compatible(meta: dict, env: dict) -> tuple[bool, str]:
    """Whether an engine with sidecar `meta` loads under `env` (runtime_env()); if not, the exact reason.
    TensorRT plans deserialize only in the exact TensorRT version that built them, and only on GPUs of the
    compute capability they were built for (keyed on those two, not on the GPU's name)."""
    if meta.get("flavor") == "trtrtx":
        return _rtx_compatible(meta, env)
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


def rebuild_hint(meta: dict, env: dict | None = None) -> str:
    flavor = " --flavor trtrtx" if meta.get("flavor") == "trtrtx" else ""
    if flavor and env and env.get("gpu_cc") and not rtx_runs_on(env["gpu_cc"], ()):  # no rebuild helps there
        return (f"TensorRT-RTX does not run on {env['gpu']} at all: use trt:{meta.get('precision', 'fp16')}:cuda, "
                "ort:…:cuda or fast:…:cuda on this GPU, and this engine on an RTX-class GPU.")
    return (f"Build it for this machine: python -m core trt-build --model {meta.get('source', '<model>')} "
            f"--precision {meta.get('precision', 'fp16')}{flavor} (or the Build page).")


def ensure_compatible(meta: dict, env: dict | None = None) -> None:
    flavor = meta.get("flavor", "trt")
    env = env or runtime_env(flavor)
    ok, reason = check_compatible(meta, env)
    if not ok:
        if reason in (TRT_MISSING, RTX_MISSING):
            head, _, hint = reason.partition(": ")
            raise EngineIncompatibleError(head + ".", hint)
        what = "TensorRT-RTX" if flavor == "trtrtx" else "TensorRT"
        raise EngineIncompatibleError(f"Cannot load this {what} engine: {reason}.", rebuild_hint(meta, env))




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
    targets: tuple = ()           # TensorRT-RTX only: compute capabilities to build for; empty means portable

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
        unknown = [t for t in self.targets if t not in RTX_TARGETS]
        if unknown:
            raise EngineBuildError(f"Unknown TensorRT-RTX target compute capabilities: {', '.join(unknown)}.",
                                   f"Choose from {', '.join(RTX_TARGETS)}, or none for a portable engine.")
        return self

    def profile(self, rate: int) -> dict:
        """min/opt/max shapes of every input, [batch, samples]."""
        n = lambda s: int(round(s * rate))  # noqa: E731
        return {"min": [self.min_batch, n(self.min_seconds)], "opt": [self.opt_batch, n(self.opt_seconds)],
                "max": [self.max_batch, n(self.max_seconds)]}

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "keep_fp32_ops": list(self.keep_fp32_ops), "targets": list(self.targets)}


def flavor_refuses(precision: str, flavor: str) -> str:
    """Why this flavor of TensorRT does not build `precision` ("" when it does): known without TensorRT installed."""
    return NOT_ON_TRT.get(precision, "") if flavor == "trt" else ""


def ensure_flavor_builds(precision: str, flavor: str) -> None:
    if why := flavor_refuses(precision, flavor):
        raise EngineBuildError(f"No {precision} TensorRT engine: {why}.", f"python -m core build trtrtx --precision "
                               f"{precision}, or python -m core build trt --precision int4w")


def strongly_typed(precision: str, flavor: str = "trt") -> bool:
    """INT8, FP8, weight-only and BF16 engines are built from their ONNX variants (Q/DQ, BF16 types) as strongly typed
    networks; FP16/mixed too where there is no weak typing (TensorRT-RTX, and TensorRT 11 whose FP16 builder flag is
    gone)."""
    if precision in ("int8", "int4w", "int8w", "fp8", "bf16") or (flavor == "trtrtx" and precision != "fp32"):
        return True
    if precision not in ("fp16", "mixed"):
        return False
    trt = trt_module(flavor)
    return trt is not None and not hasattr(trt.BuilderFlag, "FP16")


class TrtEngine(Spec):
    """A TensorRT (flavor "trt") or TensorRT-RTX ("trtrtx") engine, built from the FP32 export (TensorRT lowers
    precision itself) or an ONNX variant (strongly typed builds). A TensorRT engine is keyed on the TensorRT
    version and the compute capability of the GPU that built it; a TensorRT-RTX engine on its version and the
    target compute capabilities chosen (it is built ahead of time, without a GPU)."""
    file = "model.plan"

    def __init__(self, loaded, precision: str, settings: EngineSettings | None = None, env: dict | None = None,
                 flavor: str = "trt"):
        if precision not in PRECISIONS:
            raise EngineBuildError(f"Unknown TensorRT precision '{precision}'.",
                                   f"Choose from {', '.join(PRECISIONS)}.")
        ensure_flavor_builds(precision, flavor)
        self.name, self.flavor = flavor, flavor
        self.engine_settings = (settings or EngineSettings()).validate()
        self.env = env or runtime_env(flavor)
        self.strong = strongly_typed(precision, flavor)
        parent = OnnxVariant(loaded, precision) if self.strong else OnnxExport(loaded)
        super().__init__(loaded, precision, parent, {**self.engine_settings.as_dict(),
                                                     "typing": "strong" if self.strong else "weak"})

    def toolchain(self) -> dict:
        if self.flavor == "trtrtx":
            return {"tensorrt_rtx": self.env["tensorrt"]}
        return {"tensorrt": self.env["tensorrt"], "gpu_cc": self.env["gpu_cc"]}
