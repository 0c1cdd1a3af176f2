"""TensorRT: the compatibility check and cache keys (pure Python, always run), the import guard (runs where
TensorRT is absent), and real engine builds (run only where TensorRT and a CUDA GPU are present)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.backends import availability, make_backend
from core.errors import BackendUnavailableError
from core.engine_meta import TrtEngine
from core.tensorrt import (TRT_MISSING, EngineIncompatibleError, EngineSettings, check_compatible,
                           ensure_compatible, tensorrt_available)

HAVE_TRT = tensorrt_available()[0]


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


needs_trt = pytest.mark.skipif(not (HAVE_TRT and _cuda()),
                               reason=TRT_MISSING if not HAVE_TRT else "no CUDA GPU for TensorRT")

H100 = {"tensorrt": "10.8.0.43", "gpu": "NVIDIA H100 80GB HBM3", "gpu_cc": "9.0"}
SIDECAR = {"source": "random:wav2vec2-tiny", "precision": "fp16", **H100}


def test_compatible_engine_is_accepted():
    assert check_compatible(SIDECAR, dict(H100)) == (True, "")


def test_engine_from_another_tensorrt_version_is_refused_with_both_versions():
    ok, why = check_compatible(SIDECAR, {**H100, "tensorrt": "10.13.3.9"})
    assert not ok
    assert "built with TensorRT 10.8.0.43" in why and "TensorRT 10.13.3.9 is running" in why
    with pytest.raises(EngineIncompatibleError) as err:
        ensure_compatible(SIDECAR, {**H100, "tensorrt": "10.13.3.9"})
    assert "Cannot load this TensorRT engine" in err.value.message
    assert "python -m core trt-build --model random:wav2vec2-tiny --precision fp16" in err.value.hint


def test_engine_for_another_compute_capability_is_refused_not_another_name():
    ok, why = check_compatible(SIDECAR, {**H100, "gpu": "NVIDIA A100-SXM4-80GB", "gpu_cc": "8.0"})
    assert not ok and "compute capability 9.0" in why and "compute capability 8.0" in why
    assert "NVIDIA A100-SXM4-80GB" in why
    # same compute capability, another model of GPU (H100 -> H200): the plan loads, compatibility is keyed on
    # the TensorRT version and the compute capability
    assert check_compatible(SIDECAR, {**H100, "gpu": "NVIDIA H200"}) == (True, "")


def test_incomplete_sidecar_or_no_tensorrt_or_no_gpu_is_refused():
    assert check_compatible({"precision": "fp16"}, H100) == (
        False, "the engine's meta.json does not say which TensorRT and GPU built it")
    assert check_compatible(SIDECAR, {"tensorrt": None, "gpu": None, "gpu_cc": None}) == (False, TRT_MISSING)
    ok, why = check_compatible(SIDECAR, {"tensorrt": H100["tensorrt"], "gpu": None, "gpu_cc": None})
    assert not ok and "no CUDA GPU" in why


def test_engine_key_covers_parent_settings_tensorrt_and_compute_capability(tiny):
    s = EngineSettings()
    key = lambda *a, **kw: TrtEngine(tiny, *a, **kw).key()  # noqa: E731
    base = key("fp16", s, env=H100)
    assert base == key("fp16", EngineSettings(), env=dict(H100))      # identical inputs: same engine
    assert base == key("fp16", s, env={**H100, "gpu": "NVIDIA H200"})  # another name, same capability
    others = [key("mixed", s, env=H100), key("fp16", EngineSettings(max_batch=16), env=H100),
              key("fp16", s, env={**H100, "tensorrt": "10.9.0.34"}),
              key("fp16", s, env={**H100, "gpu": "NVIDIA L4", "gpu_cc": "8.9"})]
    assert len({base, *others}) == 5
    spec = TrtEngine(tiny, "int8", s, env=H100)   # INT8 engines are built from the Q/DQ variant
    assert spec.parent.precision == "int8" and spec.strong and spec.inputs()["toolchain"] == {
        "tensorrt": "10.8.0.43", "gpu_cc": "9.0"}


def test_settings_profiles_and_validation():
    from core.errors import WorkbenchError
    p = EngineSettings().profile(16000)
    assert p == {"min": [1, 16000], "opt": [1, 80000], "max": [8, 480000]}
    with pytest.raises(WorkbenchError, match="min <= opt <= max"):
        EngineSettings(min_seconds=5, opt_seconds=2).validate()
    with pytest.raises(WorkbenchError, match="Batch sizes"):
        EngineSettings(opt_batch=9, max_batch=8).validate()


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_says_what_to_install(tiny, capsys):
    assert availability("trt:fp16:cuda") == (False, "TensorRT not installed: install tensorrt-cu12 or tensorrt-cu13")
    with pytest.raises(BackendUnavailableError) as err:
        make_backend("trt:int8:cuda", tiny)
    assert err.value.message.endswith("TensorRT not installed.")
    assert err.value.hint == "install tensorrt-cu12 or tensorrt-cu13"
    from core.cli import main
    assert main(["trt-build", "--model", "random:wav2vec2-tiny", "--precision", "fp16"]) == 2
    assert "TensorRT not installed" in capsys.readouterr().err
    assert availability("ort:fp32:cpu") == (True, "")  # and the other backends carry on


# ------------------------------------------------------------------ real TensorRT (GPU machines only)

@pytest.fixture(scope="module")
def small_profile():
    return EngineSettings(min_seconds=0.5, opt_seconds=2, max_seconds=4, max_batch=4, workspace_gb=1,
                          optimization_level=1)


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "mixed"])
def test_engine_builds_runs_and_is_cached(tiny, small_profile, precision, hindi_wav):
    from core.audio import load_audio
    from core.backends.trt_backend import TrtBackend
    from core.tensorrt import build_engine, timing_cache_path
    from core.transcribe import features
    said = []
    art = build_engine(tiny, precision, small_profile, log=said.append)
    m = art.meta
    assert m["tensorrt"] and m["gpu"] and m["gpu_cc"] and m["inputs"]["parent"] and m["build_seconds"] >= 0
    assert m["profiles"][0]["max"] == [4, 64000] and timing_cache_path().exists()
    assert any(s.startswith("phase:") for s in said) and m["status"] == "verified"
    if precision == "mixed":
        assert m["builder"]["pinned_fp32_layers"] and "OBEY_PRECISION_CONSTRAINTS" in m["builder"]["flags"]
    mtime = art.path.stat().st_mtime_ns
    again = build_engine(tiny, precision, small_profile, log=lambda *_: None)
    assert again.path == art.path and again.path.stat().st_mtime_ns == mtime
    audio = load_audio(hindi_wav, tiny.sample_rate)
    values, mask = features(tiny.processor, [audio.samples[:48000]] * 6, tiny.sample_rate)  # batch 6 > max 4
    from core.backends import BackendSpec
    with TrtBackend(BackendSpec("trt", precision, "cuda"), art.path, art.meta) as backend:
        out = backend.logits(values, mask)
    assert out.shape[0] == 6 and np.isfinite(out).all()


@needs_trt
def test_mismatched_sidecar_is_refused_before_deserialization(tiny, small_profile, tmp_path):
    from core.backends import BackendSpec
    from core.backends.trt_backend import TrtBackend
    from core.tensorrt import build_engine
    art = build_engine(tiny, "fp16", small_profile, log=lambda *_: None)
    copy = tmp_path / "engine"
    shutil.copytree(art.dir, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["tensorrt"] = "9.0.0"
    (copy / "meta.json").write_text(json.dumps(meta))
    (copy / "model.plan").write_bytes(b"not a plan")  # would fail inside TensorRT if it got that far
    with pytest.raises(EngineIncompatibleError, match="built with TensorRT 9.0.0"):
        TrtBackend(BackendSpec("trt", "fp16", "cuda"), copy / "model.plan").load()
