"""RTFx the way the Open ASR Leaderboard computes it (issue 17, part 2): over the labelled demo set, batched by
sorted duration, after a warm-up, end to end; total audio seconds / total transcription seconds, beside WER/CER."""
import json
import math

import pytest
import soundfile as sf

from core import charts
from core.backends import make_backend
from core.paths import DEMO_TESTSET
from core.wer import evaluate, load_manifest
from tests.test_cli import cli

LIMIT = 5


@pytest.fixture(scope="module")
def demo():
    from core.models import load_model
    return load_model("demo")


def _durations(limit: int) -> float:
    return sum(sf.info(str(path)).duration for path, _ in load_manifest(DEMO_TESTSET)[:limit])


@pytest.mark.parametrize("model", ["tiny", "demo"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_rtfx_on_the_demo_set(model, batch_size, request):
    loaded = request.getfixturevalue(model)
    with make_backend("torch:fp32:cpu", loaded) as backend:
        r = evaluate(backend, loaded, DEMO_TESTSET, limit=LIMIT, batch_size=batch_size)
    assert r["n"] == LIMIT and len(r["utterances"]) == LIMIT and not r["skipped"]
    # the numerator is every scored clip's audio, as decoded: the files' own durations
    assert r["audio_s_total"] == pytest.approx(_durations(LIMIT), rel=1e-3)
    assert r["transcribe_s_total"] > 0 and math.isfinite(r["rtfx"])
    assert r["rtfx"] == pytest.approx(r["audio_s_total"] / r["transcribe_s_total"])
    assert r["batch_size"] == batch_size and r["warmup_batches"] == 1
    # utterances come back in manifest order, whatever order the sorted batches ran in
    assert [u["audio"] for u in r["utterances"]] == [p.name for p, _ in load_manifest(DEMO_TESTSET)[:LIMIT]]
    if model == "demo":
        assert r["wer"] < 0.5   # a trained model: batching by duration still transcribes


def test_batching_does_not_change_the_demo_transcripts(demo):
    with make_backend("torch:fp32:cpu", demo) as backend:
        one = evaluate(backend, demo, DEMO_TESTSET, limit=LIMIT, batch_size=1)
        many = evaluate(backend, demo, DEMO_TESTSET, limit=LIMIT, batch_size=4)
    assert [u["hypothesis"] for u in one["utterances"]] == [u["hypothesis"] for u in many["utterances"]]


def test_wer_json_reports_rtfx_beside_wer_and_cer():
    rows = json.loads(cli("wer", "--model", "random:wav2vec2-tiny", "--limit", "3", "--batch-size", "2", "--json",
                          "--no-save").stdout)
    assert len(rows) == 1
    r = rows[0]
    for key in ("wer", "cer", "rtfx"):
        assert isinstance(r[key], float) and math.isfinite(r[key]), key
    assert r["rtfx"] > 0 and r["batch_size"] == 2 and r["n"] == 3
    bad = cli("wer", "--batch-size", "0", check=False)
    assert bad.returncode == 2 and "the batch size must be between 1 and 1024" in bad.stderr


def test_pareto_chart_across_backends_and_runs():
    rows = [{"kind": "accuracy", "backend": "torch:fp32:cpu", "run_id": 1, "wer": 0.09, "rtfx": 100.0},
            {"kind": "accuracy", "backend": "ort:int8:cpu", "run_id": 1, "wer": 0.12, "rtfx": 80.0},  # dominated
            {"kind": "accuracy", "backend": "ort:int8:cpu", "run_id": 2, "wer": 0.11, "rtfx": 250.0},
            {"kind": "accuracy", "backend": "x", "run_id": 2, "wer": 0.2},                            # no RTFx
            {"kind": "latency", "backend": "torch:fp32:cpu", "p50_ms": 3.0}]
    table = charts.wer_rtfx_table(rows)
    assert list(table["label"]) == ["torch:fp32:cpu · #1", "ort:int8:cpu · #1", "ort:int8:cpu · #2"]
    assert list(table["pareto"]) == [True, False, True]
    fig = charts.wer_vs_rtfx(rows)
    assert "RTFx" in fig.layout.xaxis.title.text and len(fig.data) == 2
    assert sorted(fig.data[1].x) == [100.0, 250.0]   # the frontier
