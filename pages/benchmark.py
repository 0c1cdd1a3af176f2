"""Benchmark: latency/throughput per backend × audio length × batch, WER on a labelled set, charts, history."""
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core import charts
from core.backends import make_backend
from core.bench import bench_backend
from core.envinfo import environment
from core.paths import DEMO_TESTSET
from core.results import rows as result_rows, runs, save
from core.wer import evaluate
from pages._shared import active_model, available_backends, default_backends, guarded, model_badge

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
    repeats = c[1].number_input("Repeats", 3, 1000, 20, help="p99 needs ≥ 100 repeats to mean much")
    manifest = c[2].text_input("Labelled set for WER (CSV/TSV/JSONL; empty: skip)",
                               value=str(DEMO_TESTSET) if DEMO_TESTSET.exists() else "")
    limit = c[3].number_input("Clips", 1, 10000, 20, help="first N clips of the labelled set")
    run = st.form_submit_button("Run benchmark", type="primary", icon=":material/play_arrow:")

if run:
    if not (specs and seconds and batches):
        st.error("Pick at least one backend, audio length and batch size.")
    else:
        steps = len(specs) * (len(seconds) * len(batches) + (1 if manifest else 0))
        done, out = [0], []
        bar = st.progress(0.0, text="starting …")
        with guarded():
            for spec in specs:
                bar.progress(done[0] / steps, text=f"loading {spec} …")
                with make_backend(spec, loaded) as be:
                    def tick(row):
                        done[0] += 1
                        bar.progress(done[0] / steps, text=f"{spec}: {row['audio_s']:g} s × {row['batch']} → "
                                                        f"p50 {row['p50_ms']:.1f} ms")
                    out += bench_backend(be, loaded, sorted(seconds), sorted(batches), int(warmup), int(repeats),
                                         progress=tick)
                    if manifest:
                        bar.progress(done[0] / steps, text=f"{spec}: WER on {Path(manifest).name} …")
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

latest = st.session_state.get("bench_run") or next((r["id"] for r in runs() if r["rows"]), None)
if latest:
    data = result_rows(latest)
    st.subheader(f"Run {latest}")
    if any(r.get("random_weights") for r in data):
        st.caption(":orange-badge[random weights] WER/CER of this run are meaningless; latency is real.")
    t1, t2, t3, t4, t5 = st.tabs(["Latency", "Speed-up", "WER vs latency", "Audio length", "Batch"])
    t1.plotly_chart(charts.latency_bars(data), width="stretch", key="c_lat")
    t2.plotly_chart(charts.speedup(data), width="stretch", key="c_speed")
    t3.plotly_chart(charts.wer_vs_latency(data), width="stretch", key="c_wer")
    t4.plotly_chart(charts.latency_vs_length(data), width="stretch", key="c_len")
    t5.plotly_chart(charts.throughput_vs_batch(data), width="stretch", key="c_batch")
    df = pd.DataFrame(data)
    cols = [c for c in ("kind", "backend", "audio_s", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "rtf",
                        "audio_s_per_s", "wer", "cer", "n", "gpu") if c in df]
    st.dataframe(df[cols], hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in cols if c.endswith("_ms")})
    d1, d2, _ = st.columns([1, 1, 4])
    d1.download_button("CSV", df.drop(columns=["env"], errors="ignore").to_csv(index=False), f"run-{latest}.csv",
                       "text/csv", icon=":material/download:")
    d2.download_button("JSON", json.dumps(data, indent=2, ensure_ascii=False, default=str), f"run-{latest}.json",
                       "application/json", icon=":material/download:")

st.subheader("Compare two runs")
history = [r for r in runs() if r["rows"]]
if len(history) < 2:
    st.caption("Two or more saved runs are needed (from this page or `python -m core bench`).")
else:
    label = {r["id"]: f"#{r['id']} · {r['created']} · {r['note'] or r['kind']}" for r in history}
    c = st.columns(2)
    a = c[0].selectbox("Run A", list(label), index=1, format_func=label.get)
    b = c[1].selectbox("Run B", list(label), index=0, format_func=label.get)
    ra, rb = result_rows(a), result_rows(b)
    st.plotly_chart(charts.compare_runs(ra, rb, f"#{a}", f"#{b}"), width="stretch", key="c_cmp")
    env_a, env_b = (ra[0].get("env", {}) if ra else {}), (rb[0].get("env", {}) if rb else {})
    diff = {k: (env_a.get(k), env_b.get(k)) for k in sorted(set(env_a) | set(env_b)) if env_a.get(k) != env_b.get(k)}
    if diff:
        st.caption("Environment differences: " + "; ".join(f"{k}: {x} → {y}" for k, (x, y) in diff.items()))
