"""Streaming latency (issue 17, part 3): buffered CTC over a long file with the demo model, the chunk bookkeeping, the
growing transcript, the CLI verb and the dashboard page."""
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from core.backends import make_backend
from core.paths import DEMO_TESTSET
from core.streaming import GrowingText, demo_long, plan, stream
from core.transcribe import conv_frames, decode_ids, features, transcribe
from core.wer import normalize, scores
from tests.test_cli import cli

if not DEMO_TESTSET.exists():
    pytest.skip(f"{DEMO_TESTSET} is not in this checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def demo():
    from core.models import load_model
    return load_model("demo")


@pytest.fixture(scope="module")
def long_audio(demo):
    """Held-out demo clips joined into one ~40 s file, with their joined reference texts."""
    audio, reference = demo_long(demo.sample_rate, 40.0)
    assert 30 <= audio.duration <= 60
    return audio, reference


@pytest.fixture(scope="module")
def torch_cpu(demo):
    with make_backend("torch:fp32:cpu", demo) as backend:
        yield backend


@pytest.mark.parametrize("n", [400, 401, 719, 720, 32_000, 32_079, 32_080, 16_000 * 37 + 123])
@pytest.mark.parametrize("chunk_s, left_s, right_s", [(2, 4, 1), (0.5, 0, 0), (3, 0.33, 0.02), (0.02, 0.1, 0.3)])
def test_kept_frames_cover_the_file_exactly_once(demo, n, chunk_s, left_s, right_s):
    cfg, rate = demo.model.config, demo.sample_rate
    chunks = plan(n, cfg, rate, chunk_s, left_s, right_s)
    total = int(conv_frames(cfg, n))
    assert [c.frames[0] for c in chunks] == [0] + [c.frames[1] for c in chunks[:-1]]   # contiguous, no overlap
    assert chunks[-1].frames[1] == total and all(c.frames[1] > c.frames[0] for c in chunks)
    assert chunks[0].audio[0] == 0 and chunks[-1].audio[1] == n                           # every sample answered for
    assert [c.audio[0] for c in chunks[1:]] == [c.audio[1] for c in chunks[:-1]]
    for c in chunks:
        b0, b1 = c.buffer
        assert b0 % 320 == 0 and b0 <= c.audio[0]              # buffers start on a frame boundary
        # the buffer yields every kept frame: frames of the buffer reach past the chunk's last frame
        assert int(conv_frames(cfg, b1 - b0)) >= c.frames[1] - b0 // 320
        assert b1 == n or b1 >= c.frames[1] * 320 + 80          # the receptive field's 5 ms past the last frame


def test_streamed_frames_are_the_offline_frames_when_the_context_spans_the_file(demo, torch_cpu, long_audio):
    """With contexts longer than the file every buffer is the whole file, so the kept frames must be exactly the
    whole-file forward's frames: a frame kept twice, dropped or shifted by one shows here."""
    audio = dataclasses.replace(long_audio[0], samples=long_audio[0].samples[: 12 * demo.sample_rate + 111])
    r = stream(audio, torch_cpu, demo, chunk_s=1.5, left_s=30, right_s=30, keep_logits=True)
    values, mask = features(demo.processor, [audio.samples], demo.sample_rate)
    whole = torch_cpu.logits(values, mask)[0]
    assert r.logits.shape == whole.shape and len(r.chunks) == int(np.ceil(len(whole) / 75))
    np.testing.assert_allclose(r.logits, whole, atol=1e-4)
    assert r.text.split() == r.offline_text.split() and r.wer == 0.0


def test_stream_of_a_long_file_is_within_one_point_of_offline(demo, torch_cpu, long_audio):
    audio, reference = long_audio
    r = stream(audio, torch_cpu, demo, chunk_s=2, left_s=4, right_s=1, keep_logits=True)
    offline = transcribe(audio, torch_cpu, demo).text
    assert r.offline_text == offline
    wer_stream, wer_offline = scores([reference], [r.text])["wer"], scores([reference], [offline])["wer"]
    print(f"WER against the references: streamed {wer_stream:.4f}, offline {wer_offline:.4f}; "
          f"streamed against offline {r.wer:.4f}")
    assert wer_stream <= wer_offline + 0.01                    # streaming costs at most one WER point
    assert r.wer == scores([offline], [r.text])["wer"]
    # the growing transcript ends as the greedy decoding of every kept frame
    assert normalize(r.text) == normalize(decode_ids(demo.processor, r.logits.argmax(-1)[None])[0])
    # every word followed by another is final: what a chunk showed is how the transcript goes on
    final = r.text.split()
    for c in r.chunks:
        words = c["text"].split()[:-1]
        assert final[:len(words)] == words, c["chunk"]
    s = r.summary()
    assert s["chunks"] == len(r.chunks) == int(np.ceil(conv_frames(demo.model.config, len(audio.samples)) / 100))
    assert 0 < s["p50_ms"] <= s["p99_ms"] and s["lag_p50_s"] <= s["lag_p99_s"] <= s["lag_max_s"]
    for prev, c in zip(r.chunks, r.chunks[1:]):
        assert c["start_s"] >= prev["available_s"] - 1e-9      # one stream: chunks in turn
    for c in r.chunks:   # a chunk cannot run before its look-ahead has arrived: lag >= look-ahead + compute
        lookahead = c["buffer_end_s"] - c["audio_end_s"]
        assert lookahead == pytest.approx(1.0) or c["buffer_end_s"] == pytest.approx(audio.duration)
        assert c["start_s"] >= c["buffer_end_s"] and c["lag_s"] >= lookahead + c["compute_ms"] / 1e3 - 1e-9


def test_growing_text_equals_one_decoding_of_every_frame_however_it_is_cut(demo):
    """Repeats, blanks and word delimiters on both sides of every cut: decoding part by part, committed at the
    delimiters, gives the text one decoding of the whole sequence gives."""
    tok = demo.processor.tokenizer
    _ = tok.pad_token   # the CTC blank
    frames = ["न", "न", _, "म", "|", "|", _, "|", "स", "स", _, "स", "|", _, "त", "े", "े", "|", "|", "आ", _, _, "ज", "|",
              "म", "ौ", _, "स", "म", "म"]
    ids = np.array(tok.convert_tokens_to_ids(frames), np.int64)
    assert tok.unk_token_id not in ids and tok.word_delimiter_token_id in ids
    whole = " ".join(decode_ids(demo.processor, ids[None])[0].split())
    assert whole == "नम सस ते आज मौसम"
    for parts in (1, 2, 3, 5, 8, len(ids)):
        g = GrowingText(demo.processor)
        for part in np.array_split(ids, parts):
            text = g.extend(part)
        assert " ".join(text.split()) == whole, parts


def test_cli_stream_saves_a_streaming_run(demo, long_audio, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, long_audio[0].samples[: 9 * demo.sample_rate], demo.sample_rate)
    out = cli("stream", str(path), "--model", "demo", "--chunk-s", "1.5", "--left-s", "2", "--right-s", "0.5",
              "--json")
    [row] = json.loads(out.stdout)
    assert row["kind"] == "streaming" and row["chunks"] == 6 and len(row["chunk_rows"]) == 6
    assert row["chunk_s"] == 1.5 and row["left_s"] == 2 and row["right_s"] == 0.5
    for key in ("p50_ms", "p99_ms", "lag_p50_s", "lag_p99_s", "wer", "cer"):
        assert isinstance(row[key], float) and np.isfinite(row[key]), key
    from core.results import rows, run
    run_id = int(out.stderr.split("saved as run ")[1].split()[0])
    assert run(run_id)["kind"] == "streaming" and run(run_id)["command"].startswith("python -m core stream ")
    [saved] = rows(run_id)
    assert saved["p50_ms"] == pytest.approx(row["p50_ms"]) and saved["lag_p99_s"] == pytest.approx(row["lag_p99_s"])


@pytest.mark.parametrize("args, says", [(["--chunk-s", "0"], "--chunk-s"), (["--left-s", "-1"], "--left-s"),
                                        (["--right-s", "x"], "not a number")])
def test_cli_stream_rejects_bad_options(args, says):
    out = cli("stream", "nothing.wav", *args, check=False)
    assert out.returncode == 2 and says in out.stderr


def test_cli_stream_missing_file_is_a_user_error():
    out = cli("stream", "/nonexistent/long.wav", "--model", "demo", "--no-save", check=False)
    assert out.returncode == 2 and "Audio file not found" in out.stderr


def test_streaming_page_streams_the_demo_clips(monkeypatch, server_navigation):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("WORKBENCH_DEFAULT_MODEL", "demo")
    at = AppTest.from_file("../app.py", default_timeout=240)
    at.run()
    at.switch_page("pages/streaming.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.slider(key="stream_demo_s").set_value(15).run()
    at.selectbox(key="stream_backend").set_value("torch:fp32:cpu").run()
    next(b for b in at.button if b.label == "Stream").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    r = at.session_state["stream_result"]["result"]
    assert r.audio_s >= 15 and len(r.chunks) >= 8 and r.text and r.wer is not None
    assert any("Lag p99" in m.label for m in at.metric)
    assert r.text.startswith(at.session_state["stream_result"]["reference"].split()[0])   # the demo model transcribes
