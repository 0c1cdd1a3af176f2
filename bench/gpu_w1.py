"""W1/W2 on one GPU, in one process: PyTorch eager FP32 as the baseline and every backend available here.

W1: wav2vec2-large (indicwav2vec-hindi shape, random weights), 5 s of 16 kHz audio, batch 1 (latency).
W2: the same, batch 8 x 5 s (throughput, audio seconds per second).

For each backend: the `compute` scope of core.bench's protocol (device tensors in, device logits out, CUDA
events; ONNX Runtime through I/O binding; warm-up, then windows of --repeats calls until the last three p50s
agree within 5 %), p50/p90, its 95 % CI and speedup vs the baseline; parity against FP32 (max |delta logit| on the real frames, greedy transcript agreement) on
W1, W2 and clips of other lengths (inside a bucket, a padded batch, past the largest bucket), so a
backend that only handles the benchmarked shape shows up. Rows go to the results database and, when
$OUT is set, to $OUT/gpu_w1.json. --eval-demo also scores the fast backend against torch:fp32:cuda on the
demo model's labelled set (core.wer.evaluate).

    PYTHONUNBUFFERED=1 python bench/gpu_w1.py [--profile] [--eval-demo] [--variants a,b,...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio import Audio  # noqa: E402
from core.backends import availability, make_backend  # noqa: E402
from core.backends.base import Backend, BackendSpec  # noqa: E402
from core.bench import measure, speech_input, summarize  # noqa: E402
from core.envinfo import environment  # noqa: E402
from core.transcribe import decode, frame_lengths  # noqa: E402
from profile_w1 import profile_call  # noqa: E402

BASELINE = "torch:fp32:cuda"
STATIC = {"compile_scope": "whole", "dynamic_batch": False, "dynamic_time": False}   # the fast backend, per shape
# name -> (spec, options for the fast backend)
VARIANTS = {
    "torch:fp32:cuda": ("torch:fp32:cuda", {}),
    "torch:fp16:cuda": ("torch:fp16:cuda", {}),
    "torch:bf16:cuda": ("torch:bf16:cuda", {}),
    "ort:fp32:cuda": ("ort:fp32:cuda", {}),
    "ort:fp16:cuda": ("ort:fp16:cuda", {}),
    "fast:fp32:graphs": ("fast:fp32:cuda", {"compile": None}),
    "fast:fp16:eager": ("fast:fp16:cuda", {"compile": None, "graphs": False}),
    "fast:fp16:graphs": ("fast:fp16:cuda", {"compile": None}),
    # the backend's defaults: compiled by part (scope "encoder"), batch and length dynamic (eleventh session on)
    "fast:fp16:compile+graphs": ("fast:fp16:cuda", {"compile": "default"}),
    # one whole-module compile per bucket shape: what compile+graphs was through the tenth session
    "fast:fp16:static-compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC}),
    "fast:fp16:layer-compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC, "compile_scope": "layer"}),
    "fast:fp16:precompile+graphs": ("fast:fp16:cuda", {"compile": "precompile"}),   # torch.compile's aot_compile
    # one compiled graph for every batch from 2 up (per length bucket and mask variant); graphs still per batch
    "fast:fp16:dynbatch-compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC, "dynamic_batch": True}),
    # ... and every length too: four compiles for all buckets (batch 1 or 2+, masked or mask-free)
    "fast:fp16:dynamic-compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC, "dynamic_batch": True,
                                                           "dynamic_time": True}),
    # ... compiled by region: Dynamo traces one layer instead of 24 (a warm-cache compile is mostly tracing)
    "fast:fp16:layer-dynamic-compile+graphs": ("fast:fp16:cuda", {"compile": "default", "compile_scope": "layer",
                                                                 "dynamic_batch": True, "dynamic_time": True}),
    # ... and the convolutional front by its parts (the default since the eleventh session)
    "fast:fp16:encoder-dynamic-compile+graphs": ("fast:fp16:cuda", {"compile": "default", "compile_scope": "encoder",
                                                                   "dynamic_batch": True, "dynamic_time": True}),
    "fast:fp16:autotune+graphs": ("fast:fp16:cuda", {"compile": "max-autotune-no-cudagraphs"}),
    "fast:bf16:compile+graphs": ("fast:bf16:cuda", {"compile": "default"}),
    "fast:fp16:cudnn-conv+compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC, "conv": "cudnn"}),
    "fast:fp16:gemm-conv+compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC, "conv": "gemm"}),
    "fast:fp16:masked+compile+graphs": ("fast:fp16:cuda", {"compile": "default", "mask_free": False}),
    "fast:fp16:hybrid-conv+compile+graphs": ("fast:fp16:cuda", {"compile": "default", **STATIC, "conv": "hybrid"}),
    "fast:fp16:gelu-separate+compile+graphs": ("fast:fp16:cuda", {"compile": "default", "gelu_epilogue": False}),
    "fast:bf16:gelu-epilogue+compile+graphs": ("fast:bf16:cuda", {"compile": "default", "gelu_epilogue": True}),
    # issue 16's yardstick: what a user would write instead (Peer below)
    "peer:fp16:compile": ("peer:fp16:cuda", {}),
}


class Peer(Backend):
    """peer:fp16:compile — the unmodified Hugging Face Wav2Vec2ForCTC in FP16 with SDPA attention under
    torch.compile(mode="reduce-overhead") (CUDA graphs through cudagraph trees), nothing else."""
    runtime = "peer"

    def __init__(self, loaded):
        super().__init__(BackendSpec("peer", "fp16", "cuda"))
        self.loaded = loaded

    def load(self):
        import copy
        import torch
        model = copy.deepcopy(self.loaded.model).to("cuda", torch.float16).eval()
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("sdpa")
        self.fn = torch.compile(model, mode="reduce-overhead")
        return self

    def prepare(self, input_values, attention_mask=None):
        import torch
        x = torch.from_numpy(np.ascontiguousarray(input_values, np.float32)).to("cuda", torch.float16)
        m = None
        if attention_mask is not None and self.loaded.uses_attention_mask:
            m = torch.from_numpy(np.asarray(attention_mask, np.int64)).to("cuda")
        return x, m

    def run(self, prepared):
        import torch
        with torch.inference_mode():
            return self.fn(input_values=prepared[0], attention_mask=prepared[1]).logits

    def to_host(self, out):
        return out.float().cpu().numpy()

    def close(self):
        self.fn = None
ODD_LENGTHS_S = (1.3, 3.7, 26.0)   # a 2 s bucket, the 5 s bucket, past the largest bucket (eager)
ODD_BATCH_S = (4.6, 2.2)           # a padded batch of two


def host_logits(backend, values, mask) -> np.ndarray:
    out = backend.logits(values, mask)
    return np.asarray(out, dtype=np.float32)


def parity(loaded, ref_out: dict, backend, inputs: dict) -> dict:
    """Max |delta logit| over real frames and greedy-transcript agreement against the FP32 outputs."""
    diff, agree, total = 0.0, 0, 0
    for key, (values, mask) in inputs.items():
        out = host_logits(backend, values, mask)
        ref = ref_out[key]
        if out.shape != ref.shape or not np.isfinite(out).all():
            return {"max_abs_logit_diff": float("nan"), "agree": 0, "total": len(ref),
                    "error": f"{key}: shape {out.shape} vs {ref.shape} or non-finite logits"}
        for i, n in enumerate(frame_lengths(loaded.model.config, mask)):
            diff = max(diff, float(np.abs(out[i, :n] - ref[i, :n]).max()))
            a = decode(loaded.processor, ref[i:i + 1, :n])[0]
            b = decode(loaded.processor, out[i:i + 1, :n])[0]
            agree += a == b
            total += 1
    return {"max_abs_logit_diff": diff, "agree": agree, "total": total}


def parity_inputs(loaded, workloads) -> dict:
    from core.transcribe import features
    rng = np.random.default_rng(7)
    clip = lambda s: (0.1 * rng.standard_normal(int(s * loaded.sample_rate))).astype(np.float32)  # noqa: E731
    inputs = {f"W{k}": v for k, v in workloads.items()}
    for s in ODD_LENGTHS_S:
        inputs[f"{s:g}s"] = features(loaded.processor, [clip(s)], loaded.sample_rate)
    inputs["batch " + "+".join(f"{s:g}s" for s in ODD_BATCH_S)] = features(
        loaded.processor, [clip(s) for s in ODD_BATCH_S], loaded.sample_rate)
    return inputs


def eval_demo(log, names) -> list[dict]:
    """WER of torch:fp32:cuda and of each fast variant in `names` on the demo model's labelled set."""
    from core.models import load_model
    from core.paths import DEMO_TESTSET
    from core.wer import evaluate
    if not DEMO_TESTSET.exists():
        log(f"demo eval skipped: {DEMO_TESTSET} is missing")
        return []
    try:
        demo = load_model("demo")
    except Exception as err:  # noqa: BLE001 - report and go on: the speed table is the main result
        log(f"demo eval skipped: {err}")
        return []
    rows = []
    for name in [BASELINE] + [n for n in names if VARIANTS[n][0].startswith("fast:")]:
        spec, opts = VARIANTS[name]
        if not availability(spec)[0]:
            continue
        backend = make_backend(spec, demo, **opts).load()
        t = time.perf_counter()
        res = evaluate(backend, demo, DEMO_TESTSET)
        log(f"demo WER {name}: wer {res['wer'] * 100:.2f}%  cer {res['cer'] * 100:.2f}%  n {res['n']}  "
            f"({time.perf_counter() - t:.0f} s)")
        rows.append({"kind": "wer", "model": demo.source, "model_label": demo.label, "backend": name, "spec": spec,
                     "runtime": backend.spec.runtime, "precision": backend.precision, "device": "cuda",
                     "wer": res["wer"], "cer": res["cer"], "n": res["n"], "env": environment(),
                     "hypotheses": [u["hypothesis"] for u in res["utterances"]]})
        backend.close()
    if len(rows) > 1:
        base = rows[0]["hypotheses"]
        for r in rows[1:]:
            r["same_transcripts_as_fp32"] = sum(a == b for a, b in zip(base, r["hypotheses"]))
            log(f"{r['backend']}: {r['same_transcripts_as_fp32']}/{len(base)} transcripts identical to FP32; "
                f"WER delta {100 * (r['wer'] - rows[0]['wer']):+.2f} points")
    return rows


def main(argv=None):
    import torch
    from core.models import load_model
    from core import results
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--w2-batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50, help="calls per measurement window (3 to 8 windows)")
    p.add_argument("--variants", default=",".join(n for n in VARIANTS if "autotune" not in n),
                   help="comma-separated names (default: all but autotune, whose compile ran > 7 min on an H100): "
                        + ", ".join(VARIANTS))
    p.add_argument("--profile", action="store_true", help="torch.profiler table of each backend on W1")
    p.add_argument("--eval-demo", action="store_true", help="WER on the demo model's labelled set")
    p.add_argument("--budget-s", type=float, default=480, help="skip remaining variants after this many seconds")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: a smoke test of this script (every spec moved to the CPU), not a measurement")
    args = p.parse_args(argv)
    if args.repeats < 50:
        p.error("--repeats must be at least 50")
    t0 = time.perf_counter()
    log = lambda *a: print(f"[{time.perf_counter() - t0:6.1f}s]", *a, flush=True)  # noqa: E731
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU: this benchmark measures GPU backends (see bench/NOTES.md).")
    env = environment()
    log(f"GPU {env['gpu']} cc {env['gpu_cc']} driver {env['driver']} torch {env['torch']} cuda {env['cuda']}")
    loaded = load_model(args.model)
    workloads = {1: speech_input(loaded, args.seconds, 1), 2: speech_input(loaded, args.seconds, args.w2_batch)}
    batch = {1: 1, 2: args.w2_batch}
    inputs = parity_inputs(loaded, workloads)

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if BASELINE not in names:
        names.insert(0, BASELINE)
    names.sort(key=lambda n: n != BASELINE)
    rows, skipped, ref_out, profiles = [], [], {}, []
    for name in names:
        spec, opts = VARIANTS[name]
        spec = spec.replace(":cuda", f":{args.device}")
        ok, why = availability(spec.replace("peer:", "torch:"))
        if spec.startswith("peer:") and args.device != "cuda":
            ok, why = False, "the peer is measured on CUDA only"
        if not ok:
            skipped.append((name, why))
            log(f"skip {name}: {why}")
            continue
        if time.perf_counter() - t0 > args.budget_s and name != BASELINE:
            skipped.append((name, f"time budget of {args.budget_s:.0f} s spent"))
            log(f"skip {name}: time budget spent")
            continue
        t = time.perf_counter()
        backend = (Peer(loaded) if spec.startswith("peer:") else make_backend(spec, loaded, **opts)).load()
        for w, (values, mask) in workloads.items():
            prepared = backend.prepare(values, mask)
            fn = lambda: backend.run(prepared)  # noqa: E731
            m = measure(fn, args.device, args.warmup, args.repeats)
            row = {"kind": "latency", "scope": "compute", "model": loaded.source, "model_label": loaded.label,
                   "random_weights": loaded.random_weights, "backend": name, "spec": spec,
                   "runtime": backend.spec.runtime, "precision": backend.precision, "device": args.device,
                   "workload": f"W{w}", "audio_s": args.seconds, "batch": batch[w], "warmup": args.warmup,
                   "options": {k: v for k, v in opts.items()}, **summarize(m["times"], args.seconds, batch[w]),
                   "stable": m["stable"], "windows": len(m["window_p50s"]), "env": env}
            rows.append(row)
            if args.profile and w == 1 and args.device == "cuda":
                profiles.append(profile_call(f"{name} W1", fn))
        if name == BASELINE:  # the baseline against a second run of itself: the run-to-run noise floor
            ref_out = {k: host_logits(backend, v, m) for k, (v, m) in inputs.items()}
        par = parity(loaded, ref_out, backend, inputs)
        if backend.spec.runtime == "fast":
            par["graph_calls"], par["eager_calls"] = backend.stats["graph"], backend.stats["eager"]
            par["graphs_captured"] = len(backend.graphs)
        for row in rows:
            if row["backend"] == name:
                row.update(parity=par, setup_s=round(time.perf_counter() - t, 1))
        log(f"{name}: W1 p50 {rows[-2]['p50_ms']:.3f} ms, W2 p50 {rows[-1]['p50_ms']:.3f} ms, "
            f"max|dlogit| {par['max_abs_logit_diff']:.3g}, transcripts {par['agree']}/{par['total']} "
            f"(set-up + timing {time.perf_counter() - t:.0f} s)")
        backend.close()
        if args.device == "cuda":
            torch.cuda.empty_cache()

    base = {r["workload"]: r["p50_ms"] for r in rows if r["backend"] == BASELINE}
    for r in rows:
        r["speedup_vs_fp32_eager"] = base[r["workload"]] / r["p50_ms"]
    wer_rows = eval_demo(log, [n for n in names if n not in dict(skipped)]) if args.eval_demo else []

    print(f"\nW1 = {args.seconds:g} s x 1, W2 = {args.seconds:g} s x {args.w2_batch}; {loaded.label}; "
          f"{env['gpu']}; scope compute; windows of {args.repeats} after {args.warmup} warm-up; "
          f"{'CUDA events' if args.device == 'cuda' else 'host timer (CPU smoke test, not a GPU figure)'}")
    head = f"{'backend':28} {'W1 p50':>8} {'W1 p90':>8} {'x W1':>6} {'W2 p50':>8} {'W2 p90':>8} {'x W2':>6} " \
           f"{'W2 audio s/s':>12} {'max|dlogit|':>11} {'agree':>7} {'stable':>6}"
    print(head + "\n" + "-" * len(head))
    for name in dict.fromkeys(r["backend"] for r in rows):
        w1, w2 = (next(r for r in rows if r["backend"] == name and r["workload"] == w) for w in ("W1", "W2"))
        par = w1["parity"]
        print(f"{name:28} {w1['p50_ms']:8.3f} {w1['p90_ms']:8.3f} {w1['speedup_vs_fp32_eager']:6.1f} "
              f"{w2['p50_ms']:8.3f} {w2['p90_ms']:8.3f} {w2['speedup_vs_fp32_eager']:6.1f} "
              f"{w2['audio_s_per_s']:12,.0f} {par['max_abs_logit_diff']:11.3g} {par['agree']:>3}/{par['total']:<3} "
              f"{'yes' if w1['stable'] and w2['stable'] else 'NO':>6}")
    for name, why in skipped:
        print(f"{name:28} skipped: {why}")
    for r in wer_rows:
        print(f"WER {r['backend']:32} {100 * r['wer']:6.2f}%  (n={r['n']})")

    run_id = results.save(rows + [{k: v for k, v in r.items() if k != "hypotheses"} for r in wer_rows],
                          kind="gpu_w1", note=f"bench/gpu_w1.py {' '.join(sys.argv[1:])}")
    log(f"saved run {run_id} to {results.db_path()}")
    if os.environ.get("OUT"):
        from core.paths import write_json_atomic
        path = Path(os.environ["OUT"]) / "gpu_w1.json"
        write_json_atomic(path, {"argv": sys.argv, "rows": rows, "skipped": skipped, "wer": wer_rows,
                                 "profiles": profiles})
        log(f"wrote {path}")


if __name__ == "__main__":
    main()
