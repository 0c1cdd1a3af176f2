"""Plotly figures of result rows (core.bench / core.wer / load-test rows). Pure functions: rows in,
go.Figure out, so they are unit-tested without a browser and reused by every page."""
from __future__ import annotations

import difflib
import html

import pandas as pd
import plotly.graph_objects as go

# NVIDIA green first, then a colour-blind-safe qualitative palette
COLORWAY = ["#76b900", "#3366cc", "#ff9900", "#8e44ad", "#dc3912", "#0099c6", "#666666", "#b82e2e"]
LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10), legend_title_text="",
              font=dict(size=13), colorway=COLORWAY, height=380)


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


def _latency(rows) -> pd.DataFrame:
    df = pd.DataFrame([r for r in rows if r.get("p50_ms") is not None])
    if df.empty:
        return df
    df["config"] = [f"{a:g} s × {int(b)}" for a, b in zip(df["audio_s"].fillna(0), df["batch"].fillna(1))]
    return df


def latency_bars(rows, title: str = "Latency per backend (p50 bar, p90 ◆, p99 whisker)") -> go.Figure:
    """p50 bars per backend, one colour per (audio length × batch); whiskers up to p99, a marker at p90."""
    df = _latency(rows)
    if df.empty:
        return _empty(title, "no latency rows")
    fig = _fig(title, barmode="group", yaxis_title="ms", xaxis_title="backend")
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


def baseline_backend(rows) -> str | None:
    """The PyTorch FP32 backend to compare against: on the GPU when GPU rows exist, else on the CPU."""
    names = {r.get("backend") for r in rows}
    for candidate in ("torch:fp32:cuda", "torch:fp32:cpu"):
        if candidate in names:
            return candidate
    return None


def speedup_table(rows, baseline: str | None = None) -> pd.DataFrame:
    """p50 speed-up of every backend over the baseline at the same audio length and batch."""
    df = _latency(rows)
    baseline = baseline or baseline_backend(rows)
    if df.empty or baseline is None:
        return pd.DataFrame(columns=["backend", "config", "speedup"])
    base = df[df["backend"] == baseline].set_index("config")["p50_ms"]
    df = df[df["config"].isin(base.index)].copy()
    df["speedup"] = [base[c] / p for c, p in zip(df["config"], df["p50_ms"])]
    return df[["backend", "config", "audio_s", "batch", "p50_ms", "speedup"]]


def speedup(rows, baseline: str | None = None) -> go.Figure:
    baseline = baseline or baseline_backend(rows)
    title = f"Speed-up over {baseline or 'PyTorch FP32'} (p50, higher is better)"
    df = speedup_table(rows, baseline)
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


def accuracy_vs_latency(rows) -> pd.DataFrame:
    """One point per backend: its WER/CER and its p50 latency at the longest audio length, batch 1 (or the
    smallest batch measured)."""
    acc = {r["backend"]: r for r in rows if r.get("wer") is not None}
    lat = _latency(rows)
    if not acc or lat.empty:
        return pd.DataFrame(columns=["backend", "wer", "cer", "p50_ms", "config"])
    lat = lat[lat["batch"] == lat["batch"].min()]
    lat = lat[lat["audio_s"] == lat["audio_s"].max()].set_index("backend")
    out = [{"backend": b, "wer": a["wer"], "cer": a.get("cer"), "p50_ms": float(lat.loc[b, "p50_ms"]),
            "config": lat.loc[b, "config"]} for b, a in acc.items() if b in lat.index]
    return pd.DataFrame(out, columns=["backend", "wer", "cer", "p50_ms", "config"])


def wer_vs_latency(rows) -> go.Figure:
    title = "WER vs latency, Pareto frontier circled"
    df = accuracy_vs_latency(rows)
    if df.empty:
        return _empty(title, "needs latency and WER rows for the same backends")
    front = pareto_front(list(zip(df["p50_ms"], df["wer"])))
    # the frontier: backends nothing else beats on both speed and accuracy
    fig = _fig(title + f" ({df['config'].iloc[0]})", xaxis_title="p50 latency (ms)", yaxis_title="WER")
    fig.add_scatter(x=df["p50_ms"], y=df["wer"], mode="markers+text", text=df["backend"], textposition="top center",
                    marker=dict(size=12), name="backends", cliponaxis=False,
                    hovertemplate="%{text}<br>%{x:.2f} ms<br>WER %{y:.3f}<extra></extra>")
    f = df.iloc[front]
    fig.add_scatter(x=f["p50_ms"], y=f["wer"], mode="lines+markers", name="Pareto frontier",
                    line=dict(dash="dash", color="crimson"), marker=dict(size=16, symbol="circle-open",
                                                                         color="crimson", line=dict(width=2)))
    return fig


def latency_vs_length(rows) -> go.Figure:
    title = "Latency vs audio length (p50, smallest batch)"
    df = _latency(rows)
    if df.empty:
        return _empty(title, "no latency rows")
    df = df[df["batch"] == df["batch"].min()].sort_values("audio_s")
    fig = _fig(title, xaxis_title="audio length (s)", yaxis_title="p50 ms")
    for backend, g in df.groupby("backend", sort=False):
        fig.add_scatter(x=g["audio_s"], y=g["p50_ms"], mode="lines+markers", name=backend)
    return fig


def throughput_vs_batch(rows) -> go.Figure:
    title = "Throughput vs batch size (seconds of audio per second, longest length)"
    df = _latency(rows)
    if df.empty:
        return _empty(title, "no latency rows")
    df = df[df["audio_s"] == df["audio_s"].max()].sort_values("batch")
    fig = _fig(title, xaxis_title="batch", yaxis_title="audio s / s")
    for backend, g in df.groupby("backend", sort=False):
        fig.add_scatter(x=g["batch"], y=g["audio_s_per_s"], mode="lines+markers", name=backend)
    fig.update_xaxes(type="log", dtick=0.30103)
    return fig


def compare_runs(rows_a, rows_b, label_a: str = "run A", label_b: str = "run B") -> go.Figure:
    """p50 of two runs side by side for the (backend, length, batch) cells both measured."""
    title = f"p50 latency: {label_a} vs {label_b}"
    a, b = _latency(rows_a), _latency(rows_b)
    if a.empty or b.empty:
        return _empty(title, "both runs need latency rows")
    key = ["backend", "config"]
    m = a[key + ["p50_ms"]].merge(b[key + ["p50_ms"]], on=key, suffixes=("_a", "_b"))
    if m.empty:
        return _empty(title, "the two runs share no backend × length × batch")
    x = m["backend"] + " · " + m["config"]
    fig = _fig(title, barmode="group", yaxis_title="p50 ms")
    fig.add_bar(name=label_a, x=x, y=m["p50_ms_a"])
    fig.add_bar(name=label_b, x=x, y=m["p50_ms_b"],
                text=[f"{(vb / va - 1) * 100:+.0f}%" for va, vb in zip(m["p50_ms_a"], m["p50_ms_b"])],
                textposition="outside")
    return fig


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
           for r in rows]
    pts = [p for p in pts if p[1] is not None and p[3] is not None]
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
    rows = sorted([r for r in rows if r.get("concurrency") is not None], key=lambda r: r["concurrency"])
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
