"""core.charts: figures built from result rows carry the right numbers, one row kind and one timing scope each;
core.results: the run a view opens on is never an empty or failed one."""
import math

import plotly.graph_objects as go

from core import charts, results


def lat(backend, audio_s, batch, p50, scope="compute"):
    return {"kind": "latency", "scope": scope, "backend": backend, "audio_s": audio_s, "batch": batch, "p50_ms": p50,
            "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.5, "audio_s_per_s": audio_s * batch / (p50 / 1e3)}


def acc(backend, wer, cer):
    return {"kind": "accuracy", "backend": backend, "wer": wer, "cer": cer, "n": 10}


def sweep(*levels, errors=0):
    """Triton load-sweep rows, one per concurrency level (all failed when errors and no successes)."""
    return [{"kind": "sweep", "backend": "triton:fp32:http", "audio_s": 5.0, "batch": 1, "concurrency": c,
             "n": 0 if errors else 20, "errors": errors, "p50_ms": math.nan if errors else 10.0 * c,
             "p99_ms": math.nan if errors else 15.0 * c, "items_per_s": 0.0 if errors else 100 * c ** 0.5,
             "queue_ms": c, "compute_ms": 8} for c in levels]


ROWS = [lat("torch:fp32:cpu", 1, 1, 100.0), lat("torch:fp32:cpu", 5, 1, 400.0), lat("torch:fp32:cpu", 5, 4, 1200.0),
        lat("ort:fp32:cpu", 1, 1, 50.0), lat("ort:fp32:cpu", 5, 1, 250.0), lat("ort:fp32:cpu", 5, 4, 800.0),
        lat("ort:int8:cpu", 5, 1, 100.0),
        acc("torch:fp32:cpu", 0.10, 0.05), acc("ort:fp32:cpu", 0.10, 0.05), acc("ort:int8:cpu", 0.30, 0.2)]


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
    levels = sweep(1, 2, 4)
    assert len(charts.serving_curve(levels).data) == 2
    stacked = charts.queue_compute(levels)
    assert [t.name for t in stacked.data] == ["queue", "compute"] and list(stacked.data[0].y) == [1, 2, 4]
    for fig in (charts.latency_bars([]), charts.serving_curve([]), charts.queue_compute([{"concurrency": 1}]),
                charts.serving_curve(sweep(1, 2, errors=5))):
        assert isinstance(fig, go.Figure) and fig.layout.annotations


def test_diff_html_marks_insertions_and_deletions():
    out = charts.diff_html("नमस्ते आज मौसम अच्छा है", "नमस्ते कल मौसम अच्छा <b>")
    assert "<del" in out and "आज" in out.split("<del")[1]
    assert "<ins" in out and "कल" in out
    assert "&lt;b&gt;" in out and "<b>" not in out  # transcripts are escaped
    assert "<ins" not in charts.diff_html("a b", "a b")


def test_a_sweep_never_lands_in_a_latency_chart():
    """A Triton sweep's per-concurrency p50s are not latency bars (they used to stack into one '5 s × 1' bar)."""
    for fig in (charts.latency_bars(sweep(1, 2, 4, 8)), charts.latency_vs_length(sweep(1, 2)),
                charts.speedup(sweep(1, 2)), charts.wer_vs_latency(sweep(1, 2) + ROWS[7:])):
        assert not fig.data and fig.layout.annotations
    mixed = ROWS + sweep(1, 2, 4) + [{"kind": "memory", "backend": "ort:fp32:cpu", "peak_mem_mb": 900.0,
                                      "mem_scope": "host"}]
    bars = [t for t in charts.latency_bars(mixed).data if t.type == "bar"]
    assert sorted(sum((list(b.y) for b in bars), [])) == sorted(r["p50_ms"] for r in ROWS[:7])
    assert "triton:fp32:http" not in {x for b in bars for x in b.x}
    assert len(charts.serving_curve(mixed).data[0].x) == 3  # and the latency rows stay out of the sweep chart
    mem = charts.memory_bars(mixed)
    assert [list(t.y) for t in mem.data] == [[900.0]] and "ort:fp32:cpu" in mem.data[0].x


def test_scopes_are_not_mixed():
    both = ROWS + [lat("torch:fp32:cpu", 1, 1, 300.0, "e2e"), lat("ort:fp32:cpu", 1, 1, 200.0, "e2e")]
    assert charts.scopes(both) == ["compute", "e2e"]
    compute = next(t for t in charts.latency_bars(both).data if t.name == "1 s × 1")
    assert list(compute.y) == [100.0, 50.0]
    e2e = charts.latency_bars(both, scope="e2e")
    assert [list(t.y) for t in e2e.data if t.type == "bar"] == [[300.0, 200.0]] and "e2e" in e2e.layout.title.text
    assert charts.speedup_table(both, scope="e2e")["speedup"].tolist() == [1.0, 1.5]
    # only e2e (or only legacy) rows: asking for compute falls back to what the rows have, and says so
    only_e2e = [r for r in both if r.get("scope") == "e2e"]
    assert "e2e" in charts.latency_bars(only_e2e).layout.title.text
    legacy = [{k: v for k, v in r.items() if k != "scope"} for r in ROWS[:3]]
    assert "timed before the protocol" in charts.latency_bars(legacy).layout.title.text
    table = charts.latency_table(both)
    assert table["scope"].tolist() == ["compute"] * 7 + ["e2e"] * 2


def test_compare_runs_without_shared_cells_says_what_differs():
    a = [lat("torch:fp32:cpu", 1, 1, 100.0), lat("torch:fp32:cpu", 5, 1, 400.0)]
    b = [lat("ort:fp16:cuda", 10, 8, 9.0, "e2e"), lat("ort:fp16:cuda", 10, 8, 7.0)]
    why = charts.run_differences(a, b, "#1", "#2")
    text = " | ".join(why)
    assert "timing scopes: #1 compute; #2 compute, e2e" in text
    assert "only in #1: torch:fp32:cpu" in text and "only in #2: ort:fp16:cuda" in text
    assert "only in #1: 1, 5" in text and "only in #2: 10" in text and "only in #2: 8" in text
    fig = charts.compare_runs(a, b, "#1", "#2")
    assert not fig.data and "share no backend" in fig.layout.annotations[0].text
    assert "only in #2: ort:fp16:cuda" in fig.layout.annotations[0].text
    # different scopes only: nothing comparable, and the reason is the scope
    e2e = [dict(r, scope="e2e") for r in a]
    assert "no timing scope in common" in " ".join(charts.run_differences(a, e2e))
    assert not charts.compare_runs(a, e2e).data
    # sharing cells: compared in the shared scope, no differences reported
    assert charts.run_differences(a, a) == [] and len(charts.compare_runs(a, a).data) == 2
    assert charts.run_differences(a, sweep(1, 2)) == ["run B has no latency rows"]


def test_conformance_table_pass_fail():
    rows = [{"kind": "conformance", "backend": b, "cell": c, "passed": p}
            for b, c, p in (("ort:fp16:cuda", "5 s × 1", True), ("ort:fp16:cuda", "5 s × 8", False),
                            ("trt:fp16:cuda", "5 s × 1", True))] + ROWS
    t = charts.conformance_table(rows)
    assert t.loc["5 s × 8", "ort:fp16:cuda"] == "FAIL" and t.loc["5 s × 1", "trt:fp16:cuda"] == "pass"
    assert list(t.columns) == ["ort:fp16:cuda", "trt:fp16:cuda"] and list(t.index) == ["5 s × 1", "5 s × 8"]
    assert not charts.latency_bars(rows[:3]).data  # conformance rows are never latency bars


def test_default_run_skips_empty_and_failed_runs(tmp_path):
    db = tmp_path / "r.sqlite"
    good = results.save(ROWS, "benchmark", "usable", path=db)
    failed = results.save(sweep(1, 2, errors=4), "sweep", "server down", path=db)
    empty = results.save([], "latency", "nothing measured", path=db)
    assert results.default_run(path=db) == good
    assert results.default_run(("sweep",), path=db) is None
    ok_sweep = results.save(sweep(1, 2), "sweep", path=db)
    assert results.default_run(path=db) == ok_sweep and results.default_run(("latency",), path=db) == good
    by_id = {r["id"]: r for r in results.runs(path=db)}
    assert by_id[good]["counts"] == {"latency": 7, "accuracy": 3}
    assert "2 sweep (2 failed)" in results.describe_run(by_id[failed])
    assert "no rows" in results.describe_run(by_id[empty]) and f"#{empty}" in results.describe_run(by_id[empty])


def test_legacy_rows_read_back_typed(tmp_path):
    """A database from before typed rows: no scope column, sweeps saved as kind "load"."""
    import sqlite3
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE runs (id INTEGER PRIMARY KEY, created TEXT, kind TEXT, note TEXT);"
                      "CREATE TABLE results (id INTEGER PRIMARY KEY, run_id INTEGER, kind TEXT, backend TEXT,"
                      " p50_ms REAL, concurrency REAL, gpu TEXT, env TEXT, extra TEXT);"
                      "INSERT INTO runs VALUES (1, '2026-01-01T00:00:00+00:00', 'latency', ''),"
                      " (2, '2026-01-02T00:00:00+00:00', 'load', '');"
                      "INSERT INTO results (run_id, kind, backend, p50_ms) VALUES (1, 'latency', 'torch:fp32:cpu', 5);"
                      "INSERT INTO results (run_id, kind, backend, p50_ms, concurrency)"
                      " VALUES (2, 'load', 'triton:fp32:http', 9, 4);")
    con.commit()
    con.close()
    [old] = results.rows(1, path=db)
    assert old["kind"] == "latency" and old["scope"] == "legacy"
    assert [r["kind"] for r in results.rows(kind="sweep", path=db)] == ["sweep"] == \
        [r["kind"] for r in results.rows(kind="load", path=db)]
    assert [r["kind"] for r in results.runs(path=db)] == ["sweep", "latency"]
    new = results.save([lat("ort:fp32:cpu", 1, 1, 3.0, "e2e")], "latency", path=db)  # the column was added
    assert results.rows(new, path=db)[0]["scope"] == "e2e"
