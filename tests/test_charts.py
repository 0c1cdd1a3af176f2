"""core.charts: figures built from result rows carry the right numbers."""
import plotly.graph_objects as go

from core import charts


def lat(backend, audio_s, batch, p50, wer=None):
    return {"backend": backend, "audio_s": audio_s, "batch": batch, "p50_ms": p50, "p90_ms": p50 * 1.1,
            "p99_ms": p50 * 1.5, "audio_s_per_s": audio_s * batch / (p50 / 1e3)}


ROWS = [lat("torch:fp32:cpu", 1, 1, 100.0), lat("torch:fp32:cpu", 5, 1, 400.0), lat("torch:fp32:cpu", 5, 4, 1200.0),
        lat("ort:fp32:cpu", 1, 1, 50.0), lat("ort:fp32:cpu", 5, 1, 250.0), lat("ort:fp32:cpu", 5, 4, 800.0),
        lat("ort:int8:cpu", 5, 1, 100.0),
        {"backend": "torch:fp32:cpu", "wer": 0.10, "cer": 0.05}, {"backend": "ort:fp32:cpu", "wer": 0.10, "cer": 0.05},
        {"backend": "ort:int8:cpu", "wer": 0.30, "cer": 0.2}]


def test_latency_bars_whiskers_reach_p99():
    fig = charts.latency_bars(ROWS)
    bars = [t for t in fig.data if t.type == "bar"]
    one = next(b for b in bars if b.name == "1 s × 1")
    assert list(one.x) == ["torch:fp32:cpu", "ort:fp32:cpu"] and list(one.y) == [100.0, 50.0]
    assert list(one.error_y.array) == [50.0, 25.0] and not one.error_y.symmetric


def test_speedup_against_pytorch_fp32():
    table = charts.speedup_table(ROWS)
    got = {(r.backend, r.config): r.speedup for r in table.itertuples()}
    assert got[("ort:fp32:cpu", "1 s × 1")] == 2.0
    assert got[("ort:int8:cpu", "5 s × 1")] == 4.0
    assert got[("torch:fp32:cpu", "5 s × 4")] == 1.0
    assert charts.speedup([r for r in ROWS if r["backend"] != "torch:fp32:cpu"]).layout.annotations  # no baseline


def test_pareto_front():
    pts = [(1.0, 0.3), (2.0, 0.1), (3.0, 0.1), (0.5, 0.9), (2.5, 0.05)]
    assert charts.pareto_front(pts) == [3, 0, 1, 4]


def test_wer_vs_latency_marks_frontier():
    fig = charts.wer_vs_latency(ROWS)
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    # at 5 s × 1: int8 100 ms/WER .3, ort fp32 250 ms/WER .1, torch 400 ms/WER .1 (dominated)
    assert list(front.x) == [100.0, 250.0] and list(front.y) == [0.3, 0.1]


def test_length_batch_compare_serving_and_empty():
    assert {t.name for t in charts.latency_vs_length(ROWS).data} == {"torch:fp32:cpu", "ort:fp32:cpu", "ort:int8:cpu"}
    tp = next(t for t in charts.throughput_vs_batch(ROWS).data if t.name == "ort:fp32:cpu")
    assert list(tp.x) == [1, 4] and tp.y[1] == 5 * 4 / 0.8
    cmp = charts.compare_runs(ROWS[:3], [lat("torch:fp32:cpu", 1, 1, 120.0)], "a", "b")
    assert list(cmp.data[1].text) == ["+20%"]
    sweep = [{"concurrency": c, "p50_ms": 10 * c, "p99_ms": 15 * c, "items_per_s": 100 * c ** 0.5,
              "queue_ms": c, "compute_ms": 8} for c in (1, 2, 4)]
    assert len(charts.serving_curve(sweep).data) == 2
    stacked = charts.queue_compute(sweep)
    assert [t.name for t in stacked.data] == ["queue", "compute"] and list(stacked.data[0].y) == [1, 2, 4]
    for fig in (charts.latency_bars([]), charts.serving_curve([]), charts.queue_compute([{"concurrency": 1}])):
        assert isinstance(fig, go.Figure) and fig.layout.annotations


def test_diff_html_marks_insertions_and_deletions():
    out = charts.diff_html("नमस्ते आज मौसम अच्छा है", "नमस्ते कल मौसम अच्छा <b>")
    assert "<del" in out and "आज" in out.split("<del")[1]
    assert "<ins" in out and "कल" in out
    assert "&lt;b&gt;" in out and "<b>" not in out  # transcripts are escaped
    assert "<ins" not in charts.diff_html("a b", "a b")
