"""The served batches' stage summaries (core.triton.stages) and how bench/gpu_triton.py puts them with the load
levels they belong to; bench/cpu_halves.py's split of the CPUs by physical core."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from core.triton.stages import StageTimes, parse_summary

BENCH = Path(__file__).resolve().parent.parent / "bench"


def batch(st: StageTimes, ms: float = 1.0):
    with st("pad"):
        time.sleep(ms / 1e3)
    with st("run"):
        pass
    st.batch_done()


def test_a_pause_ends_the_summary_and_the_line_reads_back(capsys):
    st = StageTimes("asr_0_1 (GPU 0)", every_s=1e9, gap_s=0.2)
    t0 = time.time()
    batch(st, 5.0)
    batch(st, 5.0)
    t1 = time.time()
    assert capsys.readouterr().out == ""          # no pause yet, and every_s far away
    time.sleep(0.3)
    batch(st)                                     # its first stage comes after the pause: the two before are printed
    line = capsys.readouterr().out.strip()
    s = parse_summary(line)
    assert s["label"] == "asr_0_1 (GPU 0)" and s["batches"] == 2
    assert t0 - 0.01 <= s["t0"] <= s["t1"] <= t1 + 0.01
    assert set(s["p50"]) == {"pad", "run"} and 4.0 <= s["p50"]["pad"] <= s["p90"]["pad"]
    st.flush()
    assert parse_summary(capsys.readouterr().out)["batches"] == 1
    st.flush()                                    # nothing since: nothing printed
    assert capsys.readouterr().out == ""


def test_summaries_every_interval_without_pauses(capsys):
    st = StageTimes("x", every_s=0.05, gap_s=10)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        batch(st)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 3 and all(parse_summary(s)["batches"] > 0 for s in lines)


def test_lines_written_before_the_span_and_other_lines():
    old = "STAGES asr_0_0 (GPU 0) batches 1164 | p50/p90 ms: responses 0.14/0.18, to_host 3.61/6.12"
    s = parse_summary(old)
    assert s["t0"] is None and s["batches"] == 1164 and s["p90"] == {"responses": 0.18, "to_host": 6.12}
    assert parse_summary("WARMED batch sizes [1, 2] at 5 s (asr_0_0)") is None


@pytest.fixture
def bench_import(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("gpu_triton", "cpu_halves"):
        sys.modules.pop(name, None)


def test_each_level_gets_the_summaries_of_its_own_batches(bench_import):
    from gpu_triton import stages_by_level
    line = lambda label, t0, t1, run: f"STAGES {label} batches 9 at {t0}-{t1} | p50/p90 ms: pad 0.1/0.2, run {run}/1"  # noqa: E731
    rows = [{"ended_at": 100.0}, {"ended_at": 200.0}, {"ended_at": 300.0}]
    lines = [line("a", 5, 6, 9.0),                   # a warm-up batch before the first level: left
             line("a", 10, 90, 0.35), line("b", 11, 91, 0.36),
             line("a", 110, 150, 0.43), line("a", 150, 190, 0.44),   # two in one level: the second is left
             line("b", 190, 250, 0.5),               # spans levels 2 and 3: left
             line("b", 400, 410, 0.5),               # after every level: left
             "STAGES a batches 3 | p50/p90 ms: run 1/1"]             # no span: left
    left = stages_by_level(rows, lines, since=8.0)
    assert rows[0]["server_stages"] == {"a": {"pad": 0.1, "run": 0.35}, "b": {"pad": 0.1, "run": 0.36}}
    assert rows[1]["server_stages"] == {"a": {"pad": 0.1, "run": 0.43}}
    assert "server_stages" not in rows[2]
    assert left == [lines[0], lines[4], lines[5], lines[6], lines[7]]


def test_halves_keep_hyper_thread_siblings_together(bench_import):
    from cpu_halves import halves, parse_cpus
    assert parse_cpus("0-3,8") == {0, 1, 2, 3, 8} and parse_cpus("5") == {5}
    # 8 CPUs on 4 cores, Linux's usual numbering: CPU i and i + 4 share a core
    ht = lambda c: {c % 4, c % 4 + 4}  # noqa: E731
    assert halves(range(8), ht) == ([0, 4, 1, 5], [2, 6, 3, 7])
    assert halves({0, 1, 2, 4, 5}, ht) == ([0, 4], [1, 5, 2])   # CPU 6 not ours: core 2 is CPU 2 alone
    assert halves(range(3), lambda c: {c}) == ([0], [1, 2])
    first, second = halves(sorted(__import__("os").sched_getaffinity(0)))   # this machine's own topology files
    assert not set(first) & set(second) and set(first) | set(second) == __import__("os").sched_getaffinity(0)


def test_gpu_triton_script_puts_each_levels_server_stages_with_it(tmp_path):
    """bench/gpu_triton.py's CPU smoke run on a real tritonserver (Python backend, two instance processes), the
    server and the load generator pinned to different CPUs: every level carries both instances' stage summary."""
    import json
    import os
    import subprocess
    pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to pin the server and the clients apart")
    run = subprocess.run(
        [sys.executable, str(BENCH / "gpu_triton.py"), "--model", "random:wav2vec2-tiny", "--backend", "fast:fp32:cpu",
         "--seconds", "1", "--concurrency", "2", "--level-repeats", "2", "--level-seconds", "2", "--batches", "2",
         "--repeats", "3", "--warmup", "1", "--python-backend", "--instances", "2", "--max-batch", "4",
         "--preferred", "2", "--client-processes", "2", "--server-cpus", str(cpus[0]), "--client-cpus", str(cpus[1])],
        capture_output=True, text=True, timeout=400, env={**os.environ, "OUT": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"the load generator's: [{cpus[1]}]" in run.stderr and "not placed in a level" not in run.stderr
    rows = json.loads((tmp_path / "gpu_triton.json").read_text())["triton"]
    assert len(rows) == 2 and all(r["n"] > 0 and r["errors"] == 0 for r in rows)
    for r in rows:
        assert sorted(r["server_stages"]) == ["asr_0_0 (CPU 0)", "asr_0_1 (CPU 0)"]
        assert all({"pad", "run", "to_host"} <= set(s) for s in r["server_stages"].values())
