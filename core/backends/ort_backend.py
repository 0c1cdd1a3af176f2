"""ONNX Runtime backend: CPU EP, CUDA EP (with I/O binding) and the TensorRT EP when present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
INSTALL_HINT = {"cuda": "pip install onnxruntime-gpu (in place of onnxruntime) on a machine with CUDA.",
                "tensorrt": "pip install onnxruntime-gpu and TensorRT 10 (tensorrt-cu12 or tensorrt-cu13).",
                "cpu": "pip install onnxruntime."}


SPECS = ["ort:fp32:cpu", "ort:int8:cpu", "ort:fp32:cuda", "ort:fp16:cuda", "ort:mixed:cuda", "ort:int8:cuda",
         "ort:fp16:tensorrt"]


def available(spec) -> tuple[bool, str]:
    from ..pipeline.onnx_specs import VARIANTS
    if spec.precision not in ("fp32", *VARIANTS):
        return False, f"ONNX variants are fp32, {', '.join(VARIANTS)}, not '{spec.precision}'"
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
    if PROVIDERS[device] not in ort.get_available_providers():
        return False, f"ONNX Runtime has no {PROVIDERS[device]}: " + INSTALL_HINT[device]
    return True, ""


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

    def prepare(self, input_values, attention_mask=None):
        feeds = self._feeds(input_values, attention_mask)
        if self.device == "cpu":
            return feeds
        import onnxruntime as ort  # I/O binding: inputs copied to the GPU once, logits left there
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        binding.bind_output("logits", "cuda")
        return binding

    def run(self, prepared):
        if self.device == "cpu":
            return self.session.run(["logits"], prepared)[0]
        self.session.run_with_iobinding(prepared)   # returns once the device work is done
        return prepared

    def to_host(self, out):
        if self.device != "cpu":
            out = out.copy_outputs_to_cpu()[0]
        return np.asarray(out, dtype=np.float32)

    def close(self):
        self.session = None
