"""Export -> parity -> transcription on PyTorch and ONNX Runtime -> harness -> results DB."""
import json

import numpy as np
import onnx
import pytest

from core.audio import load_audio
from core.backends import BackendSpec, availability, make_backend
from core.bench import bench_spec
from core.errors import BackendUnavailableError
from core.pipeline.onnx_build import build_onnx
from core.transcribe import frame_lengths, transcribe


def test_export_is_checked_and_dynamic(tiny, tiny_onnx):
    model = onnx.load(str(tiny_onnx.path))
    onnx.checker.check_model(model)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["input_values"] == ["batch", "samples"] and dims["attention_mask"] == ["batch", "samples"]
    assert model.graph.value_info, "shape inference should annotate intermediate tensors"
    meta = json.loads((tiny_onnx.dir / "meta.json").read_text())
    assert meta["status"] == "verified" and meta["stage"] == "onnx" and meta["precision"] == "fp32"
    assert meta["inputs"]["settings"]["opset"] == 17 and meta["inputs"]["toolchain"]["torch"]
    f = meta["figures"]
    assert f["max_abs_dlogit"] < 1e-4 and f["transcripts_agree"] == f["transcripts_total"] >= 2
    assert f["n"] == 36 and f["wer_delta_points"] == 0.0   # the demo set, through ONNX Runtime and PyTorch


def test_export_cached_then_forced(tiny, tiny_onnx):
    mtime = tiny_onnx.path.stat().st_mtime_ns
    assert build_onnx(tiny, log=lambda *_: None).path.stat().st_mtime_ns == mtime
    forced = build_onnx(tiny, force=True, log=lambda *_: None)
    assert forced.dir == tiny_onnx.dir and forced.path.stat().st_mtime_ns != mtime


@pytest.mark.parametrize("length_s,batch", [(0.7, 1), (2.3, 3)])
def test_backends_agree_on_any_shape(tiny, tiny_onnx, length_s, batch):
    rng = np.random.default_rng(1)
    n = int(length_s * 16000)
    values = rng.standard_normal((batch, n)).astype(np.float32)
    mask = np.ones((batch, n), np.int64)
    with make_backend("torch:fp32:cpu", tiny) as pt, make_backend("ort:fp32:cpu", tiny) as ort:
        a, b = pt.logits(values, mask), ort.logits(values, mask)
    frames = frame_lengths(tiny.model.config, mask)[0]
    assert a.shape == b.shape == (batch, frames, tiny.model.config.vocab_size)
    assert frames == int(n / 320) - 1 or frames == int(n / 320)  # 50 frames per second
    assert np.abs(a - b).max() < 1e-4


def test_transcripts_agree_on_speech(tiny, tiny_onnx, hindi_wav):
    audio = load_audio(hindi_wav)
    with make_backend("torch:fp32:cpu", tiny) as pt, make_backend("ort:fp32:cpu", tiny) as ort:
        a, b = transcribe(audio, pt, tiny), transcribe(audio, ort, tiny)
    assert a.text and a.text == b.text
    assert a.audio_seconds == pytest.approx(audio.duration)


def test_ten_minute_file_in_windows(tiny, tiny_onnx):
    """Long audio is cut into overlapping windows; the stitched logits cover it frame for frame."""
    from core.audio import Audio
    from core.transcribe import frames_per_sample, logits_long
    rng = np.random.default_rng(0)
    audio = Audio((0.1 * rng.standard_normal(16000 * 600)).astype(np.float32), 16000)
    with make_backend("ort:fp32:cpu", tiny) as ort:
        logits, n = logits_long(ort, tiny.processor, audio.samples, 16000, frames_per_sample(tiny.model.config))
        assert n == 34  # 20 s windows, 18 s hop
        assert abs(logits.shape[0] - 600 * 50) <= n  # at most a frame lost per window edge
        assert transcribe(audio, ort, tiny).windows == n


def test_stitching_matches_single_pass(tiny, tiny_onnx):
    """Frames kept from each window equal the frames a single pass over the whole audio gives,
    away from window edges (the receptive field is short for the tiny model)."""
    from core.transcribe import features, frames_per_sample, logits_long
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal(16000 * 50)).astype(np.float32)
    with make_backend("ort:fp32:cpu", tiny) as ort:
        stitched, _ = logits_long(ort, tiny.processor, x, 16000, frames_per_sample(tiny.model.config))
        whole = ort.logits(*features(tiny.processor, [x], 16000))[0]
    assert abs(stitched.shape[0] - whole.shape[0]) <= 3
    # argmax agreement over the stitched sequence: windows see different normalisation/context at edges
    n = min(len(stitched), len(whole))
    assert (stitched[:n].argmax(-1) == whole[:n].argmax(-1)).mean() > 0.9


def test_harness_percentiles_scopes_and_throughput(tiny, tiny_onnx, hindi_wav):
    from core import results
    source = load_audio(hindi_wav).samples
    rows = bench_spec("ort:fp32:cpu", tiny, seconds_list=(1, 2), batches=(1, 2), warmup=2, repeats=8, source=source)
    latency = [r for r in rows if r["kind"] == "latency"]
    assert len(latency) == 8 and [r["kind"] for r in rows].count("memory") == 1
    assert {(r["scope"], r["audio_s"], r["batch"]) for r in latency} == {
        (s, a, b) for s in ("compute", "e2e") for a in (1, 2) for b in (1, 2)}
    for r in latency:
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        lo, hi = r["p50_ci95_ms"]
        assert lo <= r["p50_ms"] <= hi
        # at least three windows of 8, the percentiles over the last three
        assert r["windows"] >= 3 and r["repeats"] == 24 and len(r["window_p50s"]) == r["windows"]
        assert isinstance(r["stable"], bool)
        assert r["env"]["onnxruntime"] and r["random_weights"] is True
        assert r["audio_s_per_s"] == pytest.approx(r["audio_s"] * r["batch"] / (r["p50_ms"] / 1e3))
        assert r["rtf"] == pytest.approx(1 / r["audio_s_per_s"])
        assert r["cold_start_s"] == pytest.approx(r["load_s"] + r["first_call_s"])
        assert r["peak_mem_mb"] == r["peak_host_rss_mb"] > 100 and r["mem_scope"] == "host"
    # e2e (features + forward + text) costs at least the forward alone at the same shape
    p50 = {(r["scope"], r["audio_s"], r["batch"]): r["p50_ms"] for r in latency}
    assert p50["e2e", 2, 2] > 0.8 * p50["compute", 2, 2]
    run = results.save(rows, "latency", note="test")
    back = results.rows(run)
    assert [b["p50_ms"] for b in back] == [r.get("p50_ms") for r in rows]
    assert [b["scope"] for b in back[:8]] == [r["scope"] for r in latency]
    assert back[0]["env"]["onnxruntime"] == rows[0]["env"]["onnxruntime"] and back[0]["warmup"] == 2
    assert any(r["id"] == run and r["rows"] == 9 for r in results.runs())


def test_stability_verdict_and_bootstrap():
    from core.bench import bootstrap_ci, stable
    assert stable([10.0, 10.2, 10.4]) and not stable([10.0, 10.2, 11.0]) and not stable([10.0, 10.1])
    assert stable([20.0, 10.0, 10.2, 10.4])   # only the last three windows count
    lo, hi = bootstrap_ci(np.r_[np.full(50, 1.0), np.full(50, 3.0)])
    assert lo == 1.0 and hi == 3.0
    lo, hi = bootstrap_ci(np.linspace(1, 2, 201))
    assert 1.4 < lo < 1.5 < hi < 1.6


def test_unavailable_backends_say_what_to_install(tiny):
    ok, why = availability("ort:fp32:cuda")
    assert not ok and "onnxruntime-gpu" in why
    with pytest.raises(BackendUnavailableError) as err:
        make_backend("torch:fp16:cuda", tiny).load() if availability("torch:fp16:cuda")[0] else \
            make_backend("torch:fp16:cuda", tiny)
    assert "CUDA" in str(err.value)
    with pytest.raises(BackendUnavailableError, match="fp32/fp16/bf16"):
        make_backend("torch:int8:cpu", tiny)
    with pytest.raises(BackendUnavailableError, match="unknown runtime"):
        make_backend("tvm:fp32:cpu", tiny)
    with pytest.raises(ValueError):
        BackendSpec.parse("a:b:c:d")
