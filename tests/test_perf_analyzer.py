"""Triton's perf_analyzer as the sweep's second load generator: the REAL binary (tritonclient 2.51.0's, installed by
run.sh) against a REAL tritonserver, its figures in the sweep's row keys, and its failure paths."""
from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

from core.audio import load_audio  # noqa: E402
from core.errors import BackendUnavailableError, WorkbenchError  # noqa: E402
from core.triton import perf_analyzer, server  # noqa: E402
from core.triton.loadtest import prepare_clips, sweep  # noqa: E402

TINY = "random:wav2vec2-tiny"


@pytest.fixture(scope="module")
def served_fp16(tiny):
    """A real server taking FP16 audio (what the fast and torch fp16 backends are served with by default)."""
    info = server.start(TINY, "torch:fp32:cpu", name="pa-fp16", max_batch=8, preferred=[4], max_queue_delay_us=2000,
                        instances=1, threads=1, warmup_s=1.0, timeout_s=120, input_dtype="fp16")
    yield info
    server.stop(info)


@pytest.fixture(scope="module")
def clips(tiny, hindi_wav):
    return prepare_clips(tiny, [load_audio(hindi_wav, tiny.sample_rate)], seconds=2.0)


def test_run_sh_installs_a_perf_analyzer_that_runs():
    ok, version = perf_analyzer.available()
    assert ok, version
    assert version.startswith("Perf Analyzer Version 2.51")


def test_input_data_carries_each_clip_as_the_server_declares_it(clips):
    for dtype, np_type in (("FP16", "<f2"), ("FP32", "<f4")):
        data = perf_analyzer.input_data(clips, dtype, with_mask=dtype == "FP32")
        [entry] = data["data"]
        sent = np.frombuffer(base64.b64decode(entry["input_values"]["b64"]), np_type)
        assert entry["input_values"]["shape"] == [clips[0].values.shape[1]] == [len(sent)]
        np.testing.assert_array_equal(sent, clips[0].values[0].astype(np_type))   # the same rounding as the client's
        assert ("attention_mask" in entry) == (dtype == "FP32")
    mask = np.frombuffer(base64.b64decode(entry["attention_mask"]["b64"]), "<i8")
    np.testing.assert_array_equal(mask, clips[0].mask[0])


def test_a_perf_analyzer_sweep_measures_the_real_server(served_fp16, tiny, clips):
    """Two levels against FP16 audio (a wrongly encoded tensor is refused by Triton for its byte size): figures that
    hold together, and the server's own counts behind them."""
    from core.results import rows as db_rows, save
    from core.triton.loadtest import _stats_client, server_stats
    stats = _stats_client(served_fp16.url("grpc"), "grpc", 10)
    before = server_stats(stats, "grpc", "asr", 10)
    # a wide margin: on two shared cores perf_analyzer's 10 % is often not met in ten windows (its own hint)
    rows = sweep(tiny, clips, served_fp16.url("grpc"), "grpc", "asr", concurrency=(1, 4), seconds=1.5, timeout_s=10,
                 generator="perf_analyzer", stability_pct=50)
    after = server_stats(stats, "grpc", "asr", 10)
    assert [r["concurrency"] for r in rows] == [1, 4], rows[-1]["error_examples"]
    for r in rows:
        assert r["load_generator"] == "perf_analyzer" and r["errors"] == 0 and r["n"] > 5, r.get("error_examples")
        assert r["load_generator_version"].startswith("Perf Analyzer Version")
        assert "-i grpc" in r["load_generator_command"]
        assert "--stability-percentage 50 " in r["load_generator_command"]
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["audio_s_per_s"] == pytest.approx(r["items_per_s"] * 2.0, rel=1e-6)
        assert abs(r["in_flight"] - r["concurrency"]) / r["concurrency"] < 0.35   # Little's law in a closed loop
        assert r["consistency"] is None                                           # it checks no outputs
        assert r["server_stats"] and r["server_avg_batch"] >= 1 and r["server_compute_ms"] > 0
        assert r["server_total_ms"] >= r["server_queue_ms"] + r["server_compute_ms"] + r["server_io_ms"] - 1e-2
        assert 0 < r["outside_server_ms"] == pytest.approx(r["mean_ms"] - r["server_total_ms"])
    # its windows are part of what the server served (not a count made up on the client's side)
    assert 0 < sum(r["server_requests"] for r in rows) <= after["requests"] - before["requests"]
    assert rows[1]["server_avg_batch"] > 1.2   # 4 clients, one instance: the dynamic batcher merges requests
    run = save(rows, "sweep")
    assert [r["load_generator"] for r in db_rows(run, "sweep")] == ["perf_analyzer"] * 2


def test_no_stable_measurement_is_a_failed_level_with_the_reason(served_fp16, tiny, clips):
    from core.triton.loadtest import Target, _perf_analyzer
    target = Target([served_fp16.url("grpc")], "grpc", "asr", 10, tiny.processor)
    with _perf_analyzer(target, clips, 0.5) as run:
        run.max_trials = 1   # three windows must agree: one can never be stable
        row = run(2)
    assert row["n"] == 0 and row["errors"] == 1 and np.isnan(row["p50_ms"])
    assert "Failed to obtain stable measurement" in row["error_examples"][0]
    assert "the sweep's --seconds sets the window, 0.5 s" in row["error_examples"][0]


def test_a_down_server_is_a_clear_error(tiny, clips):
    with pytest.raises(BackendUnavailableError, match="not reachable"):
        sweep(tiny, clips, "127.0.0.1:1", "grpc", "asr", concurrency=[1], seconds=1, timeout_s=2,
              generator="perf_analyzer")


def test_it_drives_one_server_and_names_the_generators(served_fp16, tiny, clips):
    with pytest.raises(WorkbenchError, match="perf_analyzer drives one server"):
        sweep(tiny, clips, [served_fp16.url("grpc")] * 2, "grpc", "asr", concurrency=[1], seconds=1,
              generator="perf_analyzer")
    with pytest.raises(WorkbenchError, match="Unknown load generator 'locust'"):
        sweep(tiny, clips, served_fp16.url("grpc"), "grpc", "asr", concurrency=[1], generator="locust")


def test_not_installed_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv(perf_analyzer.ENV, raising=False)
    monkeypatch.setattr(perf_analyzer, "TOOLS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, why = perf_analyzer.available()
    assert not ok and why.startswith("perf_analyzer is not installed.") and "run.sh" in why
    with pytest.raises(BackendUnavailableError) as err:
        perf_analyzer.Runner("127.0.0.1:1", "grpc", "asr", {"data": []}, 1.0, 1.0)
    assert "tritonclient 2.51.0" in err.value.hint


def test_a_binary_that_cannot_start_is_named(monkeypatch, tmp_path):
    broken = tmp_path / "perf_analyzer"
    broken.write_text("#!/bin/sh\necho 'perf_analyzer: error while loading shared libraries: libb64.so.0d' >&2\n"
                      "exit 127\n")
    broken.chmod(0o755)
    monkeypatch.setenv(perf_analyzer.ENV, str(broken))
    ok, why = perf_analyzer.available()
    assert not ok and f"{broken} does not run: perf_analyzer: error while loading shared libraries" in why
