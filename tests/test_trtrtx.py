"""TensorRT for RTX: real engine builds on this CPU-only machine (ahead of time, through the build pipeline), the
compatibility check that refuses data-centre GPUs with the workbench's own message, and the backend's guard.
Running an engine needs an RTX-class GPU (compute capability 8.x or 12.x): not available here or on the lent H200."""
from __future__ import annotations

import pytest

from core.backends import availability, make_backend
from core.engine_meta import (EngineBuildError, EngineSettings, TrtEngine, check_compatible,
                              ensure_compatible)
from core.errors import BackendUnavailableError

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
    assert "Cannot load this TensorRT-RTX engine" in err.value.message and "--flavor trtrtx" in err.value.hint
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
