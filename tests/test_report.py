"""A shareable report of a saved run (issue 17, part 4): `python -m core report --run N --format md|html` writes one
self-contained file with the environment, the method, the tables, the charts (HTML) and the reproduce commands."""
import os
import re
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from core.paths import REPO_ROOT
from core.report import build
from core.results import run as result_run, save
from tests.test_cli import cli

BENCH = ["bench", "--model", "random:wav2vec2-tiny", "--backend", "torch:fp32:cpu", "--seconds", "1", "--batch", "1",
         "2", "--repeats", "3", "--warmup", "1", "--windows", "3", "--wer-manifest", "data/demo_testset/manifest.tsv",
         "--wer-limit", "2"]


@pytest.fixture(scope="module")
def bench_run() -> int:
    """A quick CPU benchmark of the tiny model, saved like any other run."""
    out = cli(*BENCH)
    return int(re.search(r"saved as run (\d+)", out.stderr).group(1))


def _report(run_id: int, fmt: str, tmp_path) -> str:
    out = tmp_path / f"r.{fmt}"
    assert f"wrote {out}" in cli("report", "--run", str(run_id), "--format", fmt, "--out", str(out)).stdout
    return out.read_text(encoding="utf-8")


def test_the_run_records_its_command(bench_run):
    assert result_run(bench_run)["command"] == "python -m core " + " ".join(BENCH)


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_report_has_environment_method_tables_and_commands(bench_run, fmt, tmp_path):
    text = _report(bench_run, fmt, tmp_path)
    import platform
    assert platform.python_version() in text and "torch" in text                 # the environment
    assert "Model: wav2vec2-tiny (random weights — WER meaningless)" in text        # what was measured, and that
                                                                                  # its WER means nothing
    assert "Timing scopes" in text and "warm-up" in text and "Stability" in text  # the method
    assert "Energy and cost: not measured (cpu backend" in text                   # why a figure is missing
    for table in ("Latency", "Accuracy", "Memory"):
        assert table in text
    for column in ("p50_ms", "p99_ms", "wer", "rtfx", "peak_mem_mb"):
        assert column in text
    assert text.count("torch:fp32:cpu") >= 4                                      # 4 latency rows
    command = "python -m core " + " ".join(BENCH)
    assert command in text and "python -m core report --run N --format " + fmt in text
    if fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in text   # charts, drawn in the file
        assert "Latency per backend" in text and "WER vs RTFx" in text
        assert ">None<" not in text                                                 # a missing figure reads "–"
    else:
        assert "| backend | scope | audio_s | batch | p50_ms |" in text and "<script" not in text


def test_html_report_works_offline(bench_run, tmp_path):
    text = _report(bench_run, "html", tmp_path)
    # plotly.js is inlined (megabytes), once; no script is fetched from anywhere
    assert not re.search(r"<script[^>]*\bsrc=", text) and len(text) > 1_000_000
    assert text.count("window.PlotlyConfig = ") == 1


def test_a_run_saved_before_commands_gets_one_rebuilt():
    rid = save([{"kind": "accuracy", "model": "demo", "backend": "ort:fp32:cpu", "wer": 0.1, "cer": 0.02, "n": 3,
                 "manifest": "data/demo_testset/manifest.tsv", "env": {"python": "3.11.7"}}], "accuracy")
    text = build(rid, "md")
    assert ("python -m core wer --model demo --backend ort:fp32:cpu --manifest data/demo_testset/manifest.tsv"
            in text) and "rebuilt from the run's rows" in text


def test_report_errors_are_clear():
    out = cli("report", "--run", "99999", check=False)
    assert out.returncode == 2 and "There is no run 99999" in out.stderr and "→" in out.stderr
    out = cli("report", "--run", "1", "--format", "pdf", check=False)
    assert out.returncode == 2 and "invalid choice: 'pdf'" in out.stderr


def test_benchmark_page_offers_the_report_and_shows_energy(bench_run, monkeypatch, server_navigation):
    monkeypatch.setenv("WORKBENCH_DEFAULT_MODEL", "random:wav2vec2-tiny")
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/benchmark.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="bench_pick").set_value(bench_run).run()
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Report (HTML)" in labels and "Report (MD)" in labels
    assert {"energy_j_per_audio_h", "usd_per_audio_h"} <= set(at.dataframe[0].value.columns)
    assert any("No energy / cost figure" in c.value for c in at.caption)
    charts = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "WER vs RTFx" in charts
