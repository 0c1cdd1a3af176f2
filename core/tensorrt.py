"""TensorRT 10 engines from the verified ONNX artifacts: FP32 (TF32 off), FP16, mixed (FP16 with sensitive layers
pinned to FP32), INT8 (the Q/DQ variant, explicitly quantized) and, strongly typed from their ONNX variants, FP8,
int4w and BF16 (TensorRT-RTX also int8w). Optimization profiles for batch and audio
length, a persisted timing cache, the builder's log and progress streamed to a callback.

An engine is a pipeline artifact (core.engine_meta.TrtEngine: keyed on its ONNX parent, the settings, the
TensorRT version and the compute capability), built through core.pipeline.store.build and verified by the same
gate as every other artifact. Importing this module never needs TensorRT; building does.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

# the compatibility checks and the spec live in core.engine_meta, where the loader (backends.trt_backend) takes them
from .engine_meta import (FLAVORS, PRECISIONS, RTX_PORTABLE, RTX_TARGETS, TRT_MISSING, EngineBuildError,  # noqa: F401
                          EngineIncompatibleError, EngineSettings, TrtEngine, check_compatible, ensure_compatible,
                          ensure_flavor_builds, flavor_refuses, read_engine_meta, rebuild_hint, rtx_runs_on,
                          runtime_env, tensorrt_available, trt_module)
from .errors import BackendUnavailableError
from .paths import artifacts_dir, atomic_path
from .pipeline.onnx_specs import DEFAULT_KEEP_FP32
from .pipeline.store import Artifact, Builder, build

GiB = 1024**3


def timing_cache_path() -> Path:
    return artifacts_dir() / "trt" / "timing.cache"


# ---------------------------------------------------------------- building (TensorRT needed from here on)

def _trt(flavor: str = "trt"):
    trt = trt_module(flavor)
    if trt is None:
        head, _, hint = FLAVORS[flavor][1].partition(": ")
        raise BackendUnavailableError(head + ".", hint)
    return trt


def _callbacks(trt, log):
    """trt.ILogger and trt.IProgressMonitor subclasses that forward to `log` (TensorRT calls them from its
    own threads, so they only format and forward)."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            if level <= int(trt.ILogger.Severity.INFO):
                log(f"[TensorRT {severity.name}] {msg}")

    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.lock, self.top, self.last = threading.Lock(), {}, 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                if not parent_phase:
                    self.top[phase_name] = num_steps
                log(f"{'  ' if parent_phase else ''}phase: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            with self.lock:  # progress lines for the dashboard's job runner, at most twice a second
                if phase_name in self.top and time.monotonic() - self.last > 0.5:
                    self.last = time.monotonic()
                    log(f"progress: {(step + 1) / max(self.top[phase_name], 1):.2f} {phase_name}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                self.top.pop(phase_name, None)

    return Logger(), Progress()


def _load_timing_cache(config, log):
    path = timing_cache_path()
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # from another TensorRT/GPU: start afresh
        log(f"timing cache {path} is from another TensorRT version or GPU; starting an empty one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    elif data:
        log(f"timing cache: {path} ({len(data) / 1024:.0f} KiB)")
    return cache


def _save_timing_cache(config, cache, log) -> None:
    path = timing_cache_path()
    if path.exists():  # another build may have added entries meanwhile: keep them too
        other = config.create_timing_cache(path.read_bytes())
        cache.combine(other, False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(cache.serialize()))
    log(f"timing cache saved: {path}")


def _pin_fp32(trt, network, onnx_path: Path, keep_ops) -> dict:
    """Mixed precision: layers from the sensitive ONNX nodes (matched by name) and of the sensitive layer
    types compute and output FP32; OBEY_PRECISION_CONSTRAINTS makes TensorRT honour it."""
    import onnx
    from .variants import fp32_nodes
    names = {n for ns in fp32_nodes(onnx.load(str(onnx_path), load_external_data=False), keep_ops).values() for n in ns}
    types = {trt.LayerType.SOFTMAX} if "Softmax" in keep_ops else set()
    if "LayerNormalization" in keep_ops:
        types.add(trt.LayerType.NORMALIZATION)
    if any(op.startswith("Reduce") for op in keep_ops):
        types.add(trt.LayerType.REDUCE)
    floats = (trt.float32, trt.float16)
    pinned: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        by_name = layer.name in names or any(layer.name.startswith(n + "_") or layer.name.startswith(n + "/")
                                             for n in names)
        if not (by_name or layer.type in types):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype not in floats for o in outputs):  # shape/index math stays as it is
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned[str(layer.type).split(".")[-1]] = pinned.get(str(layer.type).split(".")[-1], 0) + 1
    if not pinned:
        raise EngineBuildError("Mixed precision matched no layers to keep in FP32.",
                               f"Check --keep-fp32 ({', '.join(keep_ops)}) against the model's ONNX op types.")
    return pinned


def _network(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # by path: external weights next to it are found
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}",
                               "Try another opset (python -m core export --opset 18 --force).")
    return network, parser


class EngineBuilder(Builder):
    """Builds the serialized plan into the temporary folder; measures it with the loader, like every artifact."""

    def __init__(self, parent: Artifact, manifest):
        self.parent, self.manifest = parent, manifest

    def measured_with(self):
        from .pipeline.verify import MEASURED_WITH
        return {"manifest": str(self.manifest) if self.manifest else None, **MEASURED_WITH}

    def produce(self, spec, tmp, log):
        trt = _trt(spec.flavor)
        settings, precision, loaded = spec.engine_settings, spec.precision, spec.loaded
        keep = list(settings.keep_fp32_ops)
        if precision == "mixed" and not keep:
            keep = list(DEFAULT_KEEP_FP32)
        logger, progress = _callbacks(trt, log)
        builder = trt.Builder(logger)
        network, _parser = _network(trt, builder, logger, self.parent.path, spec.strong)
        inputs = [network.get_input(i).name for i in range(network.num_inputs)]
        # the engine's I/O as the network declares it: checkable without deserializing (which needs the GPU)
        io = [{"name": t.name, "mode": mode, "dtype": t.dtype.name, "shape": list(t.shape)}
              for mode, ts in (("input", [network.get_input(i) for i in range(network.num_inputs)]),
                               ("output", [network.get_output(i) for i in range(network.num_outputs)]))
              for t in ts]
        # what the parsed network computes in, layer outputs by type (strongly typed: the ONNX variant's own types)
        dtypes = Counter(layer.get_output(j).dtype.name for layer in map(network.get_layer, range(network.num_layers))
                         for j in range(layer.num_outputs))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * GiB))
        config.builder_optimization_level = settings.optimization_level
        config.progress_monitor = progress
        flags, pinned = [], {}
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)   # FP32 means FP32: TensorRT enables TF32 by default
            flags.append("no TF32")
        if not spec.strong and precision in ("fp16", "mixed"):
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        if precision == "mixed" and not spec.strong:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            flags.append("OBEY_PRECISION_CONSTRAINTS")
            pinned = _pin_fp32(trt, network, self.parent.path, keep)
            log(f"pinned to FP32: {pinned}")
        targets = list(settings.targets)
        if spec.flavor == "trtrtx" and targets:  # default: TensorRT-RTX's portable set of RTX GPUs
            config.num_compute_capabilities = len(targets)
            for i, cc in enumerate(targets):
                config.set_compute_capability(getattr(trt.ComputeCapability, RTX_TARGETS[cc]), i)
        shapes = settings.profile(loaded.sample_rate)
        profile = builder.create_optimization_profile()
        for name in inputs:  # input_values and attention_mask share [batch, samples]
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
        # TensorRT-RTX picks kernels at run time (its runtime cache keeps them): no timing cache to carry
        cache = _load_timing_cache(config, log) if spec.flavor == "trt" else None
        log(f"building {precision} engine ({'strongly' if spec.strong else 'weakly'} typed) from "
            f"{self.parent.path} ...")
        started = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineBuildError(f"TensorRT could not build the {precision} engine: "
                                   f"{'; '.join(logger.errors[-3:]) or 'see the log'}",
                                   "Lower --max-seconds/--max-batch, raise --workspace-gb, or try another precision.")
        if cache is not None:
            _save_timing_cache(config, cache, log)
        (tmp / spec.file).write_bytes(bytes(plan))
        from .envinfo import environment
        full = environment()
        self.meta = {"flavor": spec.flavor, "tensorrt": spec.env["tensorrt"], "gpu": spec.env["gpu"],
                     "gpu_cc": spec.env["gpu_cc"],
                     # TensorRT-RTX: the compute capabilities chosen ([]: its portable set, RTX_PORTABLE and later)
                     "targets_cc": targets if spec.flavor == "trtrtx" else [spec.env["gpu_cc"]],
                     "cuda": full.get("cuda"), "driver": full.get("driver"), "input_names": inputs, "io": io,
                     "network_dtypes": dict(dtypes),
                     "source_onnx": str(self.parent.path),
                     "conv": {"kernel": list(loaded.model.config.conv_kernel),
                              "stride": list(loaded.model.config.conv_stride)},
                     "profiles": [{"inputs": inputs, **shapes, "seconds": [settings.min_seconds, settings.opt_seconds,
                                                                           settings.max_seconds]}],
                     "builder": {**settings.as_dict(), "typing": "strong" if spec.strong else "weak", "flags": flags,
                                 "keep_fp32_ops": keep, "pinned_fp32_layers": pinned,
                                 "timing_cache": str(timing_cache_path()) if cache is not None else None},
                     "engine_build_seconds": round(time.perf_counter() - started, 1)}
        return self.meta

    def measure(self, spec, tmp, log):
        from .backends.base import BackendSpec
        from .backends.trt_backend import TrtBackend
        from .pipeline.verify import measure
        produced = getattr(self, "meta", None) or read_engine_meta(tmp) or {}   # built now, or measured again
        meta = dict(produced, source=spec.loaded.source, precision=spec.precision)
        ok, why = check_compatible(meta, runtime_env(spec.flavor))
        if not ok:  # built ahead of time (TensorRT-RTX on a machine without its GPU): nothing here can run it
            log(f"not verified: {why}")
            return {"error": f"unverified: {why}; build it with --force on a GPU it runs on to verify it"}
        with TrtBackend(BackendSpec(spec.flavor, spec.precision, "cuda"), tmp / spec.file, meta) as candidate:
            return measure(spec.loaded, candidate, self.manifest, log)


def build_engine(loaded, precision: str = "fp16", settings: EngineSettings | None = None, *, gate=None,
                 manifest=None, force: bool = False, flavor: str = "trt", log=print) -> Artifact:
    """The TensorRT (or TensorRT-RTX) engine of `loaded` for `precision`, built once per key and verified by its
    gate where it can run (a TensorRT-RTX engine built without its GPU is kept, rejected as unverified)."""
    from .pipeline.gates import Gate
    from .pipeline.onnx_build import build_onnx, build_variant
    from .pipeline.verify import default_manifest
    spec = TrtEngine(loaded, precision, settings, flavor=flavor)   # a precision this flavor refuses: said first
    _trt(flavor)
    if flavor == "trt" and not spec.env["gpu"]:
        raise BackendUnavailableError("No CUDA GPU visible.", "TensorRT engines are built on and for NVIDIA GPUs "
                                      "(TensorRT for RTX builds without one: --flavor trtrtx).")
    parent = build_variant(loaded, precision, log=log) if spec.strong else build_onnx(loaded, log=log)
    if not parent.usable:
        raise EngineBuildError(f"The ONNX artifact it is built from was rejected: {'; '.join(parent.meta['reasons'])}.",
                               "Fix or accept that artifact first (python -m core build ...).")
    return build(spec, EngineBuilder(parent, manifest or default_manifest()), gate or Gate.default(precision), force,
                 log)
