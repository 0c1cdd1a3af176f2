"""TensorRT 10 engines from the exported ONNX: FP32, FP16, mixed (FP16 with sensitive layers pinned to FP32)
and INT8 (the Q/DQ variant, explicitly quantized). Optimization profiles for batch and audio length, a
persisted timing cache, the builder's log and progress streamed to a callback, and a metadata sidecar.

Engines live at artifacts/<key>/trt/<precision>-<hash>/{model.plan, meta.json}; the hash covers the source
ONNX sha256, the settings, the TensorRT version and the GPU, so identical inputs reuse the engine. Before
deserializing, the sidecar is checked against the running TensorRT and GPU (`check_compatible`, pure Python),
so a stale engine is reported with the reason and the rebuild command instead of TensorRT's opaque error.

Importing this module never needs TensorRT; building and loading do.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendUnavailableError, WorkbenchError
from .paths import artifacts_dir, atomic_path, write_json_atomic

TRT_MISSING = "TensorRT not installed: install tensorrt-cu12 or tensorrt-cu13"
PRECISIONS = ("fp32", "fp16", "mixed", "int8")
GiB = 1024**3


class EngineIncompatibleError(BackendUnavailableError):
    """A built engine that this TensorRT / GPU cannot load."""


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
    keep_fp32_ops: tuple = ()     # mixed only; empty means core.variants.DEFAULT_KEEP_FP32

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


@dataclass
class EngineArtifact:
    path: Path
    meta: dict

    @property
    def dir(self) -> Path:
        return self.path.parent


# ---------------------------------------------------------------- environment and compatibility (no TensorRT needed)

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
    TensorRT plans deserialize only in the exact TensorRT version that built them, and carry kernels chosen
    for one GPU (compute capability and model)."""
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
    if built_gpu != env["gpu"]:
        return False, (f"the engine was built and tuned on {built_gpu}, but this GPU is {env['gpu']}; "
                       "its kernels were chosen for the other GPU")
    return True, ""


def rebuild_hint(meta: dict) -> str:
    return (f"Rebuild it here: python -m core trt-build --model {meta.get('source', '<model>')} --precision "
            f"{meta.get('precision', 'fp16')} --rebuild (the dashboard's Rebuild button calls core.tensorrt.rebuild).")


def ensure_compatible(meta: dict, env: dict | None = None) -> None:
    ok, reason = check_compatible(meta, env or runtime_env())
    if not ok:
        if reason == TRT_MISSING:
            raise EngineIncompatibleError("TensorRT not installed.", "install tensorrt-cu12 or tensorrt-cu13")
        raise EngineIncompatibleError(f"Cannot load this TensorRT engine: {reason}.", rebuild_hint(meta))


# ---------------------------------------------------------------- where engines live

def timing_cache_path() -> Path:
    return artifacts_dir() / "trt" / "timing.cache"


def engines_dir(loaded) -> Path:
    return artifacts_dir() / loaded.key / "trt"


def _settings_dict(precision: str, settings: EngineSettings) -> dict:
    d = dataclasses.asdict(settings)
    d["keep_fp32_ops"] = list(settings.keep_fp32_ops)
    return {"precision": precision, **d}


def engine_key(source_sha256: str, precision: str, settings: EngineSettings, env: dict) -> str:
    blob = {"source": source_sha256, **_settings_dict(precision, settings),
            "tensorrt": env.get("tensorrt"), "gpu": env.get("gpu"), "gpu_cc": env.get("gpu_cc")}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def read_engine_meta(directory: Path) -> dict | None:
    try:
        return json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def engine_status(loaded) -> list[dict]:
    """Every engine built for `loaded`, with whether it loads here and why not (for the dashboard)."""
    env = runtime_env()
    rows = []
    for meta_file in sorted(engines_dir(loaded).glob("*/meta.json")):
        meta = read_engine_meta(meta_file.parent) or {}
        ok, why = check_compatible(meta, env)
        rows.append({"engine": meta_file.parent.name, "precision": meta.get("precision"), "dir": str(meta_file.parent),
                     "tensorrt": meta.get("tensorrt"), "gpu": meta.get("gpu"), "bytes": meta.get("bytes"),
                     "created": meta.get("created"), "loads_here": ok, "why_not": why, "meta": meta})
    return rows


# ---------------------------------------------------------------- building (TensorRT needed from here on)

def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError("TensorRT not installed.", "install tensorrt-cu12 or tensorrt-cu13") from None
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


def _source_onnx(loaded, precision: str, log):
    """The ONNX an engine is built from: the FP32 export (TensorRT lowers precision itself), or the Q/DQ
    INT8 variant; where weak typing is gone (TensorRT 11) the FP16/mixed ONNX variants, strongly typed."""
    from .export import export_onnx
    from .variants import build_variant
    if precision == "int8":
        return build_variant(loaded, "int8", log=log)
    return export_onnx(loaded, log=log)


def _network(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # by path: external weights next to it are found
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}",
                               "Try another opset (python -m core export --opset 18 --force).")
    return network, parser


def build_engine(loaded, precision: str = "fp16", settings: EngineSettings | None = None, *,
                 rebuild: bool = False, log=print) -> EngineArtifact:
    """Build (or reuse) the TensorRT engine of `loaded` for `precision`; checks its parity against ONNX
    Runtime FP32 and records everything in meta.json next to model.plan."""
    if precision not in PRECISIONS:
        raise EngineBuildError(f"Unknown TensorRT precision '{precision}'.", f"Choose from {', '.join(PRECISIONS)}.")
    settings = (settings or EngineSettings()).validate()
    trt = _trt()
    env = runtime_env()
    if not env["gpu"]:
        raise BackendUnavailableError("No CUDA GPU visible.", "TensorRT engines are built on and for NVIDIA GPUs.")
    source = _source_onnx(loaded, precision, log)
    key = engine_key(source.meta["sha256"], precision, settings, env)
    final = engines_dir(loaded) / f"{precision}-{key}"
    meta = read_engine_meta(final)
    if meta and not rebuild and (final / "model.plan").exists():
        log(f"engine cached at {final}")
        return EngineArtifact(final / "model.plan", meta)

    weak_typing = hasattr(trt.BuilderFlag, "FP16")  # removed in TensorRT 11
    strongly_typed = precision == "int8" or (precision in ("fp16", "mixed") and not weak_typing)
    if strongly_typed and precision in ("fp16", "mixed"):
        from .variants import build_variant  # the ONNX variant already carries the precision of every tensor
        source = build_variant(loaded, precision, log=log)
    keep = list(settings.keep_fp32_ops)
    if precision == "mixed" and not keep:
        from .variants import DEFAULT_KEEP_FP32
        keep = list(DEFAULT_KEEP_FP32)

    logger, progress = _callbacks(trt, log)
    builder = trt.Builder(logger)
    network, _parser = _network(trt, builder, logger, source.path, strongly_typed)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * GiB))
    config.builder_optimization_level = settings.optimization_level
    config.progress_monitor = progress
    pinned = {}
    if not strongly_typed and precision in ("fp16", "mixed"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "mixed" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32(trt, network, source.path, keep)
        log(f"pinned to FP32: {pinned}")
    shapes = settings.profile(loaded.sample_rate)
    profile = builder.create_optimization_profile()
    for name in inputs:  # input_values and attention_mask share [batch, samples]
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache = _load_timing_cache(config, log)

    log(f"building {precision} engine ({'strongly' if strongly_typed else 'weakly'} typed) from {source.path} ...")
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build the {precision} engine: "
                               f"{'; '.join(logger.errors[-3:]) or 'see the log'}",
                               "Lower --max-seconds/--max-batch, raise --workspace-gb, or try another precision.")
    _save_timing_cache(config, cache, log)

    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{precision}-", dir=final.parent))
    try:
        (work / "model.plan").write_bytes(bytes(plan))
        from .envinfo import environment
        from .export import file_sha256
        full = environment()
        meta = {"source": loaded.source, "label": loaded.label, "random_weights": loaded.random_weights,
                "precision": precision, "source_onnx": str(source.path), "source_sha256": source.meta["sha256"],
                "engine_key": key, "tensorrt": env["tensorrt"], "gpu": env["gpu"], "gpu_cc": env["gpu_cc"],
                "cuda": full.get("cuda"), "driver": full.get("driver"), "inputs": inputs,
                "conv": {"kernel": list(loaded.model.config.conv_kernel), "stride": list(loaded.model.config.conv_stride)},
                "profiles": [{"inputs": inputs, **shapes, "seconds": [settings.min_seconds, settings.opt_seconds,
                                                                      settings.max_seconds]}],
                "builder": {**_settings_dict(precision, settings), "typing": "strong" if strongly_typed else "weak",
                            "flags": (["FP16"] if precision in ("fp16", "mixed") and not strongly_typed else [])
                            + (["OBEY_PRECISION_CONSTRAINTS"] if pinned else []), "keep_fp32_ops": keep,
                            "pinned_fp32_layers": pinned, "timing_cache": str(timing_cache_path())},
                "build_seconds": round(seconds, 1), "bytes": (work / "model.plan").stat().st_size,
                "sha256": file_sha256(work / "model.plan"),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        meta["parity"] = _parity(loaded, work / "model.plan", meta, log)
        write_json_atomic(work / "meta.json", meta)  # last: marks the folder finished
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
        log(f"saved {final / 'model.plan'} ({meta['bytes'] / 2**20:.1f} MiB, built in {seconds:.0f} s)")
        return EngineArtifact(final / "model.plan", meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parity(loaded, plan: Path, meta: dict, log) -> dict:
    """The fresh engine against ONNX Runtime FP32 on the CPU, on real speech."""
    from .backends import BackendSpec
    from .backends.ort_backend import OrtBackend
    from .backends.trt_backend import TrtBackend
    from .export import compare, export_onnx, parity_audio
    fp32 = export_onnx(loaded, log=lambda *_: None)
    with OrtBackend(BackendSpec("ort"), fp32.path) as ref, \
            TrtBackend(BackendSpec("trt", meta["precision"], "cuda"), plan, meta) as cand:
        p = compare(loaded, ref, cand, parity_audio(loaded))
    log(f"engine parity vs ONNX Runtime FP32: max |Δlogit| {p['max_abs_logit_diff']:.3g}, "
        f"transcripts agree {p['transcripts_agree']}/{p['transcripts_total']}")
    return {**p, "reference": "ort:fp32:cpu"}


def rebuild(engine_dir, loaded=None, log=print) -> EngineArtifact:
    """Rebuild an engine for this machine from its sidecar's model and settings (the dashboard's button)."""
    meta = read_engine_meta(Path(engine_dir))
    if not meta:
        raise EngineBuildError(f"No engine metadata in {engine_dir}.", "Build one: python -m core trt-build.")
    if loaded is None:
        from .models import load_model
        loaded = load_model(meta["source"])
    fields = {f.name for f in dataclasses.fields(EngineSettings)}
    b = {k: v for k, v in meta.get("builder", {}).items() if k in fields}
    b["keep_fp32_ops"] = tuple(b.get("keep_fp32_ops") or ())
    return build_engine(loaded, meta["precision"], EngineSettings(**b), rebuild=True, log=log)


# ---------------------------------------------------------------- CLI

def cmd_trt_build(args):
    from .cli import _model
    ok, why = tensorrt_available()
    if not ok:
        raise BackendUnavailableError("TensorRT not installed.", "install tensorrt-cu12 or tensorrt-cu13 "
                                      "(the other backends work without it: python -m core info)")
    loaded = _model(args)
    settings = EngineSettings(args.min_seconds, args.opt_seconds, args.max_seconds, args.min_batch, args.opt_batch,
                              args.max_batch, args.workspace_gb, args.opt_level, tuple(args.keep_fp32 or ()))
    for precision in args.precision:
        art = build_engine(loaded, precision, settings, rebuild=args.rebuild, log=lambda m: print(m, flush=True))
        p = art.meta.get("parity", {})
        print(json.dumps({"engine": str(art.path), "precision": precision, "tensorrt": art.meta["tensorrt"],
                          "gpu": art.meta["gpu"], "build_seconds": art.meta["build_seconds"],
                          "max_abs_logit_diff": p.get("max_abs_logit_diff"),
                          "transcripts_agree": f"{p.get('transcripts_agree')}/{p.get('transcripts_total')}"},
                         ensure_ascii=False))


def add_cli(add):
    s = add("trt-build", cmd_trt_build, "Build TensorRT engines (FP32, FP16, mixed, INT8) with optimization "
                                        "profiles and a persisted timing cache. " + TRT_MISSING.split(":")[0]
                                        + " here means: install tensorrt-cu12 or tensorrt-cu13.")
    s.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp16"])
    d = EngineSettings()
    s.add_argument("--min-seconds", type=float, default=d.min_seconds)
    s.add_argument("--opt-seconds", type=float, default=d.opt_seconds)
    s.add_argument("--max-seconds", type=float, default=d.max_seconds)
    s.add_argument("--min-batch", type=int, default=d.min_batch)
    s.add_argument("--opt-batch", type=int, default=d.opt_batch)
    s.add_argument("--max-batch", type=int, default=d.max_batch)
    s.add_argument("--workspace-gb", type=float, default=d.workspace_gb)
    s.add_argument("--opt-level", type=int, default=d.optimization_level, help="builder optimization level 0-5")
    s.add_argument("--keep-fp32", nargs="+", default=None, metavar="OP",
                   help="mixed: ONNX op types (and 'lm_head') pinned to FP32 (default: as core.variants)")
    s.add_argument("--rebuild", action="store_true", help="build again even if a matching engine exists")
    return s
