"""Benchmark: latency (compute and e2e scopes) and peak memory per backend × audio length × batch, WER on a
labelled set; then any stored run, by kind, and the comparison of two runs."""
import json
from functools import partial

import pandas as pd
import streamlit as st

from core import charts, jobs
from core.paths import DEMO_TESTSET
from core.report import build as build_report
from core.results import rows as result_rows
from pages._runs import compare_two_runs, run_picker, show_run
from pages._shared import active_model, available_backends, default_backends, follow_job, model_badge

st.title("Benchmark")
loaded = active_model()
model_badge(loaded)

with st.form("bench"):
    c = st.columns([3, 2, 2])
    specs = c[0].multiselect("Backends", available_backends(), default=default_backends(loaded, 2))
    seconds = c[1].multiselect("Audio lengths (s)", [1, 2, 5, 10, 20, 30], default=[1, 5])
    batches = c[2].multiselect("Batch sizes", [1, 2, 4, 8, 16, 32], default=[1, 4])
    c = st.columns([1, 1, 3, 1])
    warmup = c[0].number_input("Warm-up", 0, 100, 3)
    repeats = c[1].number_input("Repeats", 3, 1000, 20, help="calls per measurement window; p99 needs ≥ 100 "
                                                            "to mean much")
    manifest = c[2].text_input("Labelled set for WER (CSV/TSV/JSONL; empty: skip)",
                               value=str(DEMO_TESTSET) if DEMO_TESTSET.exists() else "")
    limit = c[3].number_input("Clips", 1, 10000, 20, help="first N clips of the labelled set")
    run = st.form_submit_button("Run benchmark", type="primary", icon=":material/play_arrow:")

if run:
    if not (specs and seconds and batches):
        st.error("Pick at least one backend, audio length and batch size.")
    else:  # a background job: leaving the page or reloading it does not lose the run
        args = ["bench", "--model", loaded.source, *[a for b in specs for a in ("--backend", b)],
                "--seconds", *[f"{x:g}" for x in sorted(seconds)], "--batch", *[str(b) for b in sorted(batches)],
                "--warmup", str(int(warmup)), "--repeats", str(int(repeats)),
                "--note", f"dashboard: {', '.join(specs)} on {loaded.source}"]
        if manifest:
            args += ["--wer-manifest", manifest, "--wer-limit", str(int(limit))]
        job = jobs.start(args, label=f"Benchmark · {', '.join(specs)}")
        st.session_state["bench_job"] = job.id


@st.fragment(run_every=1.0)
def bench_job():
    follow_job("bench_job", ("bench_run", "bench_pick"), "benchmark")


bench_job()

st.subheader("Results")
picked = run_picker("bench_pick")
if picked is None:
    st.caption("No usable runs yet: run a benchmark above (or `python -m core bench`).")
else:
    data = result_rows(picked["id"])
    show_run(data, "bench_view")
    df = pd.DataFrame(data)
    d1, d2, d3, d4, _ = st.columns([1, 1, 1.4, 1.4, 2])
    d1.download_button("CSV", df.drop(columns=["env"], errors="ignore").to_csv(index=False),
                       f"run-{picked['id']}.csv", "text/csv", icon=":material/download:")
    d2.download_button("JSON", json.dumps(data, indent=2, ensure_ascii=False, default=str), f"run-{picked['id']}.json",
                       "application/json", icon=":material/download:")
    # the report is built when clicked (the HTML inlines plotly.js: megabytes not worth sending on every rerun)
    for col, fmt, mime in ((d3, "html", "text/html"), (d4, "md", "text/markdown")):
        col.download_button(f"Report ({fmt.upper()})", partial(build_report, picked["id"], fmt),
                            f"run-{picked['id']}-report.{fmt}", mime, icon=":material/description:",
                            key=f"report_{fmt}", help="python -m core report --run N --format " + fmt)

st.subheader("WER vs RTFx across runs")
accuracy = [r for r in result_rows(kind="accuracy") if r.get("rtfx") is not None]
newest = sorted({r["run_id"] for r in accuracy}, reverse=True)[:10]   # the ten newest runs that measured RTFx
st.plotly_chart(charts.wer_vs_rtfx([r for r in accuracy if r["run_id"] in newest]), width="stretch", key="wer_rtfx")
st.caption("RTFx as the Open ASR Leaderboard computes it: total audio seconds / total transcription seconds over the "
           "labelled set, end to end, batched by sorted duration after a warm-up (`python -m core wer --batch-size N`).")

st.subheader("Compare two runs")
compare_two_runs("cmp", st.session_state.get("bench_view_scope"))
