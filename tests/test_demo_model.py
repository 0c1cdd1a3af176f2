"""The shipped demo model (models/demo-hindi-synth) really transcribes its held-out Hindi test set.

PyTorch FP32, greedy CTC decoding through the model's own processor; offline, no trust_remote_code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "demo-hindi-synth"
TESTSET = REPO / "data" / "demo_testset" / "manifest.tsv"
MARGIN = 0.03  # WER may move this much above the figure recorded at training time (e.g. other CPU kernels)


@pytest.fixture(scope="module")
def demo():
    import torch
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    processor = Wav2Vec2Processor.from_pretrained(MODEL_DIR, local_files_only=True)
    model = Wav2Vec2ForCTC.from_pretrained(MODEL_DIR, local_files_only=True, dtype=torch.float32).eval()
    return model, processor


@pytest.fixture(scope="module")
def testset():
    from core.demo.train import load_testset
    clips, refs = load_testset(TESTSET)
    return clips, refs


def transcribe(demo, clips):
    from core.demo.train import transcribe as run
    model, processor = demo
    return run(model, processor, clips, "cpu", batch_size=1)


def test_files_and_card():
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json",
                 "vocab.json", "README.md", "training.json"):
        assert (MODEL_DIR / name).is_file(), name
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 30e6
    info = json.loads((MODEL_DIR / "training.json").read_text(encoding="utf-8"))
    for key in ("params", "train_seconds", "hardware", "steps", "corpus_size", "heldout_wer", "heldout_cer", "command"):
        assert key in info, key
    assert "NOT a general Hindi recogniser" in (MODEL_DIR / "README.md").read_text(encoding="utf-8")


def test_processor_is_a_ctc_character_vocabulary(demo):
    model, processor = demo
    tok = processor.tokenizer
    assert tok.pad_token_id == 0 == model.config.pad_token_id
    assert tok.unk_token == "[UNK]" and tok.word_delimiter_token == "|"
    assert processor.feature_extractor.sampling_rate == 16000
    assert model.config.vocab_size == len(tok)
    assert "क" in tok.get_vocab() and "्" in tok.get_vocab()


def test_two_heldout_clips_exactly(demo, testset):
    from core.demo.hindi_text import normalize
    clips, refs = testset
    picks = [0, 1]
    hyps = transcribe(demo, [clips[i] for i in picks])
    assert [normalize(h) for h in hyps] == [normalize(refs[i]) for i in picks]


def test_heldout_wer_within_recorded_figure(demo, testset):
    from core.demo.train import score
    clips, refs = testset
    assert 30 <= len(refs) <= 40
    hyps = transcribe(demo, clips)
    wer, cer = score(refs, hyps)
    info = json.loads((MODEL_DIR / "training.json").read_text(encoding="utf-8"))
    assert wer <= info["heldout_wer"] + MARGIN, (wer, info["heldout_wer"])
    assert cer <= info["heldout_cer"] + MARGIN, (cer, info["heldout_cer"])
    assert wer < 0.25 and cer < 0.10


# ---- the same model through the project's own path: core.models, backends, core.transcribe, core.wer

BACKENDS = ("torch:fp32:cpu", "ort:fp32:cpu")


@pytest.fixture(scope="module")
def loaded_demo():
    from core.models import load_model
    from core.pipeline.onnx_build import build_onnx
    loaded = load_model("demo")
    assert loaded.kind == "demo" and "synthetic-speech demo model" in loaded.label
    art = build_onnx(loaded, log=lambda *_: None)   # ort:fp32:cpu runs the built export, never builds it
    assert art.status == "verified" and art.meta["figures"]["wer_judged"]   # a trained model: its WER is gated
    return loaded


@pytest.mark.parametrize("spec", BACKENDS)
def test_two_heldout_clips_exactly_on_each_backend(loaded_demo, spec):
    from core.audio import load_audio
    from core.backends import make_backend
    from core.transcribe import transcribe as run
    from core.wer import load_manifest, normalize
    items = load_manifest(TESTSET)[:2]
    with make_backend(spec, loaded_demo) as backend:
        hyps = [run(load_audio(path, loaded_demo.sample_rate), backend, loaded_demo).text for path, _ in items]
    assert [normalize(h) for h in hyps] == [normalize(ref) for _, ref in items]


@pytest.mark.parametrize("spec", BACKENDS)
def test_heldout_wer_through_the_project_wer_path(loaded_demo, spec):
    from core.backends import make_backend
    from core.wer import evaluate
    info = json.loads((MODEL_DIR / "training.json").read_text(encoding="utf-8"))
    with make_backend(spec, loaded_demo) as backend:
        res = evaluate(backend, loaded_demo, TESTSET)
    assert res["n"] == len(res["utterances"]) >= 30
    assert res["wer"] <= info["heldout_wer"] + MARGIN, (spec, res["wer"], info["heldout_wer"])
    assert res["cer"] <= info["heldout_cer"] + MARGIN, (spec, res["cer"], info["heldout_cer"])
