"""Model repositories for the NVIDIA Triton container: an `onnxruntime` model for ONNX variants (optionally
with the TensorRT accelerator) or a `tensorrt_plan` model for TensorRT engines, with a config.pbtxt built
as a ModelConfig protobuf, so it is valid by construction."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError
from ..pipeline.fingerprint import file_sha256
from ..pipeline.gates import Gate
from ..pipeline.onnx_specs import onnx_spec, versions
from ..pipeline.store import Artifact, Builder, Spec, build
from .batching import preferred_sizes

# TensorRT minor version -> the NGC Triton containers that ship it (from NVIDIA's Triton release notes /
# Frameworks Support Matrix). A plan only loads in a Triton built against the TensorRT it was built with.
TRT_CONTAINERS = {
    "10.0": ["24.05"], "10.1": ["24.06"], "10.2": ["24.07"], "10.3": ["24.08"], "10.4": ["24.09"],
    "10.5": ["24.10"], "10.6": ["24.11"], "10.7": ["24.12"], "10.8": ["25.01", "25.02"],
    "10.9": ["25.03", "25.04"], "10.10": ["25.05"], "10.11": ["25.06"],
}
CONTAINER = "nvcr.io/nvidia/tritonserver:{}-py3"


@dataclass
class RepoOptions:
    max_batch: int = 8
    preferred: tuple[int, ...] = ()
    max_queue_delay_us: int = 500
    instances: int = 1
    kind: str = "gpu"                # gpu | cpu
    trt_accelerator: bool = False    # ONNX Runtime's TensorRT execution accelerator (onnxruntime models only)
    workspace_bytes: int = 4 << 30
    gpus: tuple[int, ...] | None = None   # GPU kind: `instances` on each listed GPU; None: on every GPU (Triton's default)


# runtimes whose fp16 forms cast the audio to FP16 before anything reads it (core.backends.torch_backend.to_device)
FP16_AUDIO_RUNTIMES = ("fast", "torch")
AUDIO_DTYPES = ("auto", "fp32", "fp16")


def audio_dtype(choice: str, backend: str) -> str:
    """The served input_values type, 'FP32' or 'FP16', for the --input-dtype choice (auto, fp32, fp16). auto: FP16
    where the served backend casts the audio to FP16 before its first op (fast and torch at fp16), so the outputs
    are the same bit for bit while every copy of a request's audio (client, gRPC, server, the instance's shared
    memory) moves half the bytes; FP32 elsewhere."""
    from ..backends import BackendSpec
    if choice not in AUDIO_DTYPES:
        raise ExportError(f"Unknown input type '{choice}'.", f"Use one of {', '.join(AUDIO_DTYPES)}.")
    if choice != "auto":
        return choice.upper()
    spec = BackendSpec.parse(backend)
    return "FP16" if spec.precision == "fp16" and spec.runtime in FP16_AUDIO_RUNTIMES else "FP32"


def model_config(name: str, platform: str, vocab: int, with_mask: bool, precision: str, opts: RepoOptions,
                 audio_dtype: str = "FP32"):
    """The ModelConfig protobuf: variable-length batched audio (`audio_dtype`, FP32 or FP16) in, [frames, vocab]
    logits out."""
    from tritonclient.grpc import model_config_pb2 as pb
    if opts.max_batch < 1:
        raise ExportError("max_batch must be at least 1.", "Dynamic batching needs max_batch_size > 0.")
    preferred = preferred_sizes(opts.preferred, opts.max_batch)
    if opts.kind not in ("gpu", "cpu"):
        raise ExportError(f"Unknown instance kind '{opts.kind}'.", "Use --kind gpu or --kind cpu.")
    cfg = pb.ModelConfig(name=name, max_batch_size=opts.max_batch)
    if platform == "tensorrt_plan":
        cfg.platform = "tensorrt_plan"
        cfg.default_model_filename = "model.plan"
    elif platform == "python":   # core.triton.pybackend: model.py runs a workbench backend
        cfg.backend = "python"
    else:
        cfg.backend = "onnxruntime"
        cfg.default_model_filename = "model.onnx"
    if audio_dtype not in ("FP32", "FP16"):
        raise ExportError(f"Unknown input type '{audio_dtype}' for input_values.", "Use FP32 or FP16.")
    cfg.input.add(name="input_values", data_type=getattr(pb, f"TYPE_{audio_dtype}"), dims=[-1])
    if with_mask:   # optional where the model code fills it in (PyTriton and the Python backend do)
        cfg.input.add(name="attention_mask", data_type=pb.TYPE_INT64, dims=[-1], optional=platform == "python")
    cfg.output.add(name="logits", data_type=pb.TYPE_FP32, dims=[-1, vocab])
    cfg.dynamic_batching.max_queue_delay_microseconds = opts.max_queue_delay_us
    cfg.dynamic_batching.preferred_batch_size.extend(preferred)
    if opts.gpus is not None:
        if opts.kind != "gpu":
            raise ExportError(f"GPUs {list(opts.gpus)} were chosen for a CPU instance group.",
                              "Leave --gpus out for --kind cpu (or an ort:…:cpu backend), or use --kind gpu.")
        if not opts.gpus or len(set(opts.gpus)) < len(opts.gpus) or min(opts.gpus) < 0:
            raise ExportError(f"GPU list {list(opts.gpus)} is not a list of distinct indices >= 0.",
                              "Give --gpus all, or indices such as --gpus 0 1.")
    # Triton starts `count` instances on each GPU of `gpus`; without `gpus`, on each GPU it can see
    cfg.instance_group.add(count=opts.instances, gpus=list(opts.gpus or ()),
                           kind=pb.ModelInstanceGroup.KIND_GPU if opts.kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU)
    if opts.trt_accelerator and platform != "tensorrt_plan":
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = "FP16" if precision in ("fp16", "mixed") else "FP32"
        acc.parameters["max_workspace_size_bytes"] = str(opts.workspace_bytes)
        acc.parameters["trt_engine_cache_enable"] = "1"
        acc.parameters["trt_engine_cache_path"] = "/tmp/triton_trt_cache"
    return cfg


def config_text(cfg) -> str:
    from google.protobuf import text_format
    return text_format.MessageToString(cfg)


def parse_config(text: str):
    """config.pbtxt -> ModelConfig (raises on anything Triton's own parser would reject)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb
    return text_format.Parse(text, pb.ModelConfig())


def containers_for(trt_version: str | None) -> list[str]:
    if not trt_version:
        return []
    minor = ".".join(trt_version.split(".")[:2])
    return [CONTAINER.format(c) for c in TRT_CONTAINERS.get(minor, [])]


def readme(name: str, platform: str, trt_version: str | None, opts: RepoOptions, meta: dict) -> str:
    rows = "\n".join(f"| {v} | {', '.join(f'`{c}-py3`' for c in cs)} |" for v, cs in TRT_CONTAINERS.items())
    match = containers_for(trt_version)
    gpus = "--gpus all " if opts.kind == "gpu" else ""
    image = match[-1] if match else CONTAINER.format("24.10")
    if platform == "tensorrt_plan":
        which = (f"This engine was built with TensorRT **{trt_version}**: use "
                 f"{' or '.join(f'`{c}`' for c in match) if match else 'the container whose TensorRT matches it exactly'}. "
                 "A plan built by another TensorRT version fails to load (`Serialization assertion ... version`); "
                 "rebuild the engine inside the container (`trtexec`) if no container matches."
                 if trt_version else
                 "The TensorRT version of this engine is unknown: pick the container whose TensorRT version matches "
                 "the one that built it (table below), or rebuild the engine inside the container.")
    else:
        which = ("ONNX models load in any recent container; ONNX Runtime's TensorRT accelerator builds its engines "
                 "on first load (slow first start; cached in /tmp/triton_trt_cache inside the container)."
                 if opts.trt_accelerator else "ONNX models load in any recent container (onnxruntime backend).")
    return f"""# Triton model repository: `{name}`

Source model: {meta.get('label', meta.get('source'))}
Backend: `{platform}` ({meta.get('backend_spec')}), max batch {opts.max_batch}, preferred {list(opts.preferred) or 'none'},
max queue delay {opts.max_queue_delay_us} µs, {placement(opts)}.

## Start it

{which}

```bash
docker run --rm {gpus}--shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
  -v "$PWD":/models {image} tritonserver --model-repository=/models
```

Then measure it from this workbench (same numbers as any other backend):

```bash
python -m core sweep --model <same model> --url localhost:8001 --protocol grpc --model-name {name}
python -m core transcribe clip.wav --backend triton:fp32:grpc   # url/model name via the sweep options or defaults
```

Inputs: `input_values` FP32 [batch, samples] (processor-normalised 16 kHz audio){', `attention_mask` INT64 [batch, samples]' if meta.get('attention_mask') else ''};
output `logits` FP32 [batch, frames, vocab].{engine_range(meta)} Triton's dynamic batcher only merges requests whose shapes are equal, so
clients that send fixed-length windows (e.g. 5 s or 20 s) batch best.

## TensorRT version -> Triton container

| TensorRT | NGC container (`nvcr.io/nvidia/tritonserver:<tag>`) |
|---|---|
{rows}

Check NVIDIA's Frameworks Support Matrix for newer releases.
"""


def placement(opts: RepoOptions) -> str:
    if opts.kind == "cpu":
        return f"{opts.instances} CPU instance(s)"
    where = f"each of GPUs {', '.join(map(str, opts.gpus))}" if opts.gpus else "each GPU the server sees"
    return (f"{opts.instances} instance(s) on {where} (instance_group count per GPU; `docker run --gpus` decides "
            "which GPUs the container sees, numbered from 0 inside it)")


def engine_range(meta: dict) -> str:
    secs = meta.get("engine_seconds")
    return (f" The engine's optimization profile accepts {secs[0]:g}-{secs[-1]:g} s of audio per item; longer audio "
            "must be windowed by the client (the workbench does this)." if secs else "")


def _engine_meta(engine: Path) -> dict:
    """The sidecar core.tensorrt writes next to model.plan (empty if the engine came from elsewhere)."""
    for meta in (engine.parent / "meta.json", engine.with_suffix(".json")):
        try:
            return json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return {}


def _engine_trt_version(engine: Path) -> str | None:
    data = _engine_meta(engine)
    version = data.get("tensorrt") or (data.get("versions") or {}).get("tensorrt")
    return str(version) if version else None


def _built_engine(loaded, precision: str) -> Path | None:
    """The engine of this precision (default settings) built for this TensorRT and GPU, if there is one."""
    from ..engine_meta import TrtEngine
    art = TrtEngine(loaded, precision).lookup()
    return art.path if art and art.usable else None


def _place(src: Path, dst: Path) -> None:
    """Hard link when on the same filesystem (no copy of a 1 GB model), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class RepoSpec(Spec):
    """A Triton container model repository: the parent artifact's model file (hard-linked) + config.pbtxt."""
    name = "triton"

    def __init__(self, loaded, backend: str, model_name: str, opts: RepoOptions, parent: Spec | None,
                 engine_sha256: str | None = None):
        settings = {"backend": backend, "model_name": model_name, **dataclasses.asdict(opts),
                    "engine_sha256": engine_sha256}
        super().__init__(loaded, backend.split(":")[1], parent, settings)

    def toolchain(self) -> dict:
        return versions("tritonclient")


class RepoBuilder(Builder):
    """Writes the repository; its gate figures are the parent's (the model file is the parent's, unchanged)
    plus the config's round trip through Triton's own ModelConfig parser."""

    def __init__(self, platform: str, files: list[Path], model_file: Path, text: str, readme_text: str,
                 meta: dict, parent: Artifact | None):
        self.platform, self.files, self.model_file, self.text = platform, files, model_file, text
        self.readme_text, self.meta, self.parent = readme_text, meta, parent

    def produce(self, spec, tmp, log):
        model_name = spec.settings["model_name"]
        version_dir = tmp / model_name / "1"
        version_dir.mkdir(parents=True)
        target = "model.plan" if self.platform == "tensorrt_plan" else "model.onnx"
        for f in self.files:
            _place(f, version_dir / (target if f == self.model_file else f.name))
        (tmp / model_name / "config.pbtxt").write_text(self.text, encoding="utf-8")
        (tmp / "README.md").write_text(self.readme_text, encoding="utf-8")
        return self.meta

    def measured_with(self):
        return {"parent": self.parent.key if self.parent else None,
                "parent_figures": (self.parent.meta.get("measured_with") if self.parent else None)}

    def measure(self, spec, tmp, log):
        parse_config((tmp / spec.settings["model_name"] / "config.pbtxt").read_text(encoding="utf-8"))
        if self.parent is None:
            return {"error": "an engine from outside the pipeline: never verified here", "config_parsed": True}
        return {**self.parent.meta.get("figures", {}), "config_parsed": True, "model_from": self.parent.key}


def build_repo(loaded, backend: str, name: str | None = None, opts: RepoOptions | None = None,
               engine: Path | str | None = None, gate: Gate | None = None, force: bool = False,
               log=print) -> Path:
    """A Triton model repository {README.md, <name>/config.pbtxt, <name>/1/model.*} built through the pipeline
    from the verified ONNX artifact or TensorRT engine of `backend`; returns its folder."""
    from ..backends import BackendSpec
    opts = dataclasses.replace(opts or RepoOptions())  # adjusted below; the caller's copy is left alone
    spec = BackendSpec.parse(backend)
    vocab = int(loaded.model.config.vocab_size)
    with_mask = loaded.uses_attention_mask
    trt_version, parent_spec, parent, engine_sha = None, None, None, None
    if spec.runtime == "ort":
        platform = "onnxruntime"
        stage = "onnx" if spec.precision == "fp32" else spec.precision
        parent_spec = onnx_spec(loaded, spec.precision)
        parent = parent_spec.require(f"python -m core build {stage} --model {loaded.source}")
        model_file = parent.path
        opts.trt_accelerator = opts.trt_accelerator or spec.device == "tensorrt"
        files = [model_file] + sorted(model_file.parent.glob(model_file.name + ".data"))  # external weights
        if spec.device == "cpu" and opts.kind == "gpu":
            opts.kind = "cpu"
    elif spec.runtime == "trt":
        platform = "tensorrt_plan"
        model_file = Path(engine) if engine else _built_engine(loaded, spec.precision)
        if model_file is None:
            raise ExportError(f"A tensorrt_plan model needs a built {spec.precision} engine; none found.",
                              f"Build one with `python -m core trt-build --model {loaded.source} ...` (on the GPU "
                              "that will serve it), or pass --engine path/to/model.plan.")
        if not model_file.is_file():
            raise ExportError(f"No TensorRT engine at {model_file}.", "Check the --engine path.")
        files = [model_file]
        engine_sha = file_sha256(model_file)
        trt_version = _engine_trt_version(model_file)
        engine_meta = _engine_meta(model_file)
        if engine_meta.get("input_names"):
            with_mask = "attention_mask" in engine_meta["input_names"]
        profile_max = max((p.get("max", [0])[0] for p in engine_meta.get("profiles", [])), default=None)
        if profile_max and opts.max_batch > profile_max:
            raise ExportError(f"max_batch {opts.max_batch} exceeds the engine's optimization profile (max batch "
                              f"{profile_max}).", f"Use --max-batch {profile_max} or rebuild the engine.")
        if opts.kind == "cpu":
            raise ExportError("TensorRT plans run on GPUs only.", "Use --kind gpu.")
    else:
        raise ExportError(f"Backend {spec} cannot be exported to a Triton container repository.",
                          "Export an ONNX variant (ort:fp32:cpu, ort:fp16:cuda, ...) or a TensorRT engine (trt:...), "
                          "or serve any backend directly with `python -m core serve` (PyTriton).")
    model_name = name or "asr"
    meta = {"backend_spec": str(spec), "platform": platform, "attention_mask": with_mask, "vocab": vocab,
            "tensorrt": trt_version, "model_file": str(model_file)}
    if platform == "tensorrt_plan":
        meta["engine_seconds"] = next((p.get("seconds") for p in engine_meta.get("profiles", [])), None)
    cfg = model_config(model_name, platform, vocab, with_mask, spec.precision, opts)
    text = config_text(cfg)
    parse_config(text)  # round-trip: what we write is what Triton will read
    repo = RepoSpec(loaded, str(spec), model_name, opts, parent_spec, engine_sha)
    builder = RepoBuilder(platform, files, model_file, text, readme(model_name, platform, trt_version, opts,
                                                                    dict(meta, source=loaded.source)), meta, parent)
    art = build(repo, builder, gate or Gate.default(spec.precision), force, log)
    log(f"Triton model repository ({art.status}) at {art.dir}")
    return art.dir
