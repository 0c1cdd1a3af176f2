"""TensorRT backend: a serialized engine (core.tensorrt builds it) run with the TensorRT 10 tensor API:
set_input_shape per call, torch CUDA tensors as device buffers, execute_async_v3 on a torch CUDA stream.
The engine's sidecar is checked against this TensorRT and GPU before deserialization."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, WorkbenchError
from ..engine_meta import (PRECISIONS, EngineIncompatibleError, ensure_compatible, flavor_refuses, read_engine_meta,
                           rebuild_hint, rtx_not_here, rtx_runs_on, runtime_env, tensorrt_available, trt_module)
from ..pipeline.store import Artifact, ensure_intact
from .base import Backend

SPECS = [f"trt:{p}:cuda" for p in PRECISIONS if not flavor_refuses(p, "trt")]


def available(spec, flavor: str = "trt") -> tuple[bool, str]:
    what = "TensorRT-RTX" if flavor == "trtrtx" else "TensorRT"
    if spec.precision not in PRECISIONS:
        return False, f"{what} engines here are {', '.join(PRECISIONS)}, not '{spec.precision}'"
    if why := flavor_refuses(spec.precision, flavor):
        return False, f"no {spec.precision} {what} engine: {why}"
    if spec.device != "cuda":
        return False, f"{what} runs on 'cuda' only, not '{spec.device}': use {flavor}:{spec.precision}:cuda"
    ok, why = tensorrt_available(flavor)
    if not ok:
        return False, why
    env = runtime_env(flavor)
    if not env["gpu"]:
        return False, f"no CUDA GPU: {what} needs an NVIDIA GPU and a CUDA build of torch"
    if flavor == "trtrtx" and not rtx_runs_on(env["gpu_cc"], ()):
        return False, rtx_not_here(env)
    return True, ""


def make(spec, loaded, engine: str | Path, meta: dict | None = None, **_build_options):
    """The engine in directory `engine` (make_backend finds the built one when none is named); build options such as
    rebuild, log or EngineSettings fields are ignored, as they always were once an engine was named."""
    return TrtBackend(spec, Path(engine) / "model.plan", meta)


def _torch_dtype(dtype):
    """A TensorRT DataType (of either flavor's module) as a torch dtype, by its name."""
    import torch
    return {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
            "INT64": torch.int64, "INT8": torch.int8, "BOOL": torch.bool}[dtype.name]


class TrtBackend(Backend):
    """TensorRT, or TensorRT for RTX (flavor "trtrtx": same API; its JIT runtime cache persisted next to the
    engine as runtime.cache, so kernels compiled for this GPU are reused by the next load)."""
    runtime = "trt"

    def __init__(self, spec, engine_path: Path | str, meta: dict | None = None):
        super().__init__(spec)
        self.engine_path = Path(engine_path)
        self.meta = meta
        self.engine = self.context = None

    @property
    def flavor(self) -> str:
        return self.spec.runtime

    def load(self):
        meta = self.meta or read_engine_meta(self.engine_path.parent)
        if meta is None or not self.engine_path.exists():
            raise EngineIncompatibleError(f"{self.engine_path} is not a finished engine (model.plan with meta.json).",
                                          "Build it: python -m core trt-build --model <model> --precision "
                                          f"{self.precision}")
        ensure_intact(Artifact(self.engine_path.parent, meta))   # a truncated or replaced plan: refused by name
        ok, why = available(self.spec, self.flavor)
        if not ok:
            head, _, hint = why.partition(": ")
            raise BackendUnavailableError(head + ".", hint)
        trt = trt_module(self.flavor)
        import torch
        ensure_compatible(meta)  # before TensorRT sees the bytes: a clear reason, not a serialization assertion
        self.meta = meta
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise EngineIncompatibleError(f"TensorRT could not deserialize {self.engine_path}.", rebuild_hint(meta))
        self.runtime_cache = None
        if self.flavor == "trtrtx":
            config = self.engine.create_runtime_config()
            self.runtime_cache = config.create_runtime_cache()
            cache_file = self.engine_path.parent / "runtime.cache"
            if cache_file.exists():
                self.runtime_cache.deserialize(cache_file.read_bytes())
            config.set_runtime_cache(self.runtime_cache)
            self.context = self.engine.create_execution_context(config)
        else:
            self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        lo, _, hi = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.min_shape, self.max_shape = tuple(lo), tuple(hi)
        return self

    def prepare(self, input_values, attention_mask=None):
        """Device buffers per slice of at most the profile's max batch, padded up to its minimum shape."""
        import torch
        batch, samples = input_values.shape
        max_batch, max_samples = self.max_shape
        min_batch, min_samples = self.min_shape
        if samples > max_samples:
            raise WorkbenchError(f"{samples} samples is longer than this engine's profile allows ({max_samples}).",
                                 "Rebuild with a larger --max-seconds, or transcribe() cuts long audio into windows.")
        if attention_mask is None:
            attention_mask = np.ones(input_values.shape, np.int64)
        frames, conv = None, self.meta.get("conv")
        if samples < min_samples and conv:  # padded in time: keep only the frames of the real samples
            frames = samples
            for kernel, stride in zip(conv["kernel"], conv["stride"]):
                frames = (frames - kernel) // stride + 1
        slices = []
        for i in range(0, batch, max_batch):
            values, mask = input_values[i:i + max_batch], attention_mask[i:i + max_batch]
            rows = len(values)
            pad_t, pad_b = max(0, min_samples - samples), max(0, min_batch - rows)
            if pad_t or pad_b:  # shorter than the profile's minimum: zero-pad, masked out
                values, mask = np.pad(values, ((0, pad_b), (0, pad_t))), np.pad(mask, ((0, pad_b), (0, pad_t)))
            feeds = {"input_values": np.ascontiguousarray(values, np.float32),
                     "attention_mask": np.ascontiguousarray(mask, np.int64)}
            buffers = {n: torch.from_numpy(feeds[n]).to("cuda", self.dtypes[n]) for n in self.inputs}
            slices.append((buffers, rows))
        return slices, frames

    def run(self, prepared):
        """execute_async_v3 on the backend's stream per slice; the caller's stream waits for it."""
        import torch
        slices, _ = prepared
        outs = []
        with torch.cuda.stream(self.stream):
            for buffers, rows in slices:
                for name in self.inputs:
                    if not self.context.set_input_shape(name, tuple(buffers[name].shape)):
                        raise WorkbenchError(f"Shape {tuple(buffers[name].shape)} is outside the engine's profile "
                                             f"({self.min_shape} to {self.max_shape}).", "Rebuild with wider profiles.")
                    self.context.set_tensor_address(name, buffers[name].data_ptr())
                out = {}
                for name in self.outputs:
                    out[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name],
                                            device="cuda")
                    self.context.set_tensor_address(name, out[name].data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise WorkbenchError("TensorRT execution failed.", "See the TensorRT log above.")
                outs.append(out["logits" if "logits" in out else self.outputs[0]][:rows])
        torch.cuda.current_stream().wait_stream(self.stream)
        return outs, prepared[1]

    def to_host(self, out):
        outs, frames = out
        logits = np.concatenate([o.float().cpu().numpy() for o in outs])
        if frames is not None:  # the padding's frames are not part of the answer
            logits = logits[:, :frames]
        if not np.isfinite(logits).all():
            raise WorkbenchError(f"The TensorRT {self.precision} engine produced NaN/Inf logits.",
                                 "FP16 overflow is the usual cause: try the mixed or fp32 engine.")
        return logits

    def close(self):
        if getattr(self, "runtime_cache", None) is not None:  # keep what the JIT compiled for this GPU
            from ..paths import atomic_path
            with atomic_path(self.engine_path.parent / "runtime.cache") as tmp:
                tmp.write_bytes(bytes(self.runtime_cache.serialize()))
            self.runtime_cache = None
        self.context = self.engine = None
