"""ONNX Runtime backend: CPU EP, CUDA EP (with I/O binding), the TensorRT EP when present, and the TensorRT-RTX EP
plugin (RTX-class GPUs; an ONNX Runtime plugin library registered at run time)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..engine_meta import RTX_PORTABLE, rtx_not_here, rtx_runs_on, runtime_env
from ..errors import BackendUnavailableError
from .base import Backend

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "trtrtx": "NvTensorRTRTXExecutionProvider"}
INSTALL_HINT = {"cuda": "pip install onnxruntime-gpu (in place of onnxruntime) on a machine with CUDA.",
                "tensorrt": "pip install onnxruntime-gpu and TensorRT 10 (tensorrt-cu12 or tensorrt-cu13).",
                "trtrtx": "pip install onnxruntime-ep-nv-tensorrt-rtx-cu13==0.5.0 on a machine with an RTX-class GPU "
                          "(compute capability 8.0-8.9 or 12.x) and a CUDA 13 driver.",
                "cpu": "pip install onnxruntime."}
# checked with onnxruntime 1.31: MatMul, Add, ... of the BF16 variant are NOT_IMPLEMENTED on the CPU EP
NO_BF16_ON_CPU = ("ONNX Runtime's CPU EP has no BF16 kernels: the bf16 variant is for TensorRT-RTX and TensorRT "
                  "engines (python -m core build trtrtx --precision bf16); its gate checks it on the CPU through an "
                  "FP32 emulation of its BF16 rounding. For BF16 on this machine: torch:bf16:cpu")


SPECS = ["ort:fp32:cpu", "ort:int8:cpu", "ort:int4w:cpu", "ort:int8w:cpu", "ort:fp8:cpu", "ort:fp32:cuda",
         "ort:fp16:cuda", "ort:mixed:cuda", "ort:int8:cuda", "ort:fp16:tensorrt", "ort:fp32:trtrtx", "ort:fp16:trtrtx"]


def available(spec) -> tuple[bool, str]:
    from ..pipeline.onnx_specs import VARIANTS
    if spec.precision not in ("fp32", *VARIANTS):
        return False, f"ONNX variants are fp32, {', '.join(VARIANTS)}, not '{spec.precision}'"
    if spec.precision == "bf16" and spec.device == "cpu":
        return False, NO_BF16_ON_CPU
    return ort_available(spec.device)


def make(spec, loaded, **options):
    """The backend on the built ONNX artifact of this precision; never builds (a clear error if missing)."""
    from ..pipeline.onnx_specs import onnx_spec
    stage = "onnx" if spec.precision == "fp32" else spec.precision
    art = onnx_spec(loaded, spec.precision).require(f"python -m core build {stage} --model {loaded.source}")
    return OrtBackend(spec, art.path, **options)


def ort_available(device: str) -> tuple[bool, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime not installed: " + INSTALL_HINT["cpu"]
    if device not in PROVIDERS:
        return False, f"unknown ONNX Runtime device '{device}' (use {', '.join(PROVIDERS)})"
    if device == "trtrtx":
        return rtx_ep_devices()[1:]
    if PROVIDERS[device] not in ort.get_available_providers():
        return False, f"ONNX Runtime has no {PROVIDERS[device]}: " + INSTALL_HINT[device]
    return True, ""


@functools.cache   # ONNX Runtime registers a plugin library once per process
def rtx_ep_devices() -> tuple[list, bool, str]:
    """The TensorRT-RTX EP plugin's devices, registering the plugin library on first use; (devices, ok, why)."""
    import onnxruntime as ort
    name = PROVIDERS["trtrtx"]
    try:
        import onnxruntime_ep_nv_tensorrt_rtx as plugin
    except ImportError:
        return [], False, "the TensorRT-RTX EP plugin is not installed: " + INSTALL_HINT["trtrtx"]
    try:
        ort.register_execution_provider_library(plugin.get_ep_name(), plugin.get_library_path())
    except Exception as err:  # noqa: BLE001 — ORT raises its own Fail type; e.g. no libcuda.so.1 on a machine without a driver
        cause = str(err).rsplit("error: ", 1)[-1].strip().replace(": ", " - ")
        result = ([], False, f"the TensorRT-RTX EP plugin {plugin.__version__} did not load: {cause}; it needs an "
                             "NVIDIA driver and an RTX-class GPU")
    else:
        devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
        gpu = runtime_env("trtrtx")   # the same capability rule as TensorRT-RTX engines (portable set)
        verb = "cannot run on" if devices else "lists no device on"
        loaded = f"the TensorRT-RTX EP plugin {plugin.__version__} loaded but {verb}"
        if devices and (not gpu["gpu_cc"] or rtx_runs_on(gpu["gpu_cc"], ())):
            why = ""
        elif gpu["gpu"]:
            why = f"{loaded} this GPU - {rtx_not_here(gpu)}"
        else:
            why = (f"{loaded} this machine - it needs an RTX-class GPU (compute capability "
                   f"{', '.join(RTX_PORTABLE)} and later)")
        result = (devices, not why, why)
    return result


class OrtBackend(Backend):
    runtime = "ort"

    def __init__(self, spec, onnx_path: Path | str, threads: int | None = None):
        super().__init__(spec)
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.session = None

    def load(self):
        import onnxruntime as ort
        ok, why = ort_available(self.device)
        if not ok:
            raise BackendUnavailableError(why.split(":")[0] + ".", why.split(": ", 1)[-1])
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.precision == "fp8" and self.device == "cpu":   # the CPU optimizer fuses Q/DQ + MatMul into
            # QLinearMatMul, which has no FP8 kernel ("Type 'tensor(float8e4m3fn)' ... of operator (QLinearMatMul)")
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        # FP32 means FP32: the CUDA EP runs convolutions and GEMMs in TF32 unless told not to (H200, 2026-11-29:
        # max |dlogit| 2.4e-3 against PyTorch FP32, failing the conformance matrix)
        providers = [(PROVIDERS["cuda"], {"use_tf32": 0})] if self.device == "cuda" else [PROVIDERS[self.device]]
        if self.device == "tensorrt":
            cache = str(self.onnx_path.parent / "ort_trt_cache")
            os.makedirs(cache, exist_ok=True)
            providers = [(PROVIDERS["tensorrt"], {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                                  "trt_fp16_enable": self.precision in ("fp16", "mixed")}),
                         PROVIDERS["cuda"]]
        if self.device == "trtrtx":   # a plugin EP is chosen by device, not by name; its JIT cache kept by the model
            devices = rtx_ep_devices()[0]
            opts.add_provider_for_devices(devices, {"nv_runtime_cache_path": str(self.onnx_path.parent / "rtx_cache")})
            providers = None
        self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=providers)
        if self.session.get_providers()[0] != PROVIDERS[self.device]:  # ORT falls back silently otherwise
            raise BackendUnavailableError(f"ONNX Runtime could not start {PROVIDERS[self.device]} "
                                          f"(got {self.session.get_providers()}).", INSTALL_HINT[self.device])
        self.input_names = [i.name for i in self.session.get_inputs()]
        return self

    def _feeds(self, input_values, attention_mask):
        feeds = {"input_values": np.ascontiguousarray(input_values, dtype=np.float32)}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = (np.ones(input_values.shape, np.int64) if attention_mask is None
                                       else attention_mask.astype(np.int64))
        return feeds

    # host feeds for the TensorRT-RTX plugin EP: binding its device memory needs the plugin's allocator, untried
    # here without an RTX GPU, so its timings include the copies
    HOST_IO = ("cpu", "trtrtx")

    def prepare(self, input_values, attention_mask=None):
        feeds = self._feeds(input_values, attention_mask)
        if self.device in self.HOST_IO:
            return feeds
        import onnxruntime as ort  # I/O binding: inputs copied to the GPU once, logits left there
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        binding.bind_output("logits", "cuda")
        return binding

    def run(self, prepared):
        if self.device in self.HOST_IO:
            return self.session.run(["logits"], prepared)[0]
        self.session.run_with_iobinding(prepared)   # returns once the device work is done
        return prepared

    def to_host(self, out):
        if self.device not in self.HOST_IO:
            out = out.copy_outputs_to_cpu()[0]
        return np.asarray(out, dtype=np.float32)

    def close(self):
        self.session = None
