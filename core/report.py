"""A shareable report of one stored run: one self-contained file (Markdown or HTML) with the environment, the
method the rows were measured by, their tables, the charts (inline plotly in HTML; Markdown carries the tables
only) and the commands that reproduce every figure.

The run's own command is the one its CLI verb recorded (core.results.save(command=…)); runs saved before commands
were recorded get one rebuilt from their rows, and the report says so."""
from __future__ import annotations

import html
import math
import shlex
from pathlib import Path

import pandas as pd

from . import charts
from .errors import WorkbenchError
from .results import rows as result_rows, run as result_run, scope_label

FORMATS = ("md", "html")
ENV_KEYS = ("gpu", "gpu_cc", "driver", "cuda", "cpu", "platform", "python", "torch", "transformers", "onnxruntime",
            "onnxruntime-gpu", "onnxruntime_providers", "tensorrt", "tritonclient", "nvidia-pytriton", "numpy",
            "jiwer")


class ReportError(WorkbenchError):
    pass


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return " – ".join(_fmt(x) for x in v)
    return str(v)


def _rebuilt_command(data: list[dict]) -> str | None:
    """A bench/wer command for a run saved before commands were recorded, from what its rows say."""
    lat = [r for r in data if r.get("kind") == "latency"]
    acc = [r for r in data if r.get("kind") == "accuracy"]
    first = (lat or acc or [{}])[0]
    if not first.get("model"):
        return None
    backends = list(dict.fromkeys(r["backend"] for r in lat or acc))
    args = ["--model", first["model"], *[a for b in backends for a in ("--backend", b)]]
    if lat:
        args = ["bench", *args, "--seconds", *sorted({f"{r['audio_s']:g}" for r in lat}, key=float),
                "--batch", *sorted({str(int(r["batch"])) for r in lat}, key=int),
                "--scope", *dict.fromkeys(r.get("scope") for r in lat if r.get("scope") in ("compute", "e2e"))]
        if lat[0].get("warmup") is not None:
            args += ["--warmup", str(int(lat[0]["warmup"]))]
        if acc and acc[0].get("manifest"):
            args += ["--wer-manifest", acc[0]["manifest"]]
    else:
        args = ["wer", *args] + (["--manifest", acc[0]["manifest"]] if acc[0].get("manifest") else [])
        if acc[0].get("batch_size"):
            args += ["--batch-size", str(int(acc[0]["batch_size"]))]
    return "python -m core " + shlex.join(args)


def _method(data: list[dict]) -> list[str]:
    """What the rows were measured by, as recorded in them (no claim the rows do not support)."""
    from .bench import MAX_WINDOWS, MIN_WINDOWS, STABLE_WITHIN
    from .energy import MIN_WINDOW_S
    kinds = {r.get("kind") for r in data}
    out = []
    lat = [r for r in data if r.get("kind") == "latency"]
    if lat:
        scopes = sorted({r.get("scope") or "legacy" for r in lat})
        out.append("Timing scopes: " + "; ".join(scope_label(s) for s in scopes) + ".")
        warm = sorted({r["warmup"] for r in lat if r.get("warmup") is not None})
        reps = sorted({int(r["repeats"]) for r in lat if r.get("repeats") is not None})
        unstable = sum(not r.get("stable") for r in lat if "stable" in r)
        out.append(f"Per row: {', '.join(map(str, warm)) or 'unrecorded'} warm-up calls, then windows of timed calls "
                   f"until the p50s of the last {MIN_WINDOWS} windows agree within {STABLE_WITHIN:.0%} (at most "
                   f"{MAX_WINDOWS} windows by default); percentiles over the last {MIN_WINDOWS} windows "
                   f"({', '.join(map(str, reps))} calls per row); p50 95 % interval by bootstrap. "
                   f"Stability: {len(lat) - unstable} of {len(lat)} rows stable"
                   + (f", {unstable} flagged unstable." if unstable else "."))
        if any(r.get("energy_j_per_audio_h") is not None for r in lat):
            price = next((r for r in lat if r.get("gpu_price_usd_h")), {})
            out.append(f"Energy: NVML's total-energy counter integrated over each row's timed windows (at least "
                       f"{MIN_WINDOW_S:g} s); cost at ${_fmt(price.get('gpu_price_usd_h'))} per GPU-hour "
                       f"({price.get('gpu_price_source') or 'price not recorded'}).")
        else:
            why = next((r.get("energy_reason") for r in lat if r.get("energy_reason")), None)
            out.append(f"Energy and cost: not measured ({why or 'run recorded before energy was measured'}).")
    acc = [r for r in data if r.get("kind") == "accuracy"]
    if acc:
        manifests = sorted({r.get("manifest") for r in acc if r.get("manifest")})
        out.append(f"Accuracy: WER/CER with jiwer after NFC, lower case and punctuation (danda included) removed, "
                   f"on {', '.join(manifests) or 'an unrecorded labelled set'} ({_fmt(acc[0].get('n'))} clips)"
                   + ("; RTFx = total audio seconds / total transcription seconds, end to end, clips sorted by "
                      f"duration in batches of {_fmt(acc[0].get('batch_size'))} after one warm-up batch."
                      if any(r.get("rtfx") is not None for r in acc) else "."))
        if any(r.get("random_weights") for r in acc):
            out.append("Random weights: the WER/CER figures of this run are meaningless; latency is real.")
    if "conformance" in kinds:
        conf = [r for r in data if r.get("kind") == "conformance"]
        ref = next((r.get("reference") for r in conf if r.get("reference")), "PyTorch FP32")
        out.append(f"Conformance gates: every backend against {ref}, per batch size and length cell; "
                   f"{sum(bool(r.get('passed')) for r in conf)} of {len(conf)} cells pass.")
    if "sweep" in kinds:
        out.append("Load sweep: concurrent requests against a Triton server, one row per concurrency level.")
    if "memory" in kinds:
        out.append("Memory: peak device memory (PyTorch allocator and NVML per process) on GPU backends, peak host "
                   "RSS on CPU backends, over load and measurement.")
    return out


def _tables(data: list[dict]) -> list[tuple[str, pd.DataFrame]]:
    out = []
    if any(r.get("kind") == "latency" for r in data):
        out.append(("Latency", charts.latency_table(data)))
    for kind, cols in (("accuracy", ["backend", "n", "wer", "cer", "rtfx", "batch_size", "skipped", "manifest"]),
                       ("memory", ["backend", "peak_mem_mb", "mem_scope", "peak_device_mb", "peak_host_rss_mb",
                                   "load_s"]),
                       ("sweep", ["backend", "concurrency", "n", "errors", "items_per_s", "audio_s_per_s", "p50_ms",
                                  "p90_ms", "p99_ms"]),
                       ("conformance", ["backend", "cell", "max_abs_dlogit", "rel_dlogit", "frame_agree",
                                        "transcript_cer", "passed", "reason"])):
        df = pd.DataFrame([r for r in data if r.get("kind") == kind])
        if not df.empty:
            out.append((kind.capitalize(), df[[c for c in cols if c in df]]))
    return out


def _figures(data: list[dict]) -> list:
    """The charts that have something to draw for this run (each chart's own empty state is left out)."""
    kinds = {r.get("kind") for r in data}
    figs = []
    if "latency" in kinds:
        for scope in charts.scopes(data):
            figs.append(charts.latency_bars(data, scope=scope))
            if not charts.speedup_table(data, scope=scope).empty:
                figs.append(charts.speedup(data, scope=scope))
            if not charts.accuracy_vs_latency(data, scope).empty:
                figs.append(charts.wer_vs_latency(data, scope))
    if not charts.wer_rtfx_table(data).empty:
        figs.append(charts.wer_vs_rtfx(data))
    if "memory" in kinds:
        figs.append(charts.memory_bars(data))
    if "sweep" in kinds:
        sweep = [r for r in data if r.get("kind") == "sweep"]
        figs += [charts.serving_curve(sweep), charts.queue_compute(sweep)]
    return figs


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def build(run_id: int, fmt: str = "html", path: Path | None = None) -> str:
    """The report of stored run `run_id` as one string in `fmt` (md or html)."""
    if fmt not in FORMATS:
        raise ReportError(f"Unknown report format {fmt!r}.", f"Use one of: {', '.join(FORMATS)}.")
    meta = result_run(run_id, path)
    if meta is None:
        raise ReportError(f"There is no run {run_id} in the results database.",
                          "python -m core results lists the stored runs.")
    data = result_rows(run_id, path=path)
    if not data:
        raise ReportError(f"Run {run_id} has no rows to report.", "Pick a run with rows: python -m core results.")
    command = meta.get("command")
    rebuilt = command is None
    if rebuilt:
        command = _rebuilt_command(data) or "(not recorded)"
    env = next((r.get("env") for r in data if r.get("env")), {})
    envs = {tuple(sorted((k, str(v)) for k, v in (r.get("env") or {}).items())) for r in data if r.get("env")}
    title = f"Run #{run_id} · {meta['kind']} · {meta.get('created', '')}"
    reproduce = [("The run (every table and figure of this report)", command),
                 ("This report", f"python -m core report --run N --format {fmt}  # N: the new run's id")]
    method = _method(data)
    tables = _tables(data)
    note = "rebuilt from the run's rows (saved before commands were recorded)" if rebuilt else "as recorded"
    env_rows = [(k, env.get(k)) for k in ENV_KEYS if k in env]
    models = list(dict.fromkeys(r.get("model_label") or r.get("model") for r in data if r.get("model")))
    model_line = "Model: " + "; ".join(models) if models else "Model: not recorded"
    if fmt == "md":
        out = [f"# {title}", "", model_line, ""]
        if meta.get("note"):
            out += [f"Note: {meta['note']}", ""]
        out += ["## Environment", "", "| | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in env_rows]
        if len(envs) > 1:
            out += ["", f"Rows of this run were measured in {len(envs)} different environments (see the JSON)."]
        out += ["", "## Method", ""] + [f"- {m}" for m in method]
        for name, df in tables:
            out += ["", f"## {name}", "", _md_table(df), "", f"Reproduce: `{command}`"]
        out += ["", "Charts: open the HTML report (`--format html`) for them; this Markdown carries the tables.",
                "", "## Reproduce", "", f"Command {note}:", ""]
        out += [f"- {what}: `{cmd}`" for what, cmd in reproduce]
        return "\n".join(out) + "\n"
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "code{background:#f4f4f4;padding:2px 4px}.wide{overflow-x:auto}</style></head><body>",
             f"<h1>{e(title)}</h1>", f"<p><b>{e(model_line)}</b></p>"]
    if meta.get("note"):
        parts.append(f"<p>Note: {e(meta['note'])}</p>")
    parts.append("<h2>Environment</h2><table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>"
                                                       for k, v in env_rows) + "</table>")
    if len(envs) > 1:
        parts.append(f"<p>Rows of this run were measured in {len(envs)} different environments.</p>")
    parts.append("<h2>Method</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in method) + "</ul>")
    for name, df in tables:
        df = df.apply(lambda c: c.where(c.notna(), "–") if c.dtype == object else c)   # na_rep skips object columns
        parts.append(f"<h2>{e(name)}</h2><div class='wide'>"   # a wide table scrolls inside the page
                     + df.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4g}")
                     + f"</div><p>Reproduce: <code>{e(command)}</code></p>")
    figs = _figures(data)
    if figs:
        parts.append("<h2>Charts</h2>")
        for i, fig in enumerate(figs):  # plotly.js inlined once, with the first chart: the file works offline
            parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
            parts.append(f"<p>Reproduce: <code>{e(command)}</code></p>")
    parts.append(f"<h2>Reproduce</h2><p>Command {e(note)}:</p><ul>"
                 + "".join(f"<li>{e(what)}: <code>{e(cmd)}</code></li>" for what, cmd in reproduce) + "</ul>")
    return "".join(parts) + "</body></html>\n"


def write(run_id: int, fmt: str = "html", out: Path | None = None, path: Path | None = None) -> Path:
    """Write the report; the default file is artifacts/reports/run-<id>.<fmt>."""
    from .paths import artifacts_dir, atomic_path
    text = build(run_id, fmt, path)
    out = Path(out) if out else artifacts_dir() / "reports" / f"run-{run_id}.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
