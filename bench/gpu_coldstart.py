"""Issue 16, item 3: the cold start of fast:fp16:cuda — model load, torch.compile and the capture of every CUDA
graph (batch bucket x length bucket x masked/mask-free) — each in a fresh process, first with an empty compile cache,
then with the cache that run left under artifacts/compile-cache; then the first transcription of a 10-minute
file in that warm process (every window already captured).

    python bench/gpu_coldstart.py [--model random:wav2vec2-large] [--buckets-s 5 20 --batch-buckets 1 8] [--runs cold warm]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backends.fast_backend import BATCH_BUCKETS, BUCKETS_S  # noqa: E402


def child(args) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from torch._dynamo.utils import counters
    from core.audio import Audio
    from core.backends import make_backend
    from core.bench import tile_speech
    from core.export import parity_audio
    from core.models import load_model
    from core.transcribe import transcribe
    t_import = time.perf_counter()
    loaded = load_model(args.model)
    backend = make_backend(args.backend, loaded, buckets_s=tuple(args.buckets_s),
                           batch_buckets=tuple(args.batch_buckets), compile=args.compile,
                           compile_scope=args.compile_scope, dynamic_batch=args.dynamic_batch,
                           dynamic_time=args.dynamic_time).load()
    t_load = time.perf_counter()
    graphs = backend.capture_all()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t_capture = time.perf_counter()
    # what the graphs hold (their shared pool and the allocator's cache) once every bucket is captured
    memory = ({"gpu_reserved_gib": round(torch.cuda.memory_reserved() / 2**30, 2),
               "gpu_peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
              if torch.cuda.is_available() else {})
    # where the compile time went (Dynamo's own per-phase totals; the rest of compile+capture is warm-up runs,
    # runtime autotuning outside these phases, and the captures)
    names, totals = torch._dynamo.utils.compile_times(repr="csv", aggregate=True)
    phases = {k: round(float(v), 1) for k, v in zip(names, totals) if float(v) >= 0.1}
    from core.bench import measure, speech_input
    timing = {}
    for w, batch in (("W1", 1), ("W2", 8)):   # the compiled graphs' speed (compute scope, CUDA events)
        prepared = backend.prepare(*speech_input(loaded, 5.0, batch))
        m = measure(lambda: backend.run(prepared), "cuda" if torch.cuda.is_available() else "cpu", 20, 100)
        timing[f"{w}_p50_ms"] = round(float(np.percentile(m["times"], 50)), 3)
    try:   # real speech when soundfile is there to read the shipped clips; seeded noise otherwise (random weights)
        speech = np.concatenate([a.samples for a in parity_audio(loaded, n=4)])
    except ImportError:
        speech = (0.1 * np.random.default_rng(0).standard_normal(30 * loaded.sample_rate)).astype(np.float32)
    ten_min = Audio(tile_speech(speech, 600 * loaded.sample_rate, np.random.default_rng(0)), loaded.sample_rate,
                    "10-minute speech")
    t = time.perf_counter()
    text = transcribe(ten_min, backend, loaded).text
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    transcribe(ten_min, backend, loaded)
    t_second = time.perf_counter() - t
    return {"import_s": round(t_import - t0, 1), "load_s": round(t_load - t_import, 1),
            "compile_capture_s": round(t_capture - t_load, 1), "cold_start_s": round(t_capture - t_import, 1),
            "graphs": graphs, "compiled_graphs": counters["stats"]["unique_graphs"],
            "artifacts": {k: v for k, v in backend.stats.items() if k.endswith(("_built", "_loaded"))},
            "first_10min_s": round(t_first, 2), "second_10min_s": round(t_second, 2),
            "eager_calls": backend.stats["eager"], "chars": len(text), **memory, **timing,
            **{k: round(backend.stats[k], 1) for k in ("warmup_s", "capture_s") if k in backend.stats},
            "compile_phases_s": phases}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--backend", default="fast:fp16:cuda")
    p.add_argument("--buckets-s", type=float, nargs="+", default=list(BUCKETS_S), help="length buckets (s)")
    p.add_argument("--batch-buckets", type=int, nargs="+", default=list(BATCH_BUCKETS))
    p.add_argument("--runs", nargs="+", default=["cold", "warm"])
    p.add_argument("--compile", default="default", help="the fast backend's compile mode: default (torch.compile), "
                   "precompile or aoti (an artifact per shape, weights left out: core/backends/shape_cache.py)")
    p.add_argument("--compile-scope", choices=("whole", "layer", "encoder"), default="whole",
                   help="layer: the front, one shared encoder layer and the head compiled apart; encoder: the same "
                        "with the front by its parts (core.backends.fast_module.compile_regions; the backend's "
                        "default, with --dynamic-batch --dynamic-time); whole: one compile per shape")
    p.add_argument("--dynamic-batch", action="store_true", help="one compile for every batch from 2 up, per length "
                   "bucket and mask variant (the fast backend's dynamic_batch)")
    p.add_argument("--dynamic-time", action="store_true", help="the length dimension compiled as a symbol too (the "
                   "fast backend's dynamic_time): with --dynamic-batch, four compiles for every bucket")
    p.add_argument("--from-disk", action="store_true", help="save --model (random weights) to a folder first and load "
                   "it from there in each run, as a user's checkpoint loads (random init costs seconds no user pays)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    from core.backends.fast_backend import use_compile_cache
    cache = use_compile_cache()
    model = args.model
    if args.from_disk:
        from core.models import load_model
        from core.paths import artifacts_dir
        loaded = load_model(args.model)
        model = str(artifacts_dir() / "coldstart-model" / loaded.key)
        loaded.model.save_pretrained(model)
        loaded.processor.save_pretrained(model)
    rows = []
    for run in args.runs:
        if run == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        cmd = [sys.executable, __file__, "--child", "--model", model, "--backend", args.backend, "--compile",
               args.compile, "--compile-scope", args.compile_scope, *(["--dynamic-batch"] * args.dynamic_batch),
               *(["--dynamic-time"] * args.dynamic_time),
               "--buckets-s",
               *map(str, args.buckets_s), "--batch-buckets", *map(str, args.batch_buckets)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{run}: failed (exit {out.returncode})\n{out.stderr[-3000:]}")
            return 1
        rows.append({"run": run, "buckets_s": args.buckets_s, "batch_buckets": args.batch_buckets,
                     **json.loads(line[7:])})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.backend} (compile {args.compile}, scope {args.compile_scope}, dynamic batch {args.dynamic_batch}, dynamic time {args.dynamic_time}), {args.model}, buckets {args.buckets_s} s x batches "
          f"{args.batch_buckets}, cache {cache}")
    for r in rows:
        print(f"{r['run']:5} load {r['load_s']:5.1f} s, compile+capture of {r['graphs']} graphs "
              f"({r['compiled_graphs']} compiled) {r['compile_capture_s']:6.1f} s -> cold start {r['cold_start_s']:6.1f} s;"
              f" 10-min file first {r['first_10min_s']:.2f} s, again {r['second_10min_s']:.2f} s; W1 {r['W1_p50_ms']} ms,"
              f" W2 {r['W2_p50_ms']} ms" + (f"; GPU memory reserved {r['gpu_reserved_gib']} GiB, peak allocated "
                                            f"{r['gpu_peak_allocated_gib']} GiB" if "gpu_reserved_gib" in r else "")
              + (f"; of compile+capture: warm-up calls {r['warmup_s']} s (Dynamo's compiles {r['compile_phases_s'].get('_compile.compile_inner', 0)} s), "
                 f"captures {r['capture_s']} s" if "warmup_s" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
