"""Text normalisation, WER/CER through jiwer, and the manifest formats users bring."""
import json

import pytest

from core.errors import ManifestError
from core.wer import evaluate, load_manifest, normalize, scores


def test_devanagari_normalisation():
    # danda and double danda go, punctuation goes, spaces collapse
    assert normalize("नमस्ते,  दुनिया।  फिर मिलेंगे॥") == "नमस्ते दुनिया फिर मिलेंगे"
    # a nukta letter precomposed (U+0958) or decomposed (क + ़) — NFC keeps U+0958 composition-excluded
    # characters decomposed, so both spellings normalise to the same string
    assert normalize("\u0958") == normalize("\u0915\u093c")
    assert normalize("Hello World!") == "hello world"


def test_scores_known_values():
    s = scores(["एक दो तीन चार"], ["एक दो तीन पांच"])
    assert s["wer"] == pytest.approx(0.25) and s["n"] == 1
    # 13 characters with spaces; चार -> पांच is च→प, +ं, र→च: 3 edits
    assert s["cer"] == pytest.approx(3 / 13)
    assert scores(["नमस्ते।"], ["नमस्ते"])["wer"] == 0.0


def test_scores_need_a_reference():
    with pytest.raises(ManifestError, match="No non-empty reference"):
        scores([""], ["कुछ"])


@pytest.fixture
def clips(tmp_path, hindi_wav):
    (tmp_path / "clips").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "clips" / name).write_bytes(hindi_wav.read_bytes())
    return tmp_path


def test_manifest_formats(clips):
    (clips / "cv.tsv").write_text("client_id\tpath\tsentence\tup_votes\nx\ta.wav\tनमस्ते\t2\ny\tb.wav\tदुनिया\t1\n",
                                  encoding="utf-8")
    (clips / "m.csv").write_text("audio,text\nclips/a.wav,\"नमस्ते, दुनिया\"\n", encoding="utf-8")
    (clips / "m.jsonl").write_text(json.dumps({"audio_filepath": str(clips / "clips/b.wav"), "text": "दुनिया"},
                                              ensure_ascii=False) + "\n", encoding="utf-8")
    cv = load_manifest(clips / "cv.tsv")  # Common Voice: paths relative to clips/
    assert [p.name for p, _ in cv] == ["a.wav", "b.wav"] and all(p.exists() for p, _ in cv)
    assert cv[1][1] == "दुनिया"
    assert load_manifest(clips / "m.csv")[0] == (clips / "clips/a.wav", "नमस्ते, दुनिया")
    assert load_manifest(clips / "m.jsonl")[0][0].exists()


def test_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "none.tsv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,words\nx.wav,hello\n")
    with pytest.raises(ManifestError, match="no audio path column"):
        load_manifest(bad)


def test_evaluate_end_to_end(tiny, tiny_onnx, clips):
    from core.backends import make_backend
    (clips / "m.tsv").write_text("path\tsentence\na.wav\tनमस्ते आज मौसम बहुत अच्छा है\n"
                                 "b.wav\tनमस्ते आज मौसम बहुत अच्छा है\n", encoding="utf-8")
    with make_backend("ort:fp32:cpu", tiny) as ort:
        r = evaluate(ort, tiny, clips / "m.tsv")
    assert r["n"] == 2 and len(r["utterances"]) == 2
    # random weights: the hypothesis is noise, so every word is wrong
    assert r["wer"] >= 0.8 and 0 < r["cer"]
    assert r["utterances"][0]["hypothesis"] == r["utterances"][1]["hypothesis"]  # same audio, same text


def test_manifest_encoding_empty_and_quotes(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        load_manifest(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,text\na.wav,café\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="is not UTF-8 text"):
        load_manifest(latin)
    quote = tmp_path / "quote.csv"
    quote.write_text('path,text\na.wav,"नमस्ते, दुनिया\nb.wav,x\n', encoding="utf-8")
    with pytest.raises(ManifestError, match="is not valid CSV"):
        load_manifest(quote)


def test_evaluate_skips_a_missing_clip_and_says_so(tiny, tiny_onnx, clips):
    from core.backends import make_backend
    (clips / "m.tsv").write_text("path\tsentence\na.wav\tनमस्ते\nmissing.wav\tदुनिया\nb.wav\tनमस्ते\n",
                                 encoding="utf-8")
    with make_backend("ort:fp32:cpu", tiny) as ort:
        r = evaluate(ort, tiny, clips / "m.tsv")
    assert r["n"] == 2 and [s["audio"].endswith("missing.wav") for s in r["skipped"]] == [True]
    assert "not found" in r["skipped"][0]["error"]
