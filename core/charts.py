"""Plotly figures of result rows (core.bench / core.wer / load-test rows). Pure functions: rows in,
go.Figure out, so they are unit-tested without a browser and reused by every page. Every chart takes one row kind
(core.results) and, for latency, one timing scope: mixing them draws numbers that mean different things as one."""
from __future__ import annotations

import difflib
import html
import math
import numbers

import pandas as pd
import plotly.graph_objects as go

from .results import LEGACY_SCOPE, scope_label

# NVIDIA green first, then a colour-blind-safe qualitative palette
COLORWAY = ["#76b900", "#3366cc", "#ff9900", "#8e44ad", "#dc3912", "#0099c6", "#666666", "#b82e2e"]
LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10), legend_title_text="",
              font=dict(size=13), colorway=COLORWAY, height=380)
SCOPE_ORDER = ("compute", "e2e", LEGACY_SCOPE)


def _fig(title: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, **LAYOUT, **layout)
    return fig


def _empty(title: str, why: str) -> go.Figure:
    fig = _fig(title)
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _of_kind(rows, kind: str) -> list[dict]:
    """Each chart draws one kind of row: a load sweep's p50s are not latency bars, a WER is not a timing."""
    return [r for r in rows if r.get("kind") == kind]


def _scope_of(row) -> str:
    return row.get("scope") or LEGACY_SCOPE


def scopes(rows) -> list[str]:
    """The timing scopes the latency rows were measured in, compute first."""
    have = {_scope_of(r) for r in _of_kind(rows, "latency") if _finite(r.get("p50_ms"))}
    return sorted(have, key=lambda s: (SCOPE_ORDER.index(s) if s in SCOPE_ORDER else len(SCOPE_ORDER), s))


def pick_scope(rows, scope: str | None = "compute") -> str | None:
    """`scope` when the rows have it, else the first scope they do have (None: no latency rows)."""
    have = scopes(rows)
    return scope if scope in have else (have[0] if have else None)


def _latency(rows, scope: str | None = "compute") -> tuple[pd.DataFrame, str | None]:
    """Latency rows of one timing scope (compute and e2e times of the same cell are different quantities)."""
    scope = pick_scope(rows, scope)
    df = pd.DataFrame([r for r in _of_kind(rows, "latency") if _scope_of(r) == scope and _finite(r.get("p50_ms"))])
    if not df.empty:
        df["config"] = [f"{a:g} s × {int(b)}" for a, b in zip(df["audio_s"].fillna(0), df["batch"].fillna(1))]
    return df, scope


def _scoped(title: str, scope: str | None) -> str:
    return title + (f"<br><sup>timing scope: {scope_label(scope)}</sup>" if scope else "")


def latency_bars(rows, title: str = "Latency per backend (p50 bar, p90 ◆, p99 whisker)",
                 scope: str = "compute") -> go.Figure:
    """p50 bars per backend, one colour per (audio length × batch); whiskers up to p99, a marker at p90.
    Latency rows of one timing scope only."""
    df, scope = _latency(rows, scope)
    title = _scoped(title, scope)
    if df.empty:
        return _empty(title, "no latency rows")
    fig = _fig(title, barmode="group", yaxis_title=f"ms ({scope})", xaxis_title="backend")
    for config, g in df.groupby("config", sort=False):
        fig.add_bar(name=config, x=g["backend"], y=g["p50_ms"], offsetgroup=config, legendgroup=config,
                    error_y=dict(type="data", symmetric=False, array=(g["p99_ms"] - g["p50_ms"]).clip(lower=0),
                                 arrayminus=[0] * len(g), thickness=1.5),
                    customdata=g[["p90_ms", "p99_ms"]],
                    hovertemplate="%{x}<br>p50 %{y:.2f} ms<br>p90 %{customdata[0]:.2f} ms"
                                  "<br>p99 %{customdata[1]:.2f} ms<extra>" + config + "</extra>")
        fig.add_scatter(x=g["backend"], y=g["p90_ms"], mode="markers", marker=dict(symbol="diamond", size=8,
                        color="black"), offsetgroup=config, legendgroup=config, showlegend=False, name="p90",
                        hoverinfo="skip")
    fig.update_layout(scattermode="group")
    return fig


def latency_table(rows) -> pd.DataFrame:
    """Latency rows of every scope as a table: scope, percentiles, the p50's 95 % interval, stability, cold start
    and peak memory (the columns the rows have)."""
    df = pd.DataFrame(_of_kind(rows, "latency"))
    if df.empty:
        return df
    df["scope"] = [s or LEGACY_SCOPE for s in df.get("scope", pd.Series([None] * len(df)))]
    if "p50_ci95_ms" in df:
        df["p50_ci95_ms"] = [f"{ci[0]:.3f} – {ci[1]:.3f}" if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
                             for ci in df["p50_ci95_ms"]]
    order = {s: i for i, s in enumerate(SCOPE_ORDER)}
    df = df.sort_values(["scope", "backend", "audio_s", "batch"], key=lambda c: c.map(order).fillna(len(order))
                        if c.name == "scope" else c, kind="stable")
    cols = ["backend", "scope", "audio_s", "batch", "p50_ms", "p90_ms", "p99_ms", "p50_ci95_ms", "stable", "windows",
            "mean_ms", "cold_start_s", "peak_mem_mb", "mem_scope", "rtf", "audio_s_per_s", "energy_j_per_audio_h",
            "usd_per_audio_h", "gpu"]
    return df[[c for c in cols if c in df]].reset_index(drop=True)


def baseline_backend(rows) -> str | None:
    """The PyTorch FP32 backend to compare against: on the GPU when GPU rows exist, else on the CPU."""
    names = {r.get("backend") for r in _of_kind(rows, "latency")}
    for candidate in ("torch:fp32:cuda", "torch:fp32:cpu"):
        if candidate in names:
            return candidate
    return None


def speedup_table(rows, baseline: str | None = None, scope: str = "compute") -> pd.DataFrame:
    """p50 speed-up of every backend over the baseline at the same audio length and batch, in one scope."""
    df, scope = _latency(rows, scope)
    baseline = baseline or baseline_backend(rows)
    if df.empty or baseline is None:
        return pd.DataFrame(columns=["backend", "config", "speedup"])
    base = df[df["backend"] == baseline].set_index("config")["p50_ms"]
    df = df[df["config"].isin(base.index)].copy()
    df["speedup"] = [base[c] / p for c, p in zip(df["config"], df["p50_ms"])]
    df["scope"] = scope
    return df[["backend", "config", "audio_s", "batch", "scope", "p50_ms", "speedup"]]


def speedup(rows, baseline: str | None = None, scope: str = "compute") -> go.Figure:
    baseline = baseline or baseline_backend(rows)
    scope = pick_scope(rows, scope)
    title = _scoped(f"Speed-up over {baseline or 'PyTorch FP32'} (p50, higher is better)", scope)
    df = speedup_table(rows, baseline, scope)
    if df.empty:
        return _empty(title, "needs a PyTorch FP32 run (torch:fp32:cpu or torch:fp32:cuda) as the baseline")
    fig = _fig(title, barmode="group", yaxis_title="× faster", xaxis_title="backend")
    for config, g in df.groupby("config", sort=False):
        fig.add_bar(name=config, x=g["backend"], y=g["speedup"], text=[f"{v:.2f}×" for v in g["speedup"]],
                    textposition="outside")
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def accuracy_vs_latency(rows, scope: str = "compute") -> pd.DataFrame:
    """One point per backend: its WER/CER (accuracy rows) and its p50 latency in one scope at the longest audio
    length, batch 1 (or the smallest batch measured)."""
    acc = {r["backend"]: r for r in _of_kind(rows, "accuracy") if _finite(r.get("wer"))}
    lat, scope = _latency(rows, scope)
    if not acc or lat.empty:
        return pd.DataFrame(columns=["backend", "wer", "cer", "p50_ms", "config", "scope"])
    lat = lat[lat["batch"] == lat["batch"].min()]
    lat = lat[lat["audio_s"] == lat["audio_s"].max()].set_index("backend")
    out = [{"backend": b, "wer": a["wer"], "cer": a.get("cer"), "p50_ms": float(lat.loc[b, "p50_ms"]),
            "config": lat.loc[b, "config"], "scope": scope} for b, a in acc.items() if b in lat.index]
    return pd.DataFrame(out, columns=["backend", "wer", "cer", "p50_ms", "config", "scope"])


def wer_vs_latency(rows, scope: str = "compute") -> go.Figure:
    title = "WER vs latency, Pareto frontier circled"
    df = accuracy_vs_latency(rows, scope)
    if df.empty:
        return _empty(title, "needs latency and WER rows for the same backends")
    front = pareto_front(list(zip(df["p50_ms"], df["wer"])))
    # the frontier: backends nothing else beats on both speed and accuracy
    scope = df["scope"].iloc[0]
    fig = _fig(_scoped(title + f" ({df['config'].iloc[0]})", scope), xaxis_title=f"p50 latency (ms, {scope})",
               yaxis_title="WER")
    fig.add_scatter(x=df["p50_ms"], y=df["wer"], mode="markers+text", text=df["backend"], textposition="top center",
                    marker=dict(size=12), name="backends", cliponaxis=False,
                    hovertemplate="%{text}<br>%{x:.2f} ms<br>WER %{y:.3f}<extra></extra>")
    f = df.iloc[front]
    fig.add_scatter(x=f["p50_ms"], y=f["wer"], mode="lines+markers", name="Pareto frontier",
                    line=dict(dash="dash", color="crimson"), marker=dict(size=16, symbol="circle-open",
                                                                         color="crimson", line=dict(width=2)))
    return fig


def wer_rtfx_table(rows) -> pd.DataFrame:
    """One point per accuracy row that has an RTFx (core.wer.evaluate: audio seconds / transcription seconds over
    the labelled set), labelled by backend and, when the rows span several runs, the run; `pareto` marks the points
    no other point beats on both WER (lower) and RTFx (higher)."""
    cols = ["label", "backend", "run_id", "wer", "cer", "rtfx", "batch_size", "n", "pareto"]
    pts = [r for r in _of_kind(rows, "accuracy") if _finite(r.get("wer")) and _finite(r.get("rtfx"))]
    if not pts:
        return pd.DataFrame(columns=cols)
    many = len({r.get("run_id") for r in pts}) > 1
    df = pd.DataFrame([{"label": r["backend"] + (f" · #{r.get('run_id')}" if many else ""), "backend": r["backend"],
                        "run_id": r.get("run_id"), "wer": r["wer"], "cer": r.get("cer"), "rtfx": r["rtfx"],
                        "batch_size": r.get("batch_size"), "n": r.get("n")} for r in pts])
    front = set(pareto_front(list(zip(-df["rtfx"], df["wer"]))))   # higher RTFx is better: negate it
    df["pareto"] = [i in front for i in range(len(df))]
    return df[cols]


def wer_vs_rtfx(rows) -> go.Figure:
    """WER against RTFx as the Open ASR Leaderboard plots it (up and to the left of the frontier: dominated)."""
    title = "WER vs RTFx (end to end over the labelled set), Pareto frontier circled"
    df = wer_rtfx_table(rows)
    if df.empty:
        return _empty(title, "needs WER rows with an RTFx (python -m core wer, or a benchmark with a labelled set)")
    fig = _fig(title, xaxis_title="RTFx (audio seconds per second, higher is better)", yaxis_title="WER")
    fig.add_scatter(x=df["rtfx"], y=df["wer"], mode="markers+text", text=df["label"], textposition="top center",
                    marker=dict(size=12), name="backend · run", cliponaxis=False, customdata=df[["batch_size", "n"]],
                    hovertemplate="%{text}<br>RTFx %{x:.1f}<br>WER %{y:.3f}<br>batch %{customdata[0]}, "
                                  "%{customdata[1]} clips<extra></extra>")
    f = df[df["pareto"]].sort_values("rtfx")
    fig.add_scatter(x=f["rtfx"], y=f["wer"], mode="lines+markers", name="Pareto frontier",
                    line=dict(dash="dash", color="crimson"), marker=dict(size=16, symbol="circle-open",
                                                                         color="crimson", line=dict(width=2)))
    return fig


def latency_vs_length(rows, scope: str = "compute") -> go.Figure:
    df, scope = _latency(rows, scope)
    title = _scoped("Latency vs audio length (p50, smallest batch)", scope)
    if df.empty:
        return _empty(title, "no latency rows")
    df = df[df["batch"] == df["batch"].min()].sort_values("audio_s")
    fig = _fig(title, xaxis_title="audio length (s)", yaxis_title=f"p50 ms ({scope})")
    for backend, g in df.groupby("backend", sort=False):
        fig.add_scatter(x=g["audio_s"], y=g["p50_ms"], mode="lines+markers", name=backend)
    return fig


def throughput_vs_batch(rows, scope: str = "compute") -> go.Figure:
    df, scope = _latency(rows, scope)
    title = _scoped("Throughput vs batch size (seconds of audio per second, longest length)", scope)
    if df.empty:
        return _empty(title, "no latency rows")
    df = df[df["audio_s"] == df["audio_s"].max()].sort_values("batch")
    fig = _fig(title, xaxis_title="batch", yaxis_title=f"audio s / s ({scope})")
    for backend, g in df.groupby("backend", sort=False):
        fig.add_scatter(x=g["batch"], y=g["audio_s_per_s"], mode="lines+markers", name=backend)
    fig.update_xaxes(type="log", dtick=0.30103)
    return fig


def _common_scope(rows_a, rows_b, scope: str) -> str | None:
    shared = [s for s in scopes(rows_a) if s in scopes(rows_b)]
    return scope if scope in shared else (shared[0] if shared else None)


def _cells(rows, scope) -> set[tuple]:
    df, _ = _latency(rows, scope)
    return set() if df.empty else set(zip(df["backend"], df["audio_s"].astype(float), df["batch"].astype(int)))


def run_differences(rows_a, rows_b, label_a: str = "run A", label_b: str = "run B",
                    scope: str = "compute") -> list[str]:
    """What keeps two runs' latency from being compared cell by cell, one sentence each (empty: nothing):
    a missing or different timing scope, backends, audio lengths or batch sizes only one run measured."""
    sa, sb = scopes(rows_a), scopes(rows_b)
    out = [f"{label} has no latency rows" for label, s in ((label_a, sa), (label_b, sb)) if not s]
    if out:
        return out
    if sa != sb:
        out.append(f"timing scopes: {label_a} {', '.join(sa)}; {label_b} {', '.join(sb)}")
    scope = _common_scope(rows_a, rows_b, scope)
    if scope is None:
        return out + ["no timing scope in common: compute and e2e times are different quantities"]
    a, b = _cells(rows_a, scope), _cells(rows_b, scope)
    axes = []
    for i, name, fmt in ((0, "backends", str), (1, "audio lengths (s)", "{:g}".format), (2, "batch sizes", str)):
        va, vb = {c[i] for c in a}, {c[i] for c in b}
        only = [f"only in {label}: {', '.join(fmt(v) for v in sorted(vs))}"
                for label, vs in ((label_a, va - vb), (label_b, vb - va)) if vs]
        if only:
            axes.append(f"{name} ({scope}) " + "; ".join(only))
    if not a & b and not axes:  # same backends, lengths and batches, but combined differently
        axes.append(f"no backend × length × batch cell measured by both ({scope})")
    return out + axes


def compare_runs(rows_a, rows_b, label_a: str = "run A", label_b: str = "run B",
                 scope: str = "compute") -> go.Figure:
    """p50 of two runs side by side for the (backend, length, batch) cells both measured in the same timing scope;
    when they share none, the figure says what differs."""
    common = _common_scope(rows_a, rows_b, scope)
    title = _scoped(f"p50 latency: {label_a} vs {label_b}", common)
    why = run_differences(rows_a, rows_b, label_a, label_b, scope)
    if common is None:  # no latency, or only scopes the other run lacks: nothing is comparable
        return _empty(title, "<br>".join(why))
    a, b = _latency(rows_a, common)[0], _latency(rows_b, common)[0]
    key = ["backend", "config"]
    m = a[key + ["p50_ms"]].merge(b[key + ["p50_ms"]], on=key, suffixes=("_a", "_b"))
    if m.empty:
        return _empty(title, "<br>".join(["the two runs share no backend × length × batch:"] + why))
    x = m["backend"] + " · " + m["config"]
    fig = _fig(title, barmode="group", yaxis_title=f"p50 ms ({common})")
    fig.add_bar(name=label_a, x=x, y=m["p50_ms_a"])
    fig.add_bar(name=label_b, x=x, y=m["p50_ms_b"],
                text=[f"{(vb / va - 1) * 100:+.0f}%" for va, vb in zip(m["p50_ms_a"], m["p50_ms_b"])],
                textposition="outside")
    return fig


def memory_bars(rows) -> go.Figure:
    """Peak memory per backend (memory rows): device memory for GPU backends, host RSS for CPU ones."""
    title = "Peak memory per backend"
    df = pd.DataFrame([r for r in _of_kind(rows, "memory") if _finite(r.get("peak_mem_mb"))])
    if df.empty:
        return _empty(title, "no memory rows")
    df["mem_scope"] = df["mem_scope"].fillna("?") if "mem_scope" in df else "?"
    fig = _fig(title, barmode="group", xaxis_title="backend", yaxis_title="peak MB")
    for mem_scope, g in df.groupby("mem_scope", sort=False):
        fig.add_bar(name=f"{mem_scope} memory", x=g["backend"], y=g["peak_mem_mb"],
                    text=[f"{v:,.0f} MB" for v in g["peak_mem_mb"]], textposition="outside")
    return fig


def conformance_table(rows) -> pd.DataFrame:
    """Conformance rows as pass/FAIL per cell (rows: a matrix has dozens) × backend (columns)."""
    rows = _of_kind(rows, "conformance")
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame({"backend": [r.get("backend") for r in rows],
                       "cell": [r.get("cell") or f"batch {r.get('batch')}" for r in rows],
                       "result": ["pass" if r.get("passed") else "FAIL" for r in rows]})
    return df.pivot_table(index="cell", columns="backend", values="result", aggfunc="first", sort=False)


def transcript_latency(rows) -> go.Figure:
    """Transcription wall time per backend and clip (Transcribe page)."""
    title = "Transcription latency (wall time, decoding included)"
    df = pd.DataFrame(rows)
    if df.empty:
        return _empty(title, "nothing transcribed yet")
    fig = _fig(title, barmode="group", xaxis_title="backend", yaxis_title="ms")
    for clip, g in df.groupby("audio", sort=False):
        fig.add_bar(name=clip, x=g["backend"], y=g["latency_ms"], text=[f"{v:.0f} ms" for v in g["latency_ms"]],
                    textposition="outside")
    return fig


def _pick(row: dict, *keys):
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return None


def serving_curve(rows) -> go.Figure:
    """Load sweep: throughput against latency, one point per concurrency (the knee shows saturation)."""
    title = "Throughput vs latency per concurrency (Triton)"
    pts = [(r.get("concurrency"), _pick(r, "p50_ms"), _pick(r, "p99_ms"), _pick(r, "items_per_s", "throughput"))
           for r in _of_kind(rows, "sweep")]
    pts = [p for p in pts if _finite(p[1]) and _finite(p[3])]
    if not pts:
        return _empty(title, "no load-test rows")
    df = pd.DataFrame(pts, columns=["concurrency", "p50_ms", "p99_ms", "throughput"]).sort_values("concurrency")
    fig = _fig(title, xaxis_title="latency (ms)", yaxis_title="requests / s")
    for col, dash in (("p50_ms", "solid"), ("p99_ms", "dot")):
        fig.add_scatter(x=df[col], y=df["throughput"], mode="lines+markers+text", name=col.replace("_ms", ""),
                        text=[f"c={int(c)}" for c in df["concurrency"]], textposition="top left",
                        line=dict(dash=dash))
    return fig


def queue_compute(rows) -> go.Figure:
    """Server-side time per request split into queue and compute (stacked), per concurrency."""
    title = "Server-side time per request: queue vs compute"
    parts = [("queue", ("queue_ms", "server_queue_ms")),
             ("compute input", ("compute_input_ms", "server_compute_input_ms")),
             ("compute", ("compute_ms", "compute_infer_ms", "server_compute_infer_ms", "server_compute_ms")),
             ("compute output", ("compute_output_ms", "server_compute_output_ms"))]
    rows = sorted([r for r in _of_kind(rows, "sweep") if r.get("concurrency") is not None],
                  key=lambda r: r["concurrency"])
    if not rows or all(_pick(r, *keys) is None for r in rows for _, keys in parts):
        return _empty(title, "no server-side statistics in these rows")
    x = [f"c={int(r['concurrency'])}" for r in rows]
    fig = _fig(title, barmode="stack", xaxis_title="concurrency", yaxis_title="ms per request")
    for name, keys in parts:
        vals = [_pick(r, *keys) for r in rows]
        if any(v is not None for v in vals):
            fig.add_bar(name=name, x=x, y=[v or 0 for v in vals])
    return fig


def diff_html(reference: str, hypothesis: str) -> str:
    """Word-level diff of a hypothesis against a reference: insertions green, deletions red struck out."""
    ref, hyp = reference.split(), hypothesis.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(hyp[j1:j2])))
            continue
        if i2 > i1:
            out.append(f'<del style="background:#fde2e2;color:#a61b1b">{html.escape(" ".join(ref[i1:i2]))}</del>')
        if j2 > j1:
            out.append(f'<ins style="background:#dcfce7;color:#166534;text-decoration:none">'
                       f'{html.escape(" ".join(hyp[j1:j2]))}</ins>')
    return " ".join(out)
