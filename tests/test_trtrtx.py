"""TensorRT for RTX: real engine builds on this CPU-only machine (ahead of time, through the build pipeline), the
compatibility check that refuses data-centre GPUs with the workbench's own message, and the backend's guard.
Running an engine needs an RTX-class GPU (compute capability 8.x or 12.x): not available here or on the lent H200."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.backends import availability, make_backend
from core.engine_meta import (EngineBuildError, EngineSettings, TrtEngine, check_compatible,
                              ensure_compatible)
from core.errors import BackendUnavailableError
from core.pipeline.store import read

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 is in requirements.txt: run.sh installs it")

SMALL = EngineSettings(min_seconds=0.5, opt_seconds=2, max_seconds=4, max_batch=4, workspace_gb=1)
H200 = {"tensorrt": trt_rtx.__version__, "gpu": "NVIDIA H200", "gpu_cc": "9.0", "flavor": "trtrtx"}
RTX3050 = {"tensorrt": trt_rtx.__version__, "gpu": "NVIDIA GeForce RTX 3050 Laptop GPU", "gpu_cc": "8.6",
           "flavor": "trtrtx"}


@pytest.fixture(scope="module")
def engines(tiny, tiny_onnx):
    from core.tensorrt import build_engine
    said = []
    built = {p: build_engine(tiny, p, SMALL, flavor="trtrtx", log=said.append) for p in ("fp32", "fp16")}
    return built, said


def test_engines_build_without_a_gpu_and_are_kept_unverified(engines, tiny_onnx):
    built, said = engines
    for precision, art in built.items():
        m = art.meta
        assert art.dir.name.startswith(f"trtrtx-{precision}-") and art.path.stat().st_size > 100_000
        assert m["flavor"] == "trtrtx" and m["tensorrt"] == trt_rtx.__version__
        assert m["targets_cc"] == [] and m["gpu"] is None              # portable (RTX_PORTABLE and later), on a CPU
        assert m["profiles"][0]["min"] == [1, 8000] and m["profiles"][0]["max"] == [4, 64000]
        assert m["inputs"]["toolchain"] == {"tensorrt_rtx": trt_rtx.__version__}
        # nothing here can run it, so the gate cannot pass it: kept, rejected as unverified, not offered
        assert m["status"] == "rejected" and m["reasons"][0].startswith("unverified: no CUDA GPU")
        assert not art.usable
    assert built["fp32"].meta["builder"]["typing"] == "weak" and "no TF32" in built["fp32"].meta["builder"]["flags"]
    assert built["fp32"].meta["inputs"]["parent"] == tiny_onnx.key                   # from the verified export
    assert built["fp16"].meta["builder"]["typing"] == "strong"                        # from the FP16 ONNX variant
    assert built["fp16"].meta["inputs"]["parent"] != tiny_onnx.key
    assert any(s.startswith("phase:") for s in said)                                  # the builder's progress


def test_same_inputs_reuse_the_engine_and_targets_change_the_key(engines, tiny):
    from core.tensorrt import build_engine
    built, _ = engines
    again = build_engine(tiny, "fp32", SMALL, flavor="trtrtx", log=lambda *_: None)
    assert again.dir == built["fp32"].dir and again.meta["created"] == built["fp32"].meta["created"]
    ampere = TrtEngine(tiny, "fp32", EngineSettings(**{**SMALL.__dict__, "targets": ("8.6",)}), flavor="trtrtx")
    assert ampere.key() != built["fp32"].key
    with pytest.raises(EngineBuildError, match="Unknown TensorRT-RTX target"):
        EngineSettings(targets=("9.0",)).validate()


def test_refused_on_the_h200_with_what_to_use_instead(engines):
    meta = engines[0]["fp16"].meta
    ok, why = check_compatible(meta, H200)
    assert not ok
    assert "compute capability 8.0, 8.6, 8.9, 12.0, 12.1 and later" in why
    assert "NVIDIA H200 (compute capability 9.0)" in why and "trt:…:cuda" in why and "fast:…:cuda" in why
    with pytest.raises(BackendUnavailableError) as err:
        ensure_compatible(meta, H200)
    assert "Cannot load this TensorRT-RTX engine" in err.value.message
    assert "does not run on NVIDIA H200 at all" in err.value.hint and "trt:fp16:cuda" in err.value.hint  # no rebuild helps
    with pytest.raises(BackendUnavailableError) as err:     # another TensorRT-RTX on an RTX GPU: rebuilding helps
        ensure_compatible({**meta, "tensorrt": "1.0"}, RTX3050)
    assert "--flavor trtrtx" in err.value.hint
    assert check_compatible(meta, RTX3050) == (True, "")            # the seed's laptop GPU is its target
    assert not check_compatible({**meta, "targets_cc": ["8.9"]}, RTX3050)[0]
    assert "built with TensorRT-RTX 1.0" in check_compatible({**meta, "tensorrt": "1.0"}, RTX3050)[1]


def test_backend_says_why_it_cannot_run_here(tiny):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    ok, why = availability("trtrtx:fp16:cuda")
    assert not ok and why.startswith("no CUDA GPU: TensorRT-RTX needs an NVIDIA GPU")
    with pytest.raises(BackendUnavailableError, match="not available: no CUDA GPU"):
        make_backend("trtrtx:fp16:cuda", tiny)


def test_engine_io_and_profile_as_the_network_declares_them(engines):
    """What can be checked of an engine without its GPU: the network TensorRT-RTX parsed and built (I/O names,
    dtypes, dynamic axes) and the optimisation profile recorded with it."""
    for precision, art in engines[0].items():
        io = {t["name"]: t for t in art.meta["io"]}
        assert list(io) == ["input_values", "attention_mask", "logits"], precision
        assert io["input_values"] == {"name": "input_values", "mode": "input", "dtype": "FLOAT", "shape": [-1, -1]}
        assert io["attention_mask"]["dtype"] == "INT64" and io["attention_mask"]["shape"] == [-1, -1]
        assert io["logits"]["mode"] == "output" and io["logits"]["shape"][:2] == [-1, -1]
        assert io["logits"]["dtype"] == "FLOAT"              # the FP16 variant keeps FP32 I/O
        profile = art.meta["profiles"][0]
        assert profile["inputs"] == ["input_values", "attention_mask"] and profile["opt"] == [1, 32000]


def test_changed_onnx_builds_a_new_engine(tiny, tmp_path):
    """Changed weights mean a changed ONNX parent: a new engine key, the old engine listed as stale."""
    import torch
    from core.models import load_model
    from core.pipeline.listing import artifact_rows
    from core.tensorrt import build_engine
    folder = tmp_path / "tiny-rtx"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    quiet = dict(flavor="trtrtx", log=lambda *_: None)
    first = build_engine(load_model(str(folder)), "fp32", SMALL, **quiet)
    changed = load_model(str(folder))
    with torch.no_grad():
        changed.model.lm_head.bias[0] += 1.0
    changed.model.save_pretrained(folder)
    second = build_engine(load_model(str(folder)), "fp32", SMALL, **quiet)
    assert second.key != first.key and second.meta["inputs"]["parent"] != first.meta["inputs"]["parent"]
    old = next(r for r in artifact_rows(str(folder)) if r["key"] == first.key[:10])
    assert old["status"] == "stale" and "weights changed" in old["why"]


def test_truncated_or_corrupt_engine_is_refused_by_name(engines, tmp_path):
    import shutil
    from core.backends.base import BackendSpec
    from core.backends.trt_backend import TrtBackend
    from core.pipeline.store import ArtifactDamagedError
    art = engines[0]["fp16"]
    copy = tmp_path / art.dir.name
    shutil.copytree(art.dir, copy)
    plan = copy / "model.plan"
    data = plan.read_bytes()
    plan.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactDamagedError, match="model.plan is .* bytes, but was built as"):
        TrtBackend(BackendSpec.parse("trtrtx:fp16:cuda"), plan, art.meta).load()
    plan.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ArtifactDamagedError, match="has changed since it was built"):
        TrtBackend(BackendSpec.parse("trtrtx:fp16:cuda"), plan, art.meta).load()


def test_onnx_runtime_rtx_ep_says_why_it_cannot_run_here():
    ok, why = availability("ort:fp16:trtrtx")
    assert not ok
    try:
        import onnxruntime_ep_nv_tensorrt_rtx  # noqa: F401
    except ImportError:
        assert why.startswith("the TensorRT-RTX EP plugin is not installed: pip install onnxruntime-ep-nv-tensorrt-rtx")
    else:  # installed on a machine without a driver or RTX GPU (on the H200: "lists no device", see bench/results)
        assert "did not load" in why or "lists no device" in why or "cannot run on" in why


def test_int4_weight_only_engine_from_its_onnx_variant(tiny):
    """TensorRT-RTX's weight-only INT4: the int4w ONNX variant (blockwise DequantizeLinear) parses and builds as a
    strongly typed network, smaller than the FP32 engine."""
    from core.pipeline.onnx_specs import OnnxVariant
    from core.tensorrt import build_engine
    art = build_engine(tiny, "int4w", SMALL, flavor="trtrtx", log=lambda *_: None)
    assert art.dir.name.startswith("trtrtx-int4w-") and art.meta["builder"]["typing"] == "strong"
    assert art.meta["inputs"]["parent"] == OnnxVariant(tiny, "int4w").key()
    assert [t["name"] for t in art.meta["io"]] == ["input_values", "attention_mask", "logits"]
    assert art.meta["status"] == "rejected" and art.meta["reasons"][0].startswith("unverified")


def test_fp8_engine_for_fp8_gpus(tiny):
    """FP8 engines from the fp8 ONNX variant (Q/DQ in E4M3), built for the RTX GPUs with FP8 tensor cores (8.9, 12.0)."""
    from core.tensorrt import build_engine
    settings = EngineSettings(**{**SMALL.__dict__, "targets": ("8.9", "12.0")})
    art = build_engine(tiny, "fp8", settings, flavor="trtrtx", log=lambda *_: None)
    assert art.dir.name.startswith("trtrtx-fp8-") and art.meta["builder"]["typing"] == "strong"
    assert art.meta["targets_cc"] == ["8.9", "12.0"] and art.path.stat().st_size > 100_000
    assert check_compatible(art.meta, RTX3050)[0] is False          # 8.6: no FP8 tensor cores, not a target


def test_bf16_and_int8_weight_only_engines_from_their_onnx_variants(tiny):
    """BF16 and weight-only INT8 engines: strongly typed builds from their ONNX variants. What the parsed network
    computes in is recorded (no GPU needed): BF16 layers for bf16; INT8 constants (one per quantized weight) and no
    16-bit layers for int8w. The I/O stays FP32 logits from FP32 audio."""
    from core.pipeline.onnx_specs import OnnxVariant
    from core.tensorrt import build_engine
    for precision in ("bf16", "int8w"):
        art = build_engine(tiny, precision, SMALL, flavor="trtrtx", log=lambda *_: None)
        m = art.meta
        assert art.dir.name.startswith(f"trtrtx-{precision}-") and m["builder"]["typing"] == "strong"
        assert m["inputs"]["parent"] == OnnxVariant(tiny, precision).key() and art.path.stat().st_size > 100_000
        io = {t["name"]: (t["mode"], t["dtype"], t["shape"][:2]) for t in m["io"]}
        assert io == {"input_values": ("input", "FLOAT", [-1, -1]), "attention_mask": ("input", "INT64", [-1, -1]),
                      "logits": ("output", "FLOAT", [-1, -1])}
        assert m["status"] == "rejected" and m["reasons"][0].startswith("unverified: no CUDA GPU")
        dtypes = m["network_dtypes"]
        assert "HALF" not in dtypes, precision
        if precision == "bf16":
            assert dtypes["BF16"] > 100
        else:
            parent = read(Path(m["parent_dir"]))
            assert "BF16" not in dtypes and dtypes["INT8"] == parent.meta["quantized_weights"]
