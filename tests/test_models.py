"""Model loading: named architectures, local folders, and errors for models that cannot be loaded."""
import inspect
import time

import pytest

import core.models
from core.errors import ModelNotFoundError
from core.models import ARCHITECTURES, build_random, load_model


def test_large_architecture_has_the_reference_shape():
    cfg = ARCHITECTURES["wav2vec2-large"]
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]) == \
        (24, 1024, 16, 4096)


def test_random_models_are_labelled(tiny):
    d = tiny.describe()
    assert d["random_weights"] and "random weights" in tiny.label
    assert d["sample_rate"] == 16000 and 60 <= d["vocab_size"] <= 80
    assert tiny.model.config.do_stable_layer_norm and tiny.uses_attention_mask
    assert "क" in tiny.processor.tokenizer.get_vocab()


def test_local_folder_roundtrip(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.kind == "local" and not loaded.random_weights
    assert loaded.describe()["parameters"] == tiny.describe()["parameters"]


def test_missing_model_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="No model folder"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="Unknown architecture"):
        load_model("random:resnet50")


def test_unreachable_hub_fails_fast():
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="Hub is unreachable") as err:
        load_model("someone/not-cached-model")
    assert time.perf_counter() - t < 15
    assert "demo" in err.value.hint


def test_default_falls_back_to_demo_offline():
    if not core.models.DEMO_MODEL_DIR.joinpath("config.json").exists():
        with pytest.raises(ModelNotFoundError, match="demo model is missing"):
            load_model(None)
        return
    loaded = load_model(None)
    assert loaded.kind == "demo" and "indicwav2vec-hindi unavailable" in loaded.notice
    assert "synthetic-speech demo model" in loaded.label


def test_never_trusts_remote_code():
    assert "trust_remote_code" not in inspect.getsource(core.models).replace(
        "Never pass `trust_remote_code`", "")


def test_build_random_is_deterministic():
    a, _ = build_random("wav2vec2-tiny")
    b, _ = build_random("wav2vec2-tiny")
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))
