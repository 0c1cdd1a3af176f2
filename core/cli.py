"""`python -m core …`: the same jobs as the dashboard, from a shell."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from .errors import WorkbenchError

MODEL_HELP = ("Hugging Face id, local folder, 'demo' (offline synthetic-speech demo model) or "
              "'random:wav2vec2-large' / 'random:wav2vec2-tiny' (random weights, speed only). "
              "Default: ai4bharat/indicwav2vec-hindi, falling back to the demo model when the Hub is unreachable.")

PLUGINS = ("core.variants", "core.tensorrt", "core.triton", "core.profiling")


def _model(args):
    from .models import load_model
    loaded = load_model(args.model)
    if loaded.notice:
        print(f"note: {loaded.notice}", file=sys.stderr)
    print(f"model: {loaded.label}", file=sys.stderr)
    return loaded


def _table(rows: list[dict], cols: list[str]) -> str:
    import pandas as pd
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df]].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def cmd_info(args):
    from .backends import catalogue
    from .envinfo import environment
    from .paths import artifacts_dir
    env = environment()
    print("environment:")
    for k, v in env.items():
        print(f"  {k:16} {v}")
    print("backends:")
    for b in catalogue():
        print(f"  {b['backend']:20} {'yes' if b['available'] else 'no  (' + b['why'] + ')'}")
    print(f"artifacts: {artifacts_dir()}")
    for meta in sorted(artifacts_dir().glob("*/*/*/meta.json")):
        print(f"  {meta.parent.relative_to(artifacts_dir())}")
    if args.model is not None:
        print(json.dumps(_model(args).describe(), indent=2, ensure_ascii=False))


def cmd_export(args):
    from .export import export_onnx
    art = export_onnx(_model(args), out_dir=args.out, opset=args.opset, exporter=args.exporter, force=args.force)
    print(json.dumps({"path": str(art.path), "parity": art.meta["parity"]}, indent=2, ensure_ascii=False))


def cmd_transcribe(args):
    from .audio import load_audio
    from .backends import make_backend
    from .transcribe import transcribe
    from .wer import scores
    loaded = _model(args)
    audios = [load_audio(p, loaded.sample_rate) for p in args.audio]
    rows = []
    for spec in args.backend:
        with make_backend(spec, loaded) as backend:
            for audio in audios:
                t = transcribe(audio, backend, loaded, beam=args.beam)
                row = {"backend": spec, "audio": audio.name, "seconds": round(audio.duration, 2),
                       "latency_ms": round(t.latency_ms, 1), "text": t.text}
                if args.reference:
                    row.update({k: round(v, 4) for k, v in scores([args.reference], [t.text]).items() if k != "n"})
                rows.append(row)
                print(f"[{spec}] {audio.name} ({audio.duration:.1f} s, {t.latency_ms:.0f} ms): {t.text}")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))


def _env_line(env: dict) -> str:
    return (f"# {env.get('gpu') or env.get('cpu')} | driver {env.get('driver')} | CUDA {env.get('cuda')} | torch "
            f"{env.get('torch')} | onnxruntime {env.get('onnxruntime') or env.get('onnxruntime-gpu')}")


def _ci(row) -> str:
    lo, hi = row["p50_ci95_ms"]
    return f"{lo:.3g}-{hi:.3g}"


def cmd_bench(args):
    from .bench import bench_spec
    from .results import save
    loaded = _model(args)
    source = None
    if args.audio:
        from .audio import load_audio
        source = load_audio(args.audio, loaded.sample_rate).samples
    rows = []
    for spec in args.backend:
        rows += bench_spec(spec, loaded, args.seconds, args.batch, args.warmup, args.repeats, tuple(args.scope),
                           source, max_windows=args.windows,
                           progress=lambda r: print(f"  {r['backend']} [{r['scope']}] {r['audio_s']:g} s x{r['batch']}: "
                                                    f"p50 {r['p50_ms']:.2f} ms{'' if r['stable'] else ' (unstable)'}",
                                                    file=sys.stderr))
    latency = [dict(r, ci95=_ci(r), stable="yes" if r["stable"] else "NO") for r in rows if r["kind"] == "latency"]
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "env"} | {"env": r["env"]} for r in rows],
                         indent=2, ensure_ascii=False, default=str))
    else:
        print(f"# {loaded.label}")
        print(_env_line(rows[0]["env"]) if rows else "")
        print("# scope compute: device inputs -> device logits; e2e: audio -> features -> forward -> greedy text. "
              "p50 CI: 95 % bootstrap")
        print(_table(latency, ["backend", "scope", "audio_s", "batch", "p50_ms", "ci95", "p90_ms", "p99_ms", "stable",
                               "rtf", "audio_s_per_s", "cold_start_s", "peak_mem_mb"]))
    if not args.no_save:
        print(f"saved as run {save(rows, 'latency', note=' '.join(sys.argv[1:]))}", file=sys.stderr)


def cmd_check(args):
    from .check import BATCHES, LENGTHS_S, run_check
    from .results import save
    loaded = _model(args)
    lengths = {f"given length {i + 1}": s for i, s in enumerate(args.seconds)} if args.seconds else LENGTHS_S
    rows = run_check(loaded, args.backend, reference=args.reference, batches=args.batch or BATCHES, lengths=lengths,
                     progress=lambda r: print(f"  {r['backend']} {r['cell']}: {'ok' if r['passed'] else 'FAIL ' + r['reason']}",
                                              file=sys.stderr))
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    else:
        print(f"# {loaded.label} | reference {rows[0]['reference'] if rows else args.reference}")
        print(_env_line(rows[0]["env"]) if rows else "")
        table = [dict(r, transcripts=f"{r['transcripts_agree']}/{r['transcripts_total']}",
                      result="pass" if r["passed"] else "FAIL") for r in rows]
        print(_table(table, ["backend", "cell", "max_abs_dlogit", "rel_dlogit", "frame_agree", "transcripts",
                             "transcript_cer", "result"]))
    failed = [r for r in rows if not r["passed"]]
    for spec in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == spec]
        bad = [r for r in mine if not r["passed"]]
        print(f"{spec}: {len(mine) - len(bad)}/{len(mine)} cells pass" + (f"; first failure: {bad[0]['cell']}: "
                                                                         f"{bad[0]['reason']}" if bad else ""),
              file=sys.stderr)
    if not args.no_save:
        print(f"saved as run {save(rows, 'conformance', note=' '.join(sys.argv[1:]))}", file=sys.stderr)
    return 1 if failed else 0


def cmd_wer(args):
    from .backends import make_backend
    from .envinfo import environment
    from .results import save
    from .wer import evaluate
    loaded = _model(args)
    rows = []
    for spec in args.backend:
        with make_backend(spec, loaded) as backend:
            r = evaluate(backend, loaded, args.manifest, limit=args.limit, beam=args.beam)
        rows.append({"kind": "accuracy", "model": loaded.source, "model_label": loaded.label,
                     "random_weights": loaded.random_weights, "backend": spec, "runtime": backend.spec.runtime,
                     "precision": backend.precision, "device": backend.device, "wer": r["wer"], "cer": r["cer"],
                     "n": r["n"], "manifest": str(args.manifest), "env": environment()})
        if args.show:
            for u in r["utterances"]:
                print(f"  {u['audio']}: REF {u['reference']}\n  {'':{len(u['audio'])}}  HYP {u['hypothesis']}")
    if loaded.random_weights:
        print("note: random weights — these WER/CER figures are meaningless", file=sys.stderr)
    print(_table(rows, ["backend", "n", "wer", "cer"]))
    if not args.no_save:
        print(f"saved as run {save(rows, 'accuracy', note=' '.join(sys.argv[1:]))}", file=sys.stderr)


def cmd_results(args):
    from .results import rows, runs
    if args.run is None:
        print(_table(runs(), ["id", "created", "kind", "rows", "note"]))
    else:
        print(_table(rows(args.run), ["kind", "backend", "scope", "audio_s", "batch", "concurrency", "p50_ms",
                                      "p90_ms", "p99_ms", "audio_s_per_s", "wer", "cer", "cell", "passed", "gpu"]))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="ASR inference-backend workbench.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help_):
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=fn)
        s.add_argument("--model", default=None, help=MODEL_HELP)
        return s

    add("info", cmd_info, "Show the environment, which backends run here, and built artifacts.")
    s = add("export", cmd_export, "Export the model to ONNX (FP32) and check parity against PyTorch.")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    s.add_argument("--out", default=None, help="output folder (default artifacts/<model>/onnx/fp32)")
    s.add_argument("--force", action="store_true", help="re-export even if a cached export exists")
    backend_help = "runtime:precision:device, e.g. torch:fp32:cpu, torch:fp16:cuda, ort:fp32:cuda (repeatable)"
    s = add("transcribe", cmd_transcribe, "Transcribe audio files (WAV/FLAC/OGG/MP3) on one or more backends.")
    s.add_argument("audio", nargs="+")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--beam", action="store_true", help="beam search with the model's KenLM LM (if it ships one)")
    s.add_argument("--reference", help="reference text: prints WER/CER per backend")
    s.add_argument("--json", action="store_true")
    s = add("bench", cmd_bench, "Latency/throughput per backend, audio length and batch size (saved to the results DB).")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--seconds", type=float, nargs="+", default=[1, 5, 10])
    s.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--repeats", type=int, default=30)
    s.add_argument("--audio", help="speech to tile to each length (default: seeded noise)")
    s.add_argument("--scope", nargs="+", choices=("compute", "e2e"), default=["compute", "e2e"],
                   help="compute: device inputs -> device logits; e2e: audio -> features -> forward -> text")
    s.add_argument("--windows", type=int, default=8, help="at most this many measurement windows of --repeats "
                   "calls, until the last three p50s agree within 5%% (else the row is flagged unstable)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.add_argument("--no-save", action="store_true")
    s = add("check", cmd_check, "Conformance matrix: each backend against PyTorch FP32 at every batch size and "
            "length (bucketing, splitting, padding, buffer reuse); exits 1 on any failure.")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--reference", default=None, help="default: torch:fp32:cuda on a GPU machine, else torch:fp32:cpu")
    s.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 2 3 8 9 16 17 33)")
    s.add_argument("--seconds", type=float, nargs="+",
                   help="audio lengths (default 0.7 5 6.5 21.5: inside, at, between and past the length buckets)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-save", action="store_true")
    s = add("wer", cmd_wer, "WER/CER of backends over a labelled manifest (CSV/TSV/JSONL; Common Voice TSV).")
    s.add_argument("--manifest", default=None, help="default: the shipped demo held-out set")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--limit", type=int)
    s.add_argument("--beam", action="store_true")
    s.add_argument("--show", action="store_true", help="print every reference/hypothesis pair")
    s.add_argument("--no-save", action="store_true")
    for name in PLUGINS:  # commands of optional modules (precision variants, TensorRT, Triton)
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        mod.add_cli(add)
    s = sub.add_parser("results", help="List stored runs, or the rows of one run.")
    s.set_defaults(fn=cmd_results)
    s.add_argument("--run", type=int)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "backend", "") is None:
        args.backend = ["torch:fp32:cpu"]
    if getattr(args, "manifest", "") is None:
        from .paths import DEMO_TESTSET
        args.manifest = DEMO_TESTSET
    try:
        return args.fn(args) or 0
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
