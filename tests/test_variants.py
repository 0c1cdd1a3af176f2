"""ONNX precision variants of the tiny model: real conversions, real ONNX Runtime sessions, graphs inspected."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import espeak
from core.errors import ExportError

SENTENCES = ["नमस्ते दुनिया", "आज मौसम अच्छा है", "मेरा नाम राम है", "यह एक परीक्षा है"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A small labelled set of real (synthesised) Hindi speech."""
    folder = tmp_path_factory.mktemp("variant_set")
    lines = ["path\ttext"]
    for i, text in enumerate(SENTENCES):
        espeak(text, folder / f"clip{i}.wav")
        lines.append(f"clip{i}.wav\t{text}")
    path = folder / "manifest.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _types(path) -> tuple[onnx.ModelProto, dict]:
    """The model and the element type of every tensor, from ONNX's own shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    return model, types


def _check_recorded(meta, manifest):
    f = meta["figures"]
    assert math.isfinite(f["max_abs_dlogit"]) and f["max_abs_dlogit"] > 0  # a real, lossy conversion
    assert f["transcripts_total"] >= 2 and 0 <= f["transcripts_agree"] <= f["transcripts_total"]
    assert f["n"] == len(SENTENCES) and f["manifest"] == str(manifest)
    for k in ("wer", "cer", "wer_fp32", "cer_fp32"):  # random weights: noise, but a well-formed error rate
        assert 0 <= f[k] < 50
    assert f["wer_judged"] is False and meta["status"] in ("verified", "rejected")   # random weights


def test_fp16_variant_has_fp16_weights_and_fp32_io(tiny, manifest):
    from core.pipeline.onnx_build import build_variant
    art = build_variant(tiny, "fp16", manifest=manifest, log=lambda *_: None)
    assert art.path == art.dir / "model.onnx" and art.dir.name.startswith("onnx-fp16-")
    model, types = _types(art.path)
    big = [t for t in model.graph.initializer if np.prod(t.dims) >= 256]
    assert big and all(t.data_type == TensorProto.FLOAT16 for t in big)
    assert types["input_values"] == TensorProto.FLOAT and types["logits"] == TensorProto.FLOAT
    for node in model.graph.node:  # with nothing blocked, every Softmax/LayerNorm computes in FP16
        if node.op_type in ("Softmax", "LayerNormalization"):
            assert types[node.output[0]] == TensorProto.FLOAT16, node.name
    assert art.meta["bytes"] < 0.7 * art.meta["fp32_bytes"]
    _check_recorded(art.meta, manifest)


def test_mixed_variant_keeps_sensitive_ops_in_fp32(tiny, manifest):
    from core.pipeline.onnx_build import build_variant
    from core.pipeline.onnx_specs import DEFAULT_KEEP_FP32
    art = build_variant(tiny, "mixed", manifest=manifest, log=lambda *_: None)
    model, types = _types(art.path)
    sensitive = [n for n in model.graph.node if n.op_type in ("Softmax", "LayerNormalization")]
    assert len(sensitive) >= 10
    for node in sensitive:  # data in, data out, and LayerNorm's scale/bias: all float32
        for t in [*node.input, *node.output]:
            if t:
                assert types[t] == TensorProto.FLOAT, (node.name, t)
    # the final projection producing the logits stays FP32, weights included
    head = [n for n in model.graph.node if n.name in ("/m/lm_head/MatMul", "/m/lm_head/Add")]
    assert len(head) == 2 and all(types[t] == TensorProto.FLOAT for n in head for t in [*n.input, *n.output])
    # ... while the encoder's matrix multiplications really run in FP16
    fp16_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and types[n.output[0]] == TensorProto.FLOAT16]
    assert len(fp16_matmuls) >= 8
    kept = art.meta["kept_fp32"]
    assert kept["Softmax"] == sum(n.op_type == "Softmax" for n in sensitive)
    assert kept["LayerNormalization"] == sum(n.op_type == "LayerNormalization" for n in sensitive)
    assert kept["lm_head"] == 2 and art.meta["inputs"]["settings"]["keep_fp32_ops"] == list(DEFAULT_KEEP_FP32)
    _check_recorded(art.meta, manifest)


def test_mixed_keep_list_is_configurable(tiny, manifest):
    from core.pipeline.onnx_build import build_variant
    art = build_variant(tiny, "mixed", manifest=manifest, keep_fp32_ops=["Softmax"], log=lambda *_: None)
    model, types = _types(art.path)
    assert art.meta["kept_fp32"] == {"Softmax": 2}
    for node in model.graph.node:
        if node.op_type == "Softmax":
            assert types[node.output[0]] == TensorProto.FLOAT
        if node.op_type == "LayerNormalization":  # not listed, so converted
            assert types[node.output[0]] == TensorProto.FLOAT16
    with pytest.raises(ExportError, match="fp16 variant keeps nothing"):
        build_variant(tiny, "fp16", keep_fp32_ops=["Softmax"], log=lambda *_: None)
    with pytest.raises(ExportError, match="Unknown precision variant 'int4'"):
        build_variant(tiny, "int4", log=lambda *_: None)


def test_int8_qdq_variant_runs_on_ort_cpu(tiny, manifest, hindi_wav):
    from core.audio import load_audio
    from core.transcribe import features
    from core.pipeline.onnx_build import build_variant
    art = build_variant(tiny, "int8", manifest=manifest, calib_size=3, log=lambda *_: None)
    model = onnx.load(str(art.path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    int8_weights = [t for t in model.graph.initializer if t.data_type == TensorProto.INT8 and np.prod(t.dims) >= 256]
    assert len(int8_weights) >= 8
    scales = {t.name: t for t in model.graph.initializer}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in
                   {w.name for w in int8_weights} and np.prod(scales[n.input[1]].dims) > 1]
    assert per_channel, "weights should be quantized per output channel"
    # the final and the input projections are left unquantized: their MatMuls read float weights, and so are
    # attention's products of two activations and every convolution
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    kept = art.meta["kept_fp32"]
    ends = [n for n in model.graph.node
            if n.op_type == "MatMul" and n.name in kept["lm_head"] + kept["input_projection"]]
    assert len(ends) == 2 and len(kept["input_projection"]) == 1
    for node in ends:
        assert producer.get(node.input[1]) != "DequantizeLinear" and node.input[1] in scales  # a float initializer
    activations = [n for n in model.graph.node if n.name in kept["act_matmuls"]]
    assert len(activations) == 2 * tiny.model.config.num_hidden_layers
    assert not any(producer.get(i) == "DequantizeLinear" for n in activations for i in n.input)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and not any(producer.get(n.input[1]) == "DequantizeLinear" for n in convs)
    quantized = [n for n in model.graph.node if n.op_type == "MatMul" and producer.get(n.input[1]) == "DequantizeLinear"]
    assert len(quantized) >= 8  # the encoder's projections read dequantized INT8 weights
    assert len(art.meta["calibration_clips"]) == 3
    assert art.meta["calibration_in_eval_set"] is True
    _check_recorded(art.meta, manifest)
    # a real ONNX Runtime CPU session runs it (the registry offers only default-settings artifacts that passed)
    from core.backends import BackendSpec
    from core.backends.ort_backend import OrtBackend
    with OrtBackend(BackendSpec("ort", "int8", "cpu"), art.path) as backend:
        audio = load_audio(hindi_wav, tiny.sample_rate)
        values, mask = features(tiny.processor, [audio.samples], tiny.sample_rate)
        out = backend.logits(values, mask)
    assert out.dtype == np.float32 and out.shape[0] == 1 and np.isfinite(out).all()
    assert backend.session is None  # closed


def test_int4_weight_only_variant(tiny, manifest):
    """int4w: every MatMul with a constant weight but the final projection reads INT4 weights through a blockwise
    DequantizeLinear (block_size 16, opset 21); activations stay FP32 (no QuantizeLinear); ORT's CPU EP runs it."""
    from core.pipeline.onnx_build import build_variant
    art = build_variant(tiny, "int4w", manifest=manifest, log=lambda *_: None)
    model = onnx.load(str(art.path))
    assert [o.version for o in model.opset_import if not o.domain] == [21]
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" not in ops
    inits = {t.name: t for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(inits[n.input[0]].data_type == TensorProto.INT4 for n in dq)
    assert all(next(a.i for a in n.attribute if a.name == "block_size") == 16 for n in dq)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    head = [n for n in model.graph.node if n.name in art.meta["excluded_nodes"] and n.op_type == "MatMul"]
    assert len(head) == 1 and producer.get(head[0].input[1]) != "DequantizeLinear"
    weighted = [n for n in model.graph.node if n.op_type == "MatMul" and n not in head
                and (n.input[1] in inits or producer.get(n.input[1]) == "DequantizeLinear")]
    assert weighted and all(producer.get(n.input[1]) == "DequantizeLinear" for n in weighted)
    assert art.meta["quantized_matmuls"] == len(dq) == len(weighted)
    _check_recorded(art.meta, manifest)
    assert art.meta["bytes"] < art.meta["fp32_bytes"]    # demo model: 5.7 MB against 18.1 MB


def test_fp8_qdq_variant_runs_on_ort_cpu(tiny, manifest, hindi_wav):
    """fp8: FP8 E4M3 QuantizeLinear/DequantizeLinear around the MatMuls (per tensor, Distribution calibration on
    clips of one length), the final projection left FP32; ONNX Runtime's CPU EP runs it with graph optimisation
    off (its Q/DQ fusion has no FP8 kernel), through the workbench's own backend."""
    from core.audio import load_audio
    from core.backends import BackendSpec
    from core.backends.ort_backend import OrtBackend
    from core.pipeline.onnx_build import build_variant
    from core.transcribe import features
    art = build_variant(tiny, "fp8", manifest=manifest, calib_size=3, log=lambda *_: None)
    model = onnx.load(str(art.path))
    inits = {t.name: t for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    fp8_weights = [n for n in dq if n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.FLOAT8E4M3FN]
    assert fp8_weights and art.meta["q_nodes"] > 0 and art.meta["calibration"] == "Distribution"
    assert art.meta["per_channel"] is False and art.meta["calibration_clip_seconds"] == 4.0
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    head = [n for n in model.graph.node if n.name in art.meta["excluded_nodes"] and n.op_type == "MatMul"]
    assert len(head) == 1 and producer.get(head[0].input[1]) != "DequantizeLinear"
    _check_recorded(art.meta, manifest)
    with OrtBackend(BackendSpec("ort", "fp8", "cpu"), art.path) as backend:
        audio = load_audio(hindi_wav, tiny.sample_rate)
        values, mask = features(tiny.processor, [audio.samples], tiny.sample_rate)
        out = backend.logits(values, mask)
    assert out.dtype == np.float32 and out.shape[0] == 1 and np.isfinite(out).all()


def test_cache_hit_and_no_temp_folders(tmp_path, monkeypatch):
    from core.models import load_model
    from core.pipeline.onnx_build import build_variant
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path))  # its own artifacts root
    loaded = load_model("random:wav2vec2-tiny")
    first = build_variant(loaded, "fp16", log=lambda *_: None)
    mtime = first.path.stat().st_mtime_ns
    said = []
    again = build_variant(loaded, "fp16", log=said.append)
    assert again.path.stat().st_mtime_ns == mtime and again.meta == first.meta
    assert any("cached" in m for m in said)
    from core.pipeline.onnx_build import build_onnx
    assert first.meta["inputs"]["parent"] == build_onnx(loaded, log=said.append).key
    assert not list(tmp_path.glob("*/.tmp-*"))  # no temp folders left behind


def test_bf16_variant_carries_bfloat16_and_keeps_conv_fp32(tiny, manifest):
    """bf16: the FP16 conversion re-typed to BFLOAT16 (weights rounded from the FP32 export's own values), Conv left
    FP32 (the ONNX spec's Conv has no bfloat16); valid ONNX under strict shape inference. ONNX Runtime's CPU EP has no
    BF16 kernels, so the gate ran it as an FP32 emulation, written beside the artifact and removed."""
    import ml_dtypes
    from onnx import numpy_helper
    from core.pipeline.onnx_build import build_onnx, build_variant
    from core.variants import BF16_EMULATED
    art = build_variant(tiny, "bf16", manifest=manifest, log=lambda *_: None)
    assert art.dir.name.startswith("onnx-bf16-") and art.meta["figures"]["verified_by"] == BF16_EMULATED
    onnx.checker.check_model(str(art.path), full_check=True)
    model, types = _types(art.path)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert TensorProto.FLOAT16 not in types.values()
    assert types["input_values"] == TensorProto.FLOAT and types["logits"] == TensorProto.FLOAT
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and art.meta["kept_fp32"] == {"Conv": len(convs)}
    assert all(types[t] == TensorProto.FLOAT for n in convs for t in [*n.input, *n.output] if t)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(types[n.output[0]] == TensorProto.BFLOAT16 for n in matmuls)
    # each BF16 weight is its FP32 value rounded once to the nearest BF16
    fp32 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(build_onnx(tiny, log=lambda *_: None).path))
            .graph.initializer}
    weights = [t for t in model.graph.initializer if t.data_type == TensorProto.BFLOAT16 and np.prod(t.dims) >= 256]
    assert len(weights) >= 8 and art.meta["bf16_tensors"] > len(weights)
    for t in weights:
        assert np.array_equal(numpy_helper.to_array(t), fp32[t.name].astype(ml_dtypes.bfloat16)), t.name
    _check_recorded(art.meta, manifest)
    assert art.meta["figures"]["conformance_cells"] == 9 and art.meta["figures"]["rel_dlogit"] < 0.1
    assert sorted(p.name for p in art.dir.iterdir()) == ["meta.json", "model.onnx"]
    assert not list(art.dir.parent.glob(".tmp-*"))              # the emulation's temporary folder is gone


def test_int8_weight_only_variant_runs_on_ort_cpu_close_to_fp32(tiny, tiny_onnx, manifest, hindi_wav):
    """int8w: every MatMul with a constant 2-D weight but the final projection reads INT8 weights through a
    DequantizeLinear per output channel (axis 1, symmetric: INT8 zero points of 0); activations stay FP32; ONNX
    Runtime's CPU EP runs it, close to the FP32 export."""
    from onnx import numpy_helper
    from core.audio import load_audio
    from core.backends import BackendSpec
    from core.backends.ort_backend import OrtBackend
    from core.pipeline.onnx_build import build_variant
    from core.transcribe import features
    art = build_variant(tiny, "int8w", manifest=manifest, log=lambda *_: None)
    model = onnx.load(str(art.path))
    assert "QuantizeLinear" not in [n.op_type for n in model.graph.node]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    fp32 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tiny_onnx.path)).graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert len(dq) == art.meta["quantized_weights"] >= 8
    for name, node in dq.items():
        q, scale, zero = (inits[i] for i in node.input)
        assert q.dtype == np.int8 and zero.dtype == np.int8 and not zero.any()
        assert [a.i for a in node.attribute if a.name == "axis"] == [1] and scale.shape == (q.shape[1],)
        # round to nearest: every weight within half a step of its FP32 value
        assert np.all(np.abs(q * scale - fp32[name]) <= scale / 2 + 1e-7), name
    head = [n for n in model.graph.node if n.name in art.meta["excluded_nodes"] and n.op_type == "MatMul"]
    assert len(head) == 1 and head[0].input[1] in inits and inits[head[0].input[1]].dtype == np.float32
    weighted = [n for n in model.graph.node if n.op_type == "MatMul" and n not in head
                and (n.input[1] in inits or n.input[1] in dq)]
    assert weighted and all(n.input[1] in dq for n in weighted) and art.meta["quantized_matmuls"] == len(weighted)
    _check_recorded(art.meta, manifest)
    assert art.meta["bytes"] < art.meta["fp32_bytes"]
    audio = load_audio(hindi_wav, tiny.sample_rate)
    values, mask = features(tiny.processor, [audio.samples], tiny.sample_rate)
    with OrtBackend(BackendSpec("ort", "int8w", "cpu"), art.path) as int8w, \
            OrtBackend(BackendSpec("ort", "fp32", "cpu"), tiny_onnx.path) as reference:
        out, ref = int8w.logits(values, mask), reference.logits(values, mask)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert 0 < np.abs(out - ref).max() < 0.05 * max(1.0, np.abs(ref).max())   # lossy, but by little
