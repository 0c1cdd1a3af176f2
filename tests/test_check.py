"""The conformance matrix (core.check): torch, ONNX Runtime and the fast backend's CPU reference mode pass it with
the tiny model, and it catches the CUDA-graph aliasing bug (a split batch whose pieces came back overwritten)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.backends import make_backend
from core.backends.fast_backend import FastBackend
from core.check import BATCHES, cells, check_backend, lengths_for, run_check, speech_source
from core.cli import main
from core.transcribe import features

BUCKETS = (0.5, 1.0, 1.5, 2.0)           # small length buckets keep the full matrix quick on two cores
LENGTHS = lengths_for(BUCKETS)           # 0.35 s inside, 1.5 s at, 1.75 s between, 3.5 s past the largest
FAST = {"fast:fp32:cpu": {"buckets_s": BUCKETS}}


def test_matrix_has_every_batch_and_length():
    assert LENGTHS == {"inside a bucket": 0.35, "exactly a bucket": 1.5, "between buckets": 1.75,
                       "past the largest bucket": 3.5}
    assert BATCHES == (1, 2, 3, 8, 9, 16, 17, 33)


@pytest.fixture(scope="module")
def matrix_rows(tiny, tiny_onnx):
    return run_check(tiny, ["torch:fp32:cpu", "ort:fp32:cpu", "fast:fp32:cpu"], reference="torch:fp32:cpu",
                     lengths=LENGTHS, options=FAST)


def test_torch_ort_and_fast_reference_mode_pass_the_matrix(matrix_rows):
    by_backend = {}
    for r in matrix_rows:
        by_backend.setdefault(r["backend"], []).append(r)
    assert set(by_backend) == {"torch:fp32:cpu", "ort:fp32:cpu", "fast:fp32:cpu"}
    for backend, rows in by_backend.items():
        # 8 batch sizes x 4 lengths, 7 padded mixes, 2 repeats with other data in between
        assert len(rows) == 8 * 4 + 7 + 2, backend
        failed = [(r["cell"], r["reason"]) for r in rows if not r["passed"]]
        assert not failed, (backend, failed)
        assert max(r["max_abs_dlogit"] for r in rows) < 1e-4
        assert all(r["transcripts_agree"] == r["transcripts_total"] == r["batch"] for r in rows)
    assert {r["batch"] for r in matrix_rows} == set(BATCHES)


class AliasingFast(FastBackend):
    """The fast backend as it was before the fix: a split batch concatenates views of graph output buffers
    after all pieces ran, so later replays overwrite the earlier pieces."""

    def forward(self, values, lengths):
        b = values.shape[0]
        step = self.batch_buckets[-1]
        if b <= step:
            return super().forward(values, lengths)
        with torch.inference_mode():
            return torch.cat([super(AliasingFast, self).forward(values[i:i + step], lengths[i:i + step])
                              for i in range(0, b, step)])


def test_reference_mode_catches_the_aliasing_bug(tiny):
    """On a CUDA GPU the bug returned wrong logits for batches above 8; the CPU reference mode runs the same
    buckets, static buffers and replays, so the matrix fails here too, at exactly the split batch sizes."""
    from core.backends import BackendSpec
    matrix = cells(tiny, speech_source(tiny), batches=(1, 8, 9, 16, 17), lengths={"at": 1.0})
    with make_backend("torch:fp32:cpu", tiny) as ref:
        refs = {c.label: _logits(ref, tiny, c.items) for c in matrix}
        refs.update({(c.label, "again"): _logits(ref, tiny, c.again) for c in matrix if c.again})
    buggy = AliasingFast(BackendSpec.parse("fast:fp32:cpu"), tiny, buckets_s=BUCKETS).load()
    rows = {r["cell"]: r for r in check_backend(buggy, tiny, matrix, refs)}
    assert all(rows[c]["passed"] for c in rows if c.startswith(("1 x", "8 x")))
    assert not any(rows[c]["passed"] for c in rows if c.startswith(("9 x", "16 x", "17 x")))
    fixed = FastBackend(BackendSpec.parse("fast:fp32:cpu"), tiny, buckets_s=BUCKETS).load()
    assert all(r["passed"] for r in check_backend(fixed, tiny, matrix, refs))


def _logits(backend, loaded, items):
    from core.transcribe import real_frames
    values, mask = features(loaded.processor, items, loaded.sample_rate)
    return real_frames(loaded.model.config, backend.logits(values, mask), mask)


def test_a_kept_graph_output_is_overwritten_by_another_replay(tiny):
    """The contract the fix relies on, made visible on the CPU: forward()'s result is only valid until the next
    replay of any graph (graphs share one memory pool on CUDA)."""
    with make_backend("fast:fp32:cpu", tiny, buckets_s=BUCKETS) as fast:
        a = fast.forward(*fast.tensors(*features(tiny.processor, [np.ones(8000, np.float32)], 16000)))
        assert torch.isfinite(a).all()
        fast.forward(*fast.tensors(*features(tiny.processor, [np.ones(16000, np.float32)] * 2, 16000)))
        assert torch.isnan(a).all()


def test_tight_tolerance_fails_and_cli_exits_non_zero(tiny, tiny_onnx, capsys, monkeypatch):
    """A difference beyond the precision's tolerance fails the cell; `check` then exits 1 and says which."""
    from core import check
    monkeypatch.setitem(check.TOLERANCES, "fp32", (1e-12, 0.99, 0.95))
    code = main(["check", "--model", "random:wav2vec2-tiny", "--backend", "ort:fp32:cpu", "--batch", "1", "2",
                 "--seconds", "0.7", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1 and rows and not any(r["passed"] for r in rows)
    assert all("|dlogit|" in r["reason"] for r in rows)
    monkeypatch.undo()
    assert main(["check", "--model", "random:wav2vec2-tiny", "--backend", "ort:fp32:cpu", "--batch", "1", "2",
                 "--seconds", "0.7"]) == 0
    out = capsys.readouterr()
    assert "ort:fp32:cpu: 2/2 cells pass" in out.err and "pass" in out.out


def test_parse_option_reads_json_values_and_keeps_text():
    from core.backends import parse_option
    assert parse_option("compile=precompile") == ("compile", "precompile")
    assert parse_option("dynamic_batch=true") == ("dynamic_batch", True)
    assert parse_option("buckets_s=[1, 2.5]") == ("buckets_s", [1, 2.5])
    assert parse_option("url=localhost:8001") == ("url", "localhost:8001")
    for bad in ("compile", "=1", "two words=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_option(bad)


def test_check_option_reaches_the_backend_and_a_misspelt_one_fails_first(tiny, capsys, monkeypatch):
    """`check --option KEY=VALUE` gives every checked backend that option (JSON values parsed): the fast backend with
    buckets_s=[1] runs a 0.7 s item through its 1 s graph. A name the backend does not take fails before the
    reference runs, with the backend named."""
    from core import check
    made = []
    real = check.make_backend
    monkeypatch.setattr(check, "make_backend", lambda spec, loaded, **o: made.append((spec, o)) or real(spec, loaded, **o))
    assert main(["check", "--model", "random:wav2vec2-tiny", "--backend", "fast:fp32:cpu", "--batch", "1",
                 "--seconds", "0.7", "--option", "buckets_s=[1]", "--option", "mask_free=false", "--no-save"]) == 0
    assert ("fast:fp32:cpu", {"buckets_s": [1], "mask_free": False}) in made
    assert "fast:fp32:cpu: 1/1 cells pass" in capsys.readouterr().err
    made.clear()
    assert main(["check", "--model", "random:wav2vec2-tiny", "--backend", "fast:fp32:cpu", "--option", "bucket_s=[1]",
                 "--no-save"]) == 2
    assert "fast:fp32:cpu was given an option it does not take" in capsys.readouterr().err
    assert [spec for spec, _ in made] == ["fast:fp32:cpu"]      # the reference was never made


def test_conformance_run_is_saved_typed(matrix_rows):
    from core import results
    run = results.save(matrix_rows, "conformance", note="test")
    back = results.rows(run)
    assert {r["kind"] for r in back} == {"conformance"} and all(r["passed"] for r in back)


def test_transcripts_gate_trained_models_only():
    """Near-tied logits of random weights flip characters at any precision, so transcripts decide only for
    trained models; logits and frames decide for both."""
    from core.check import text_cer, verdict
    m = {"max_abs_dlogit": 1e-6, "scale": 2.0, "frame_agree": 0.9995, "transcripts_agree": 1,
         "transcripts_total": 2, "transcript_cer": text_cer(["नमस्ते आज", "मौसम अच्छा है"], ["नमस्ते आज", "मौसम बुरा है"])}
    assert 0.1 < m["transcript_cer"] < 0.5
    assert verdict(m, "fp32", random_weights=True) == (True, "")
    ok, why = verdict(m, "fp32", random_weights=False)
    assert not ok and "transcript CER" in why
    assert verdict(dict(m, frame_agree=0.5), "fp16", random_weights=True)[1].startswith("frame agreement")
    assert text_cer(["", ""], ["", ""]) == 0.0 and text_cer([""], ["क"]) == 1.0


def test_latest_verdicts_take_one_models_newest_run(monkeypatch, tmp_path):
    """What the Build page shows beside each artifact: per backend, the newest saved check run of this model only."""
    from core import results
    from core.check import latest_verdicts
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path))

    def cell(model, backend, name, passed):
        return {"kind": "conformance", "model": model, "backend": backend, "cell": name, "passed": passed,
                "reason": "" if passed else "|Δlogit| too large"}

    results.save([cell("demo", "ort:int8:cpu", "1 x 0.7 s", False), cell("demo", "ort:int8:cpu", "3 x 2 s", True)],
                 "conformance")
    results.save([cell("demo", "ort:int8:cpu", "1 x 0.7 s", True), cell("other", "ort:int8:cpu", "1 x 0.7 s", False)],
                 "conformance")
    newest = latest_verdicts("demo")["ort:int8:cpu"]
    assert (newest["passed"], newest["cells"], newest["first_failure"]) == (1, 1, None)
    assert latest_verdicts("other")["ort:int8:cpu"]["first_failure"] == "1 x 0.7 s: |Δlogit| too large"
    assert latest_verdicts("nobody") == {}
