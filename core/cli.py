"""`python -m core …`: the same jobs as the dashboard, from a shell."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from .backends import option_argument
from .errors import WorkbenchError
from .pipeline.onnx_specs import DEFAULT_KEEP_FP32, VARIANTS
from .triton.loadtest import GENERATORS
from .triton.repo import AUDIO_DTYPES

MODEL_HELP = ("Hugging Face id, local folder, 'demo' (offline synthetic-speech demo model) or "
              "'random:wav2vec2-large' / 'random:wav2vec2-tiny' (random weights, speed only). "
              "Default: ai4bharat/indicwav2vec-hindi, falling back to the demo model when the Hub is unreachable.")


def _optional(name: str):
    """A module of an optional part (precision variants, TensorRT, Triton, profiling), or None when this build of
    the workbench leaves it out: its commands are then not declared. A missing dependency of the module still raises."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name:
            return None
        raise


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
    from .pipeline.listing import artifact_rows
    for r in artifact_rows():
        print(f"  {r['status']:9} {r['model']} {r['stage']} {r['precision']} ({r['dir']})")
    if args.model is not None:
        print(json.dumps(_model(args).describe(), indent=2, ensure_ascii=False))


def _gate_args(s) -> None:
    s.add_argument("--max-rel-dlogit", type=float, default=None,
                   help="gate: max |Δlogit| against PyTorch FP32 as a fraction of its logit scale (default per "
                        "precision: fp32 1e-3, fp16/mixed 5e-2, bf16 1e-1, int8, int4w, int8w and fp8 0.5)")
    s.add_argument("--max-wer-delta", type=float, default=None,
                   help="gate: max WER increase against FP32 on the labelled set, in points (default 0.5; int8, "
                        "int4w, int8w, fp8 2)")
    s.add_argument("--accept-rejected", action="store_true",
                   help="offer the artifact as a backend even if its gate rejects it (recorded in its meta.json)")
    s.add_argument("--force", action="store_true", help="rebuild even if a finished artifact exists")


def _build_summary(art) -> dict:
    f = art.meta.get("figures", {})
    return {"stage": art.meta["stage"], "precision": art.meta["precision"], "status": art.status,
            "accepted": bool(art.meta.get("accepted")), "reasons": art.meta.get("reasons", []), "key": art.key,
            "path": str(art.path), "max_abs_dlogit": f.get("max_abs_dlogit"), "rel_dlogit": f.get("rel_dlogit"),
            "wer": f.get("wer"), "wer_fp32": f.get("wer_fp32"), "wer_delta_points": f.get("wer_delta_points"),
            "gate": art.meta.get("gate")}


def cmd_build(args):
    from .pipeline import accept
    from .pipeline.gates import Gate
    from .pipeline.onnx_build import build_onnx, build_variant
    loaded = _model(args)
    precision = "fp32" if args.stage == "onnx" else args.stage
    gate = Gate.default(precision, args.max_rel_dlogit, args.max_wer_delta)
    log = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    manifest = args.manifest
    print(f"progress: 0.05 building {args.stage}", flush=True)
    if args.stage == "onnx":
        art = build_onnx(loaded, args.opset, args.exporter, gate, manifest, args.force, log)
    else:
        art = build_variant(loaded, args.stage, manifest=manifest, calib_size=args.calib_size,
                            keep_fp32_ops=args.keep_fp32, calib_manifest=args.calib_manifest, gate=gate,
                            force=args.force, log=log)
    if art.status == "rejected" and args.accept_rejected and not art.meta.get("accepted"):
        art = accept(art, note="python -m core build --accept-rejected")
    print("progress: 1.00 done", flush=True)
    if art.meta.get("calibration_in_eval_set"):
        print(f"note: {args.stage.upper()} was calibrated on clips of the evaluation manifest; its WER is optimistic. "
              "Pass --calib-manifest with other audio for an unbiased figure.", file=sys.stderr)
    print(json.dumps(_build_summary(art), indent=2, ensure_ascii=False))
    if not art.usable:
        print(f"error: {args.stage} rejected by its gate: {'; '.join(art.meta['reasons'])}\n  → not offered as a "
              "backend; loosen the gate or pass --accept-rejected to use it anyway", file=sys.stderr)
        return 1
    return 0


def cmd_artifacts(args):
    import shutil
    from .pipeline.listing import artifact_rows
    from .pipeline.store import clean_all_temps
    for tmp in clean_all_temps():
        print(f"removed the temporary folder of an interrupted build: {tmp}", file=sys.stderr)
    source = _model(args).source if args.model else None
    rows = artifact_rows(source)
    if args.prune:
        for r in [r for r in rows if r["status"] == "stale"]:
            shutil.rmtree(r["dir"], ignore_errors=True)
            print(f"removed stale {r['dir']} ({r['why']})", file=sys.stderr)
        rows = [r for r in rows if r["status"] != "stale"]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    elif rows:
        print(_table(rows, ["model", "stage", "precision", "status", "key", "max_abs_dlogit", "rel_dlogit",
                            "wer_delta_points", "size_mb", "created", "why"]))
    else:
        print("no artifacts built yet: python -m core build onnx --model <model>")


def cmd_transcribe(args):
    from .audio import load_audio
    from .backends import make_backend
    from .transcribe import transcribe
    from .wer import scores
    from .errors import AudioError
    loaded = _model(args)
    audios, failed = [], 0
    for path in args.audio:  # one bad file is reported and skipped: the others are still transcribed
        try:
            audio = load_audio(path, loaded.sample_rate)
        except AudioError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        if audio.warning:
            print(f"warning: {audio.warning}", file=sys.stderr)
        audios.append(audio)
    if not audios:
        return 2
    rows = []
    for spec in args.backend:
        with make_backend(spec, loaded, **dict(args.option or [])) as backend:
            for audio in audios:
                try:
                    t = transcribe(audio, backend, loaded, beam=args.beam)
                except AudioError as err:
                    print(f"error: {err}", file=sys.stderr)
                    failed += 1
                    continue
                row = {"backend": spec, "audio": audio.name, "seconds": round(audio.duration, 2),
                       "latency_ms": round(t.latency_ms, 1), "text": t.text}
                if args.reference:
                    row.update({k: round(v, 4) for k, v in scores([args.reference], [t.text]).items() if k != "n"})
                rows.append(row)
                print(f"[{spec}] {audio.name} ({audio.duration:.1f} s, {t.latency_ms:.0f} ms): {t.text}")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    return 1 if failed else 0


def cmd_record(args):
    """Record from this machine's audio input, then transcribe the recording exactly as `transcribe` does."""
    import tempfile
    import time
    from .microphone import input_devices, record
    devices = input_devices()
    if args.list:
        for d in devices:
            print(f"{'*' if d.default else ' '} {d.index:3}  {d.name}  ({d.hostapi}, {d.channels} in, "
                  f"{d.default_rate} Hz)")
        return 0
    shown = [0.0]

    def meter(take):  # a countdown and a level bar, four times a second; Ctrl-C stops early
        if time.monotonic() - shown[0] >= 0.25 or take.finished:
            shown[0] = time.monotonic()
            print(f"recording {take.device} at {take.rate} Hz: {max(take.seconds - take.elapsed, 0):5.1f} s left "
                  f"[{'#' * round(take.meter * 20):20}]", end="\r" if tty else "\n", file=sys.stderr, flush=True)
    tty = sys.stderr.isatty()  # a terminal gets one line that updates; a log, a line per update
    take = record(args.seconds, args.device, progress=meter, devices=devices)
    if tty:
        print(file=sys.stderr)
    saved, failed = None, 0
    if args.save:  # kept as 16-bit WAV; a save that fails is reported and the take is still transcribed
        from .errors import WorkbenchError
        from .paths import atomic_path
        try:
            with atomic_path(args.save) as partial:
                partial.write_bytes(take.wav_bytes())
            saved = args.save
            print(f"saved the recording to {saved}", file=sys.stderr)
        except (WorkbenchError, OSError) as err:
            why = err.message if isinstance(err, WorkbenchError) else f"Cannot write {args.save}: {err.strerror}."
            print(f"error: {why} The recording is transcribed but not kept.", file=sys.stderr)
            failed = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = saved or Path(tmp) / f"microphone-{time.strftime('%Y%m%d-%H%M%S')}.wav"
        if not saved:
            path.write_bytes(take.wav_bytes())
        return cmd_transcribe(argparse.Namespace(**vars(args), audio=[str(path)], beam=False, reference=None)) or failed


def _new_file(text: str) -> str:
    """An argparse type: a file path that can be created, checked before a recording rather than after it."""
    path = Path(text).absolute()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give a file name, like {Path(text) / 'take.wav'}")
    folder = next(p for p in path.parents if p.exists())
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is a file, not a folder: {text} cannot be created")
    return text


def _number(kind, low, high=None, what="value"):
    """An argparse type: a number in [low, high], else a one-line error naming the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not (value >= low and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"{what} must be {'at least ' + str(low) if high is None else f'between {low} and {high}'}, "
                                             f"not {text}")
        return value
    return parse


SECONDS = _number(float, 0.1, 600, "audio seconds per item")   # a longer item is windowed by transcribe()
BATCH = _number(int, 1, 1024, "the batch size")
REPEATS = _number(int, 3, 100_000, "repeats per measurement window")
WARMUP = _number(int, 0, 100_000, "warm-up calls")
COUNT = _number(int, 1, None, "the count")


def HOST_PORT(text: str) -> str:
    host, sep, port = text.removeprefix("http://").removeprefix("grpc://").rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"expected host:port (e.g. localhost:8001), got '{text}'")
    return f"{host}:{port}"


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
    options = dict(args.option or [])   # the same backend options for the timing and the WER runs
    source = None
    if args.audio:
        from .audio import load_audio
        source = load_audio(args.audio, loaded.sample_rate).samples
    rows = []
    steps = len(args.backend) * (len(args.seconds) * len(args.batch) * len(args.scope) + bool(args.wer_manifest))
    done = [0]

    def tick(r):  # `progress:` lines feed the dashboard's job view
        done[0] += 1
        print(f"progress: {done[0] / steps:.2f} {r['backend']} [{r['scope']}] {r['audio_s']:g} s x{r['batch']}: "
              f"p50 {r['p50_ms']:.2f} ms{'' if r['stable'] else ' (unstable)'}", file=sys.stderr, flush=True)
    for spec in args.backend:
        rows += bench_spec(spec, loaded, args.seconds, args.batch, args.warmup, args.repeats, tuple(args.scope),
                           source, max_windows=args.windows, progress=tick, gpu_price=args.gpu_price,
                           options=options)
        if args.wer_manifest:  # accuracy in the same run, so WER and latency chart together
            from .backends import make_backend
            from .envinfo import environment
            from .wer import evaluate
            with make_backend(spec, loaded, **options) as backend:
                r = evaluate(backend, loaded, args.wer_manifest, limit=args.wer_limit)
            rows.append({"kind": "accuracy", "model": loaded.source, "model_label": loaded.label,
                         "random_weights": loaded.random_weights, **backend.row_fields(), "wer": r["wer"], "cer": r["cer"],
                         "n": r["n"], "skipped": len(r["skipped"]), "manifest": str(args.wer_manifest),
                         "rtfx": r["rtfx"], "batch_size": r["batch_size"], "env": environment()})
            done[0] += 1
            print(f"progress: {done[0] / steps:.2f} {spec}: WER {r['wer']:.3f} on {r['n']} clips", file=sys.stderr,
                  flush=True)
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
                               "rtf", "audio_s_per_s", "cold_start_s", "peak_mem_mb", "energy_j_per_audio_h",
                               "usd_per_audio_h"]))
        for why in dict.fromkeys(f"{r['backend']}: {r[k]}" for r in latency for k in ("energy_reason", "usd_reason")
                                 if r.get(k)):
            print(f"# no energy/cost figure for {why}")
    if not args.no_save:
        kind = "benchmark" if args.wer_manifest else "latency"
        print(f"saved as run {save(rows, kind, note=args.note or ' '.join(sys.argv[1:]), command=_command())}",
              file=sys.stderr)


def cmd_check(args):
    from .check import BATCHES, LENGTHS_S, run_check
    from .results import save
    loaded = _model(args)
    lengths = {f"given length {i + 1}": s for i, s in enumerate(args.seconds)} if args.seconds else LENGTHS_S
    options = {spec: dict(args.option or []) for spec in args.backend}
    rows = run_check(loaded, args.backend, reference=args.reference, batches=args.batch or BATCHES, lengths=lengths,
                     options=options, progress=lambda r: print(f"  {r['backend']} {r['cell']}: {'ok' if r['passed'] else 'FAIL ' + r['reason']}",
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
        print(f"saved as run {save(rows, 'conformance', note=' '.join(sys.argv[1:]), command=_command())}",
              file=sys.stderr)
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
            r = evaluate(backend, loaded, args.manifest, limit=args.limit, beam=args.beam, batch_size=args.batch_size)
        for skip in r["skipped"]:
            print(f"warning: skipped {skip['audio']}: {skip['error']}", file=sys.stderr)
        rows.append({"kind": "accuracy", "model": loaded.source, "model_label": loaded.label,
                     "random_weights": loaded.random_weights, **backend.row_fields(), "wer": r["wer"],
                     "cer": r["cer"], "n": r["n"], "skipped": len(r["skipped"]), "manifest": str(args.manifest), "rtfx": r["rtfx"],
                     "batch_size": r["batch_size"], "audio_s_total": r["audio_s_total"],
                     "transcribe_s_total": r["transcribe_s_total"], "env": environment()})
        if args.show:
            for u in r["utterances"]:
                print(f"  {u['audio']}: REF {u['reference']}\n  {'':{len(u['audio'])}}  HYP {u['hypothesis']}")
    if loaded.random_weights:
        print("note: random weights — these WER/CER figures are meaningless", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    else:  # RTFx: audio seconds / transcription seconds, end to end, batched by sorted duration, after warm-up
        print(_table(rows, ["backend", "n", "wer", "cer", "rtfx", "batch_size"]))
    if not args.no_save:
        print(f"saved as run {save(rows, 'accuracy', note=' '.join(sys.argv[1:]), command=_command())}",
              file=sys.stderr)


def cmd_stream(args):
    from .audio import load_audio
    from .backends import make_backend
    from .results import save
    from .streaming import plan, result_row, stream
    loaded = _model(args)
    audio = load_audio(args.audio, loaded.sample_rate)
    if audio.warning:
        print(f"warning: {audio.warning}", file=sys.stderr)
    rows, n = [], len(plan(len(audio.samples), loaded.model.config, loaded.sample_rate, args.chunk_s, args.left_s,
                           args.right_s))
    for spec in args.backend:
        with make_backend(spec, loaded) as backend:
            def tick(c):  # `progress:` lines feed the dashboard's job view
                print(f"progress: {(c['chunk'] + 1) / n:.2f} {spec} chunk {c['chunk'] + 1}/{n}: "
                      f"{c['compute_ms']:.1f} ms, lag {c['lag_s']:.2f} s", file=sys.stderr, flush=True)
            result = stream(audio, backend, loaded, args.chunk_s, args.left_s, args.right_s, realtime=args.realtime,
                            progress=tick)
            rows.append(result_row(result, loaded, backend))
        if not args.json:
            r = rows[-1]
            print(f"# {spec} | {audio.name} {audio.duration:.1f} s | chunk {r['chunk_s']:g} s, left {r['left_s']:g} s, "
                  f"right {r['right_s']:g} s | arrival {'wall clock' if args.realtime else 'simulated clock'}")
            print(_table(r["chunk_rows"], ["chunk", "audio_end_s", "buffer_start_s", "buffer_end_s", "compute_ms",
                                           "available_s", "lag_s"]))
            print(f"streamed: {r['text']}\noffline:  {r['offline_text']}")
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    else:  # lag: text available - the chunk's audio end (look-ahead + waiting + compute)
        print(_table(rows, ["backend", "chunks", "p50_ms", "p99_ms", "lag_p50_s", "lag_p99_s", "lag_max_s", "rtf",
                            "wer", "cer"]))
        for r in rows:
            if r["score_note"]:
                print(f"# {r['backend']}: {r['score_note']}")
    if not args.no_save:
        print(f"saved as run {save(rows, 'streaming', note=' '.join(sys.argv[1:]), command=_command())}",
              file=sys.stderr)


def cmd_variants(args):
    """Several precision variants at once: `build fp16|mixed|int8` for each."""
    codes = []
    for i, precision in enumerate(args.precision):
        print(f"progress: {i / len(args.precision):.2f} building {precision}", flush=True)
        codes.append(cmd_build(argparse.Namespace(**{**vars(args), "stage": precision, "force": args.force,
                                                     "max_rel_dlogit": None, "max_wer_delta": None,
                                                     "accept_rejected": False, "opset": 17,
                                                     "exporter": "torchscript"})))
    return max(codes, default=0)


def cmd_trt_build(args):
    from .errors import BackendUnavailableError
    from .tensorrt import EngineSettings, build_engine, ensure_flavor_builds, tensorrt_available
    for precision in args.precision:   # before asking for TensorRT: this answer does not depend on it
        ensure_flavor_builds(precision, args.flavor)
    ok, why = tensorrt_available(args.flavor)
    if not ok:
        head, _, hint = why.partition(": ")
        raise BackendUnavailableError(head + ".", hint + " (the other backends work without it: python -m core info)")
    loaded = _model(args)
    settings = EngineSettings(args.min_seconds, args.opt_seconds, args.max_seconds, args.min_batch, args.opt_batch,
                              args.max_batch, args.workspace_gb, args.opt_level, tuple(args.keep_fp32 or ()),
                              tuple(args.targets or ()))
    from .pipeline import accept
    from .pipeline.gates import Gate
    codes = []
    for precision in args.precision:
        gate = Gate.default(precision, args.max_rel_dlogit, args.max_wer_delta)
        art = build_engine(loaded, precision, settings, gate=gate, force=args.rebuild or args.force,
                           flavor=args.flavor, log=lambda m: print(m, flush=True))
        if art.status == "rejected" and args.accept_rejected and not art.meta.get("accepted"):
            art = accept(art, note="python -m core trt-build --accept-rejected")
        print(json.dumps({**_build_summary(art), "tensorrt": art.meta.get("tensorrt"), "gpu": art.meta.get("gpu"),
                          "build_seconds": art.meta.get("build_seconds")}, ensure_ascii=False))
        codes.append(0 if art.usable else 1)
    return max(codes, default=0)


def cmd_repo(args):
    from .triton.gpus import ALL, parse_gpus
    from .triton.repo import RepoOptions, build_repo
    gpus = parse_gpus(args.gpus)   # for the serving node, not this machine: indices are not checked against it
    opts = RepoOptions(max_batch=args.max_batch, preferred=tuple(args.preferred), max_queue_delay_us=args.max_queue_delay_us,
                       instances=args.instances, kind=args.kind, trt_accelerator=args.trt_accelerator,
                       gpus=None if gpus in (None, ALL) else gpus)
    path = build_repo(_model(args), args.backend, name=args.model_name, opts=opts, engine=args.engine)
    print(path)
    print((path / args.model_name / "config.pbtxt").read_text(encoding="utf-8"))


def cmd_serve(args):
    from .triton import server
    if args.stop:
        print("stopped" if server.stop(args.name) else f"no running server named '{args.name}'")
        return
    if args.status:
        info = server.read_state(args.name)
        print(f"running: pid {info.pid}, http {info.url('http')}, grpc {info.url('grpc')}, model '{info.model_name}' "
              f"({info.backend}, {info.audio} audio), log {info.log}" if info
              else f"no running server named '{args.name}'")
        return
    from .triton.batching import preferred_sizes
    preferred_sizes(args.preferred, args.max_batch)   # a bad size fails before "starting" is printed
    how = "Triton's Python backend" if args.python_backend else "PyTriton"
    print(f"starting Triton ({how}) for {args.model or 'the default model'} on {args.backend} ...", file=sys.stderr)
    info = server.start(args.model, args.backend, name=args.name, model_name=args.model_name, address=args.address,
                        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                        max_batch=args.max_batch, preferred=args.preferred, max_queue_delay_us=args.max_queue_delay_us,
                        instances=args.instances, threads=args.threads, warmup_s=args.warmup_seconds,
                        timeout_s=args.timeout, gpus=args.gpus, python_backend=args.python_backend,
                        backend_options=dict(args.option or []), input_dtype=args.input_dtype)
    print(f"ready: model '{info.model_name}' on http {info.url('http')}, grpc {info.url('grpc')}, "
          f"metrics {info.address}:{info.metrics_port} (pid {info.pid}, log {info.log})")
    print(f"measure: python -m core sweep --model {args.model or '<model>'} --url {info.url('grpc')} --protocol grpc")
    print("stop:    python -m core serve --stop" + (f" --name {args.name}" if args.name != "default" else ""))


def cmd_sweep(args):
    from .audio import load_audio
    from .backends import make_backend
    from .export import parity_audio
    from .backends.triton_backend import START_HINT
    from .results import save
    from .triton import server
    from .triton.loadtest import prepare_clips, sweep
    loaded = _model(args)
    local = server.read_state(args.name)
    url = args.url or [local.url(args.protocol) if local else f"localhost:{8000 if args.protocol == 'http' else 8001}"]
    model_name = args.model_name or (local.model_name if local else "asr")
    served = args.served_backend or (local.backend if local and not args.url else None)
    audios = [load_audio(p, loaded.sample_rate) for p in args.audio] if args.audio else parity_audio(loaded, n=8)
    with make_backend(args.reference_backend, loaded) as ref:
        clips = prepare_clips(loaded, audios, args.audio_seconds, ref)
    print(f"sweep {', '.join(url)} ({args.protocol}) model '{model_name}': {len(clips)} clips, levels "
          f"{args.concurrency}, "
          f"≤{args.requests} requests / ≤{args.seconds:g} s per level", file=sys.stderr)
    levels = list(args.concurrency)

    def tick(r):  # `progress:` lines feed the dashboard's job view
        print(f"progress: {(levels.index(r['concurrency']) + 1) / len(levels):.2f} c={r['concurrency']}: "
              f"{r['items_per_s']:.2f} req/s, p50 {r['p50_ms']:.1f} ms, errors {r['errors']}", file=sys.stderr)
    rows = sweep(loaded, clips, url, args.protocol, model_name, levels, args.requests, args.seconds,
                 args.timeout, served_backend=served, progress=tick, processes=args.client_processes,
                 generator=args.load_generator, stability_pct=args.stability_pct)
    print(_table(rows, ["load_generator", "concurrency", "n", "errors", "items_per_s", "audio_s_per_s", "p50_ms",
                        "p90_ms", "p99_ms", "in_flight", "consistency", "server_avg_batch", "server_queue_ms",
                        "server_compute_ms", "outside_server_ms", "client_cpu_pct"]))
    for r in rows:
        if r["errors"]:
            print(f"  c={r['concurrency']} errors, e.g.: {r['error_examples'][0]}", file=sys.stderr)
        if r.get("client_bound"):
            print(f"  c={r['concurrency']}: a load-generator process used {r['client_cpu_pct']:.0f} % of a core, so "
                  "the client may have set this level's pace; raise --client-processes", file=sys.stderr)
    if rows and rows[-1].get("server_died"):
        print("the server stopped answering: sweep ended early", file=sys.stderr)
    if not any(r.get("n") for r in rows):  # nothing answered: a run of NaN rows would only mislead
        print(f"error: no request to {', '.join(url)} succeeded; nothing saved\n  → {START_HINT}", file=sys.stderr)
        return 1
    if not args.no_save:
        print(f"saved as run {save(rows, 'sweep', note=' '.join(sys.argv[1:]), command=_command())}", file=sys.stderr)


def cmd_profile(args):
    from .profiling import fusion_summary, onnx_op_histogram, torch_op_table
    loaded = _model(args)
    print(f"progress: 0.1 PyTorch profiler, {args.seconds:g} s of audio on {args.device}", file=sys.stderr)
    df = torch_op_table(loaded, args.seconds, args.device, args.top)
    print(f"# PyTorch operators, one forward pass ({args.seconds:g} s audio, {args.device}), by self time")
    print(_table(df.to_dict("records"), list(df.columns)))
    if args.onnx:
        from .export import export_onnx
        print("progress: 0.5 ONNX export and ORT graph optimisation", file=sys.stderr)
        hist = onnx_op_histogram(export_onnx(loaded, log=lambda *_: None).path)
        s = fusion_summary(hist)
        print(f"\n# ONNX graph: {s['nodes_exported']} nodes exported -> {s['nodes_basic']} (ORT basic) -> "
              f"{s['nodes_all']} (ORT all)")
        print(f"fused in: {', '.join(s['new_ops']) or '-'}\nfused away: {', '.join(s['gone_ops']) or '-'}")
        print(_table(hist.to_dict("records"), list(hist.columns)))
    print("progress: 1.0 done", file=sys.stderr)


def _command() -> str:
    """This invocation as a shell command, saved with its run so a report can say how to reproduce it."""
    import shlex
    return "python -m core " + shlex.join(sys.argv[1:])


def cmd_report(args):
    from .report import write
    out = write(args.run, args.format, args.out)
    print(f"wrote {out}")


def cmd_results(args):
    from .results import rows, runs
    if args.run is None:
        saved = runs()
        print(_table(saved, ["id", "created", "kind", "rows", "note"]) if saved else
              "no runs saved yet: python -m core bench (or check, wer, sweep) saves one")
    else:
        print(_table(rows(args.run), ["kind", "backend", "scope", "audio_s", "batch", "concurrency", "p50_ms",
                                      "p90_ms", "p99_ms", "audio_s_per_s", "wer", "cer", "cell", "passed", "gpu"]))


def _option(s, which: str, example: str):
    s.add_argument("--option", type=option_argument, action="append", metavar="KEY=VALUE",
                   help=f"an option of {which}, VALUE read as JSON where it parses (repeatable; e.g. {example})")


def _batching(s):
    s.add_argument("--model-name", default="asr", help="name of the model on the server")
    s.add_argument("--max-batch", type=int, default=8)
    s.add_argument("--preferred", type=int, nargs="*", default=[],
                   help="preferred dynamic-batch sizes; keep them at most the expected concurrency over the instances "
                        "(H200, 2 instances, concurrency 16: 8 gave 71-84 %% of in-process at max batch 16 and "
                        "74-83 %% at 32 on medians of five levels, 8 16 gave 70-83 %% in single levels; docs/triton.md)")
    s.add_argument("--max-queue-delay-us", type=int, default=500)
    s.add_argument("--instances", type=int, default=1)


def _triton_commands(add):
    s = add("triton-repo", cmd_repo, "Write a Triton container model repository (onnxruntime or tensorrt_plan).")
    s.add_argument("--backend", default="ort:fp16:cuda", help="ort:<precision>:<device> or trt:<precision>:cuda")
    s.add_argument("--engine", help="TensorRT engine (.plan) for trt backends")
    s.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="instance kind")
    s.add_argument("--trt-accelerator", action="store_true", help="ONNX Runtime's TensorRT accelerator in Triton")
    s.add_argument("--gpus", nargs="+", default=None, metavar="GPU", help="'all' or GPU indices (e.g. 0 1): "
                   "instance_group gpus, --instances instances on each; default and 'all': every GPU Triton sees")
    _batching(s)
    s = add("serve", cmd_serve, "Serve a backend through a local Triton server (PyTriton, no container).")
    s.add_argument("--backend", default="ort:fp32:cpu")
    s.add_argument("--name", default="default", help="server name (several can run on different ports)")
    s.add_argument("--address", default="127.0.0.1", help="bind address; 0.0.0.0 exposes it to the network")
    for proto, port in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        s.add_argument(f"--{proto}-port", type=int, default=port)
    s.add_argument("--threads", type=int, help="intra-op threads per ONNX Runtime instance")
    s.add_argument("--gpus", nargs="+", default=None, metavar="GPU",
                   help="spread the instances over these GPUs ('all' or indices, e.g. 0 1): --instances on each")
    s.add_argument("--python-backend", action="store_true",
                   help="run each instance as its own Triton Python-backend process (own interpreter, own GPU) "
                        "instead of PyTriton's callables in one process (two H200s: 0.86x one GPU; docs/triton.md)")
    s.add_argument("--input-dtype", choices=AUDIO_DTYPES, default="auto",
                   help="type of the served input_values; clients read it from the model's metadata. auto (the "
                        "default) is fp16 for fast and torch fp16 backends, which cast the audio to FP16 first, so "
                        "the outputs do not change and requests carry half the bytes; fp32 otherwise (docs/triton.md)")
    _option(s, "the served backend", "batch_buckets=[1,2,4,8] compile_scope=whole for fast:…")
    s.add_argument("--timeout", type=float, default=300, help="seconds to wait for the server to be ready")
    s.add_argument("--warmup-seconds", type=float, help="run every batch size once at this audio length before "
                   "serving (GPU backends that compile or capture graphs per shape)")
    s.add_argument("--stop", action="store_true", help="stop the running server")
    s.add_argument("--status", action="store_true", help="show the running server")
    _batching(s)
    s = add("sweep", cmd_sweep, "Load sweep against a Triton server: throughput/latency per concurrency level.")
    s.add_argument("--url", nargs="+", help="host:port (default: the local `serve` server); several: servers behind "
                   "a client-side balancer (e.g. one per GPU), each client thread on the next one")
    s.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    s.add_argument("--model-name", default=None)
    s.add_argument("--name", default="default", help="local server name (for the default url)")
    s.add_argument("--concurrency", type=_number(int, 1, 1024, "the concurrency"), nargs="+",
                   default=[1, 2, 4, 8, 16, 32])
    s.add_argument("--requests", type=COUNT, default=200, help="max requests per level")
    s.add_argument("--client-processes", type=_number(int, 1, 64, "the client processes"), default=None,
                   help="split each level's clients over this many processes (one Python process sends ~500 "
                   "requests/s of 5 s audio; its CPU is the client_cpu_pct column); default: a quarter of the "
                   "cores, at most one per client")
    s.add_argument("--seconds", type=_number(float, 0.5, 3600, "seconds per level"), default=30,
                   help="max seconds per level (perf_analyzer: its measurement window, three to ten a level)")
    s.add_argument("--load-generator", choices=GENERATORS, default="workbench",
                   help="workbench: Python clients that also compare transcripts; perf_analyzer: Triton's C++ load "
                        "generator (no output check, one server; --requests and --client-processes do not apply)")
    s.add_argument("--stability-pct", type=_number(float, 1, 100, "the stability percentage"), default=None,
                   help="perf_analyzer: the margin within which three windows in a row must agree (its default 10)")
    s.add_argument("--timeout", type=float, default=10, help="per-request timeout (s)")
    s.add_argument("--audio", nargs="+", help="speech files to send (default: the shipped test clips)")
    s.add_argument("--audio-seconds", type=float, help="tile/crop every clip to this length")
    s.add_argument("--reference-backend", default="torch:fp32:cpu", help="in-process backend for transcript agreement")
    s.add_argument("--served-backend", help="label of what the server runs (recorded with the results)")
    s.add_argument("--no-save", action="store_true")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="ASR inference-backend workbench.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help_):
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=fn)
        s.add_argument("--model", default=None, help=MODEL_HELP)
        return s

    add("info", cmd_info, "Show the environment, which backends run here, and built artifacts.")
    for name, help_ in (("build", "Build one artifact through the pipeline (ONNX export or a precision variant): "
                                  "built once per content key, verified by its gate, committed atomically."),
                        ("export", "Alias of `build onnx`: the FP32 ONNX export, verified against PyTorch.")):
        s = add(name, cmd_build, help_)
        if name == "build":
            s.add_argument("stage", choices=("onnx", *VARIANTS),
                           help="onnx: the FP32 export; the others: ONNX precision variants of it "
                                "(int4w: weight-only INT4, blockwise; int8w: weight-only INT8, per channel; fp8: FP8 "
                                "E4M3 Q/DQ, for FP8 GPUs; bf16: for TensorRT(-RTX), verified on an FP32 emulation). "
                                "`build trt|trtrtx|triton` are the trt-build (--flavor trtrtx) and triton-repo "
                                "commands (see their --help)")
        else:
            s.set_defaults(stage="onnx")
        s.add_argument("--opset", type=int, default=17)
        s.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
        s.add_argument("--manifest", default=None, help="labelled set for the WER gate (default: the demo set)")
        s.add_argument("--calib-manifest", default=None, help="audio for INT8 calibration (default: --manifest)")
        s.add_argument("--calib-size", type=int, default=None, help="INT8 calibration clips (default 32)")
        s.add_argument("--keep-fp32", nargs="+", default=None, metavar="OP",
                       help="op types kept FP32 in mixed / left unquantized in int8 ('lm_head': the final projection)")
        _gate_args(s)
    s = add("artifacts", cmd_artifacts, "List built artifacts: stage, precision, status (verified, rejected, "
                                        "stale), gate figures, size.")
    s.add_argument("--json", action="store_true")
    s.add_argument("--prune", action="store_true", help="delete stale artifacts")
    s.add_argument("--force", action="store_true", help="re-export even if a cached export exists")
    backend_help = "runtime:precision:device, e.g. torch:fp32:cpu, torch:fp16:cuda, ort:fp32:cuda (repeatable)"
    s = add("transcribe", cmd_transcribe, "Transcribe audio files (WAV/FLAC/OGG/MP3) on one or more backends.")
    s.add_argument("audio", nargs="+")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--triton-url", type=HOST_PORT, default=None, metavar="HOST:PORT",
                   help="the Triton server triton:… backends talk to (default: the local `serve` server)")
    s.add_argument("--beam", action="store_true", help="beam search with the model's KenLM LM (if it ships one)")
    _option(s, "every backend", "compile_scope=whole dynamic_time=false for fast:…: one whole-model compile per "
            "shape, where the default compiles each part once for every length and batch")
    s.add_argument("--reference", help="reference text: prints WER/CER per backend")
    s.add_argument("--json", action="store_true")
    s = add("record", cmd_record, "Record from this machine's microphone (sounddevice), then transcribe it like "
                                  "`transcribe`. Ctrl-C ends the recording early.")
    s.add_argument("--seconds", type=_number(float, 0.5, 600, "the recording length in seconds"), default=5.0)
    s.add_argument("--device", default=None, help="input device: index or (part of) its name; default: the "
                                                  "system's default input")
    s.add_argument("--list", action="store_true", help="list the input devices with their default rates, and exit")
    s.add_argument("--save", metavar="WAV", type=_new_file, help="also keep the recording as a 16-bit WAV file here")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    _option(s, "every backend", "compile_scope=whole for fast:…")
    s.add_argument("--json", action="store_true")
    s = add("bench", cmd_bench, "Latency/throughput per backend, audio length and batch size (saved to the results DB).")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--triton-url", type=HOST_PORT, default=None, metavar="HOST:PORT",
                   help="the Triton server triton:… backends talk to (default: the local `serve` server)")
    s.add_argument("--seconds", type=SECONDS, nargs="+", default=[1, 5, 10])
    s.add_argument("--batch", type=BATCH, nargs="+", default=[1, 8])
    s.add_argument("--warmup", type=WARMUP, default=5)
    s.add_argument("--repeats", type=REPEATS, default=30)
    s.add_argument("--audio", help="speech to tile to each length (default: seeded noise)")
    _option(s, "every benchmarked backend (stored with its rows)", "dynamic_batch=false for fast:…")
    s.add_argument("--scope", nargs="+", choices=("compute", "e2e"), default=["compute", "e2e"],
                   help="compute: device inputs -> device logits; e2e: audio -> features -> forward -> text")
    s.add_argument("--windows", type=_number(int, 3, 1000, "measurement windows"), default=8, help="at most this many measurement windows of --repeats "
                   "calls, until the last three p50s agree within 5%% (else the row is flagged unstable)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.add_argument("--gpu-price", type=_number(float, 0.01, 1000, "the GPU price in $/hour"), default=None,
                   help="$ per GPU-hour for usd_per_audio_h (default: core.energy's dated table for H200/H100/A100)")
    s.add_argument("--wer-manifest", default=None, help="also score WER/CER on this labelled set, in the same run")
    s.add_argument("--wer-limit", type=COUNT, default=None, help="first N clips of --wer-manifest")
    s.add_argument("--note", default=None, help="the run's note in the results database")
    s.add_argument("--no-save", action="store_true")
    s = add("check", cmd_check, "Conformance matrix: each backend against PyTorch FP32 at every batch size and "
            "length (bucketing, splitting, padding, buffer reuse); exits 1 on any failure.")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--triton-url", type=HOST_PORT, default=None, metavar="HOST:PORT",
                   help="the Triton server triton:… backends talk to (default: the local `serve` server)")
    s.add_argument("--reference", default=None, help="default: torch:fp32:cuda on a GPU machine, else torch:fp32:cpu")
    _option(s, "every checked backend", "compile=precompile, dynamic_batch=true, buckets_s=[1,2] for fast:…")
    s.add_argument("--batch", type=BATCH, nargs="+", help="batch sizes (default 1 2 3 8 9 16 17 33)")
    s.add_argument("--seconds", type=SECONDS, nargs="+",
                   help="audio lengths (default 0.7 5 6.5 21.5: inside, at, between and past the length buckets)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-save", action="store_true")
    s = add("wer", cmd_wer, "WER/CER of backends over a labelled manifest (CSV/TSV/JSONL; Common Voice TSV).")
    s.add_argument("--manifest", default=None, help="default: the shipped demo held-out set")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--triton-url", type=HOST_PORT, default=None, metavar="HOST:PORT",
                   help="the Triton server triton:… backends talk to (default: the local `serve` server)")
    s.add_argument("--limit", type=COUNT, help="score only the first N clips")
    s.add_argument("--beam", action="store_true")
    s.add_argument("--show", action="store_true", help="print every reference/hypothesis pair")
    s.add_argument("--batch-size", type=BATCH, default=1, help="clips per batch for RTFx, sorted by duration "
                   "(1: clip by clip; >1 pads similar lengths together, as the Open ASR Leaderboard does)")
    s.add_argument("--json", action="store_true", help="print the rows (wer, cer, rtfx, …) as JSON")
    s.add_argument("--no-save", action="store_true")
    s = add("stream", cmd_stream, "Streaming latency: feed a file as if it arrived in real time, in chunks with left/right "
            "context (buffered CTC); per-chunk latency p50/p99, lag behind real time, WER against offline.")
    s.add_argument("audio", help="a long audio file (WAV/FLAC/OGG/MP3)")
    s.add_argument("--backend", action="append", default=None, help=backend_help)
    s.add_argument("--chunk-s", type=_number(float, 0.02, 600, "the chunk length in seconds"), default=2.0)
    s.add_argument("--left-s", type=_number(float, 0, 600, "the left context in seconds"), default=4.0)
    s.add_argument("--right-s", type=_number(float, 0, 600, "the right context (look-ahead) in seconds"), default=1.0)
    s.add_argument("--realtime", action="store_true", help="sleep until each chunk's audio has arrived (wall clock) "
                   "instead of simulating arrival with a clock")
    s.add_argument("--json", action="store_true", help="print the rows (with every chunk's timing) as JSON")
    s.add_argument("--no-save", action="store_true")
    s = add("variants", cmd_variants, "Build several ONNX precision variants (`build fp16|mixed|int8` for each).")
    s.add_argument("--precision", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    s.add_argument("--manifest", default=None, help="labelled set for the WER gate and INT8 calibration "
                                                    "(default: data/demo_testset when present)")
    s.add_argument("--calib-manifest", default=None, help="audio for INT8 calibration (default: --manifest)")
    s.add_argument("--calib-size", type=int, default=None, help="INT8 calibration clips (default 32)")
    s.add_argument("--keep-fp32", nargs="+", default=None, metavar="OP",
                   help="ONNX op types kept FP32 in 'mixed' (and left unquantized in 'int8'); 'lm_head' is the "
                        f"final projection. Default mixed: {' '.join(DEFAULT_KEEP_FP32)}; int8: lm_head")
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    if trt := _optional("core.tensorrt"):  # declared without TensorRT installed: the command says how to get it
        s = add("trt-build", cmd_trt_build, "Build TensorRT engines (FP32, FP16, mixed, INT8) with optimization "
                                            "profiles and a persisted timing cache. " + trt.TRT_MISSING.split(":")[0]
                                            + " here means: install tensorrt-cu12 or tensorrt-cu13.")
        s.add_argument("--precision", nargs="+", choices=trt.PRECISIONS, default=["fp16"])
        d = trt.EngineSettings()
        s.add_argument("--min-seconds", type=float, default=d.min_seconds)
        s.add_argument("--opt-seconds", type=float, default=d.opt_seconds)
        s.add_argument("--max-seconds", type=float, default=d.max_seconds)
        s.add_argument("--min-batch", type=int, default=d.min_batch)
        s.add_argument("--opt-batch", type=int, default=d.opt_batch)
        s.add_argument("--max-batch", type=int, default=d.max_batch)
        s.add_argument("--workspace-gb", type=float, default=d.workspace_gb)
        s.add_argument("--opt-level", type=int, default=d.optimization_level, help="builder optimization level 0-5")
        s.add_argument("--keep-fp32", nargs="+", default=None, metavar="OP",
                       help="mixed: ONNX op types (and 'lm_head') pinned to FP32 (default: as core.variants)")
        s.add_argument("--rebuild", action="store_true", help="build again even if a matching engine exists")
        s.add_argument("--flavor", choices=("trt", "trtrtx"), default="trt",
                       help="trt: TensorRT 10, on and for this GPU; trtrtx: TensorRT for RTX (pip install "
                            "tensorrt-rtx-cu13), built ahead of time without a GPU, for RTX-class GPUs")
        s.add_argument("--targets", nargs="+", choices=list(trt.RTX_TARGETS), default=None, metavar="CC",
                       help="trtrtx: compute capabilities to build for (default: portable, "
                            f"{' '.join(trt.RTX_PORTABLE)} and later)")
        _gate_args(s)
    if _optional("core.triton"):  # PyTriton is imported only when a server starts
        _triton_commands(add)
    if _optional("core.profiling"):
        s = add("profile", cmd_profile, "PyTorch operator table for one forward pass, and (--onnx) ONNX Runtime's "
                                        "graph optimisations as an op histogram.")
        s.add_argument("--seconds", type=float, default=2.0, help="audio length of the profiled pass")
        s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        s.add_argument("--top", type=int, default=25)
        s.add_argument("--onnx", action="store_true", help="also compare the ONNX graph before/after ORT optimisation")
    s = sub.add_parser("results", help="List stored runs, or the rows of one run.")
    s.set_defaults(fn=cmd_results)
    s.add_argument("--run", type=int)
    s = sub.add_parser("report", help="Write one stored run as a self-contained report: environment, method, tables, "
                                      "charts (HTML) and the commands that reproduce them.")
    s.set_defaults(fn=cmd_report)
    s.add_argument("--run", type=_number(int, 1, None, "the run id"), required=True,
                   help="run id (python -m core results lists them)")
    s.add_argument("--format", choices=("md", "html"), default="html")
    s.add_argument("--out", default=None, help="file to write (default: artifacts/reports/run-N.<format>)")
    return p


# `build trt|trtrtx|triton` are these commands, with their options
STAGE_COMMANDS = {"trt": ["trt-build"], "trtrtx": ["trt-build", "--flavor", "trtrtx"], "triton": ["triton-repo"]}


def main(argv=None) -> int:
    from .hostmem import keep_freed_memory
    keep_freed_memory()   # before any model is loaded: every backend's CPU work runs with it
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build"] and len(argv) > 1 and argv[1] in STAGE_COMMANDS:
        argv = [*STAGE_COMMANDS[argv[1]], *argv[2:]]
    args = parser().parse_args(argv)
    if getattr(args, "backend", "") is None:
        args.backend = ["torch:fp32:cpu"]
    if isinstance(getattr(args, "backend", None), list):  # a misspelt backend is an error before the model loads
        from .backends import availability
        for spec in args.backend:
            try:
                ok, why = availability(spec)
            except ValueError as err:
                ok, why = False, str(err)
            if not ok and ("unknown" in why or "runtime:precision" in why):
                print(f"error: backend {spec}: {why}\n  → python -m core info lists every backend and whether it "
                      "runs here", file=sys.stderr)
                return 2
    if getattr(args, "triton_url", None):   # read by every triton:… backend this command makes
        os.environ["WORKBENCH_TRITON_URL"] = args.triton_url
    if getattr(args, "manifest", "") is None and args.fn is not cmd_build:  # builds: the gate's own default
        from .paths import DEMO_TESTSET
        args.manifest = DEMO_TESTSET
    try:
        return args.fn(args) or 0
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:   # a full, read-only or forbidden artifacts folder, wherever the write happened
        from .paths import STORAGE_ERRNOS, storage_error
        if err.errno not in STORAGE_ERRNOS:
            raise
        print(f"error: {storage_error(err, err.filename or 'the artifacts folder')}", file=sys.stderr)
        return 2
