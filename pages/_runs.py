"""Stored result runs on a page: a run picker, a timing-scope picker, one run's charts by row kind, and the
comparison of two runs. Shared by Overview and Benchmark; every figure comes from core.charts."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import charts
from core.results import default_run, describe_run, rows as result_rows, runs, scope_label

ALL_KINDS = ("latency", "accuracy", "memory", "sweep", "conformance")
MS = {"p50_ms", "p90_ms", "p99_ms", "mean_ms"}


def _choose(label: str, options: list[int], default: int | None, key: str, labels: dict[int, str]):
    """A selectbox over run ids that opens on `default` and follows it (a newer usable run becomes the view) until
    the user picks another run, whose choice is then kept while it exists."""
    default = default if default in options else options[0]
    current, before = st.session_state.get(key), st.session_state.get(f"{key}__default")
    if current not in options or current == before:
        st.session_state[key] = default
    st.session_state[f"{key}__default"] = default
    return st.selectbox(label, options, key=key, format_func=labels.get)


def run_picker(key: str, kinds=ALL_KINDS, label: str = "Run") -> dict | None:
    """Pick a stored run. Opens on the newest run with usable rows of `kinds` (never an empty or failed one);
    runs without rows are not offered. None when there is nothing to show."""
    history = [r for r in runs() if r["rows"]]
    default = default_run(kinds, history=history)
    if not history or default is None:
        return None
    by_id = {r["id"]: r for r in history}
    picked = _choose(label, list(by_id), default, key, {i: describe_run(r) for i, r in by_id.items()})
    return by_id[picked]


def scope_picker(data: list[dict], key: str) -> str | None:
    """Choose the timing scope the latency charts draw (only the scopes this run has); compute by default."""
    have = charts.scopes(data)
    if len(have) > 1:
        if st.session_state.get(key) not in have:
            st.session_state[key] = charts.pick_scope(data)
        scope = st.radio("Timing scope", have, key=key, horizontal=True,
                         help="compute: device tensors in, device logits out. e2e: audio array → features → "
                              "forward → greedy text, wall clock. They time different things, so no chart mixes them.")
    else:
        scope = have[0] if have else None
    if scope:
        st.caption(f"Timing scope: **{scope_label(scope)}**")
    return scope


def _table(df: pd.DataFrame, key: str) -> None:
    st.dataframe(df, hide_index=True, width="stretch", key=key,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in df.columns if c in MS})


def show_run(data: list[dict], key: str, compact: bool = False) -> None:
    """One run's rows, each kind in its own view: latency (one scope at a time), accuracy, memory, a load sweep
    with the serving charts, conformance as pass/fail. `compact`: the Overview's short form."""
    kinds = {r.get("kind") for r in data}
    if not data:
        st.info("This run has no rows.", icon=":material/info:")
        return
    if any(r.get("random_weights") for r in data) and "accuracy" in kinds:
        st.caption(":orange-badge[random weights] WER/CER of this run are meaningless; latency is real.")
    if kinds & {"latency", "accuracy", "memory"}:
        scope = scope_picker(data, f"{key}_scope") or "compute"
        if compact:
            st.plotly_chart(charts.latency_bars(data, scope=scope), width="stretch", key=f"{key}_lat")
            if not charts.speedup_table(data, scope=scope).empty:
                st.plotly_chart(charts.speedup(data, scope=scope), width="stretch", key=f"{key}_speed")
            if not charts.accuracy_vs_latency(data, scope).empty:
                st.plotly_chart(charts.wer_vs_latency(data, scope), width="stretch", key=f"{key}_wer")
        else:
            tabs = st.tabs(["Latency", "Speed-up", "WER vs latency", "Audio length", "Batch", "Memory"])
            figs = [charts.latency_bars(data, scope=scope), charts.speedup(data, scope=scope),
                    charts.wer_vs_latency(data, scope), charts.latency_vs_length(data, scope),
                    charts.throughput_vs_batch(data, scope), charts.memory_bars(data)]
            for i, (tab, fig) in enumerate(zip(tabs, figs)):
                tab.plotly_chart(fig, width="stretch", key=f"{key}_tab{i}")
        if "latency" in kinds:
            _table(charts.latency_table(data), f"{key}_lat_table")
            why = dict.fromkeys(f"{r['backend']}: {r[k]}" for r in data if r.get("kind") == "latency"
                                for k in ("energy_reason", "usd_reason") if r.get(k))
            if why:  # an empty energy/cost cell is explained, never shown as zero
                st.caption("No energy / cost figure for " + "; ".join(why))
            price = next((r for r in data if r.get("gpu_price_usd_h")), None)
            if price:
                st.caption(f"Cost at \\${price['gpu_price_usd_h']:g} per GPU-hour ({price.get('gpu_price_source')})")
        extra = pd.DataFrame([r for r in data if r.get("kind") in ("accuracy", "memory")])
        if not compact and not extra.empty:
            cols = ["kind", "backend", "wer", "cer", "rtfx", "batch_size", "n", "peak_mem_mb", "mem_scope", "peak_device_mb",
                    "peak_host_rss_mb", "load_s"]
            _table(extra[[c for c in cols if c in extra]], f"{key}_acc_table")
    if "sweep" in kinds:
        sweep = [r for r in data if r.get("kind") == "sweep"]
        if any(r.get("errors") for r in sweep):
            st.warning("Some requests of this sweep failed: see the errors column.", icon=":material/warning:")
        c = st.columns(2)
        c[0].plotly_chart(charts.serving_curve(sweep), width="stretch", key=f"{key}_serving")
        c[1].plotly_chart(charts.queue_compute(sweep), width="stretch", key=f"{key}_queue")
        df = pd.DataFrame(sweep)
        cols = ["backend", "concurrency", "n", "errors", "items_per_s", "audio_s_per_s", "p50_ms", "p90_ms", "p99_ms",
                "consistency", "server_avg_batch", "server_queue_ms", "server_compute_ms"]
        _table(df[[c for c in cols if c in df]], f"{key}_sweep_table")
    if "conformance" in kinds:
        conf = [r for r in data if r.get("kind") == "conformance"]
        failed = sorted({r["backend"] for r in conf if not r.get("passed")})
        st.markdown(f"**Conformance**: {len(conf) - sum(not r.get('passed') for r in conf)} / {len(conf)} cells pass"
                    + (f" · failing: {', '.join(failed)}" if failed else ""))
        st.dataframe(charts.conformance_table(data), width="stretch", key=f"{key}_conf")
        if not compact:
            df = pd.DataFrame(conf)
            cols = ["backend", "batch", "cell", "max_abs_dlogit", "rel_dlogit", "frame_agree", "transcripts_agree",
                    "transcripts_total", "transcript_cer", "passed", "reason"]
            _table(df[[c for c in cols if c in df]], f"{key}_conf_table")


def compare_two_runs(key: str, scope: str | None = None) -> None:
    """Two runs with usable latency rows, compared on the cells both measured in a shared timing scope; when they
    share none the chart and a caption say what differs; environment differences below."""
    history = [r for r in runs() if r["usable"].get("latency")]
    if len(history) < 2:
        st.caption("Two or more saved runs with latency rows are needed (from this page or `python -m core bench`).")
        return
    labels = {r["id"]: describe_run(r) for r in history}
    ids = list(labels)
    c = st.columns(2)
    with c[0]:
        a = _choose("Run A", ids, ids[1], f"{key}_a", labels)
    with c[1]:
        b = _choose("Run B", ids, ids[0], f"{key}_b", labels)
    ra, rb = result_rows(a), result_rows(b)
    scope = scope or "compute"
    st.plotly_chart(charts.compare_runs(ra, rb, f"#{a}", f"#{b}", scope), width="stretch", key=f"{key}_chart")
    why = charts.run_differences(ra, rb, f"#{a}", f"#{b}", scope)
    if why:
        st.caption("What differs: " + "; ".join(why))
    first = [next((r.get("env", {}) for r in rs if r.get("kind") == "latency"), {}) for rs in (ra, rb)]
    diff = {k: (first[0].get(k), first[1].get(k)) for k in sorted(set(first[0]) | set(first[1]))
            if first[0].get(k) != first[1].get(k)}
    if diff:
        st.caption("Environment differences: " + "; ".join(f"{k}: {x} → {y}" for k, (x, y) in diff.items()))
