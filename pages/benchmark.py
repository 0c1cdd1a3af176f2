"""Benchmark: latency (compute and e2e scopes) and peak memory per backend × audio length × batch, WER on a
labelled set; then any stored run, by kind, and the comparison of two runs."""
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.backends import make_backend
from core.bench import bench_spec
from core.envinfo import environment
from core.paths import DEMO_TESTSET
from core.results import rows as result_rows, save
from core.wer import evaluate
from pages._runs import compare_two_runs, run_picker, show_run
from pages._shared import active_model, available_backends, default_backends, guarded, model_badge

SCOPES = ("compute", "e2e")

st.title("Benchmark")
loaded = active_model()
model_badge(loaded)

with st.form("bench"):
    c = st.columns([3, 2, 2])
    specs = c[0].multiselect("Backends", available_backends(), default=default_backends(2))
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
    else:
        steps = len(specs) * (len(seconds) * len(batches) * len(SCOPES) + (1 if manifest else 0))
        done, out = [0], []
        bar = st.progress(0.0, text="starting …")
        with guarded():
            for spec in specs:
                bar.progress(done[0] / steps, text=f"loading {spec} …")

                def tick(row, spec=spec):
                    done[0] += 1
                    bar.progress(min(done[0] / steps, 1.0), text=f"{spec} [{row['scope']}]: {row['audio_s']:g} s × "
                                                                 f"{row['batch']} → p50 {row['p50_ms']:.1f} ms")
                # bench_spec loads and closes the backend itself, so that load time and peak memory are its own
                out += bench_spec(spec, loaded, sorted(seconds), sorted(batches), warmup=int(warmup),
                                  repeats=int(repeats), scopes=SCOPES, progress=tick)
                if manifest:
                    bar.progress(done[0] / steps, text=f"{spec}: WER on {Path(manifest).name} …")
                    with make_backend(spec, loaded) as be:
                        r = evaluate(be, loaded, manifest, limit=int(limit))
                        out.append({"kind": "accuracy", "model": loaded.source, "model_label": loaded.label,
                                    "random_weights": loaded.random_weights, "backend": spec,
                                    "runtime": be.spec.runtime, "precision": be.precision, "device": be.device,
                                    "wer": r["wer"], "cer": r["cer"], "n": r["n"], "manifest": str(manifest),
                                    "env": environment()})
                    done[0] += 1
            run_id = save(out, "benchmark", note=f"dashboard: {', '.join(specs)} on {loaded.source}")
            bar.progress(1.0, text=f"done — saved as run {run_id}")
            st.session_state["bench_run"] = run_id
            st.session_state["bench_pick"] = run_id  # the picker below opens on the run just measured

st.subheader("Results")
picked = run_picker("bench_pick")
if picked is None:
    st.caption("No usable runs yet: run a benchmark above (or `python -m core bench`).")
else:
    data = result_rows(picked["id"])
    show_run(data, "bench_view")
    df = pd.DataFrame(data)
    d1, d2, _ = st.columns([1, 1, 4])
    d1.download_button("CSV", df.drop(columns=["env"], errors="ignore").to_csv(index=False),
                       f"run-{picked['id']}.csv", "text/csv", icon=":material/download:")
    d2.download_button("JSON", json.dumps(data, indent=2, ensure_ascii=False, default=str), f"run-{picked['id']}.json",
                       "application/json", icon=":material/download:")

st.subheader("Compare two runs")
compare_two_runs("cmp", st.session_state.get("bench_view_scope"))
