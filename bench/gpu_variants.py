"""ONNX Runtime precision variants on a GPU: build FP16 / mixed / INT8 from the FP32 export of
random:wav2vec2-large (indicwav2vec-hindi's shape), time each on the CUDA EP at 5 s x batch 1 and 8,
measure each one's parity against ONNX Runtime FP32 on the CPU, print one table with the environment,
save to the results DB and, when $OUT is set, write $OUT/gpu_variants.json.

    python bench/gpu_variants.py                                   # the H100 run
    python bench/gpu_variants.py --model random:wav2vec2-tiny --device cpu --repeats 3 --warmup 1   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable as `python bench/gpu_variants.py`

from core.backends import BackendSpec  # noqa: E402
from core.backends.ort_backend import OrtBackend  # noqa: E402
from core.bench import bench_backend  # noqa: E402
from core.envinfo import environment  # noqa: E402
from core.errors import WorkbenchError  # noqa: E402
from core.export import compare, export_onnx, parity_audio  # noqa: E402
from core.models import load_model  # noqa: E402
from core.results import save  # noqa: E402
from core.variants import build_variant, summary_row  # noqa: E402

PRECISIONS = ("fp32", "fp16", "mixed", "int8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="ONNX Runtime execution provider")
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--manifest", default=None, help="INT8 calibration and WER set (default: data/demo_testset)")
    p.add_argument("--calib-size", type=int, default=None)
    p.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    args = p.parse_args(argv)

    log = lambda m: print(f"  {m}", file=sys.stderr, flush=True)  # noqa: E731
    loaded = load_model(args.model)
    print(f"model: {loaded.label}", file=sys.stderr)
    fp32 = export_onnx(loaded, log=log)
    paths, builds, rows = {"fp32": fp32.path}, {}, []
    for precision in args.precision:
        if precision == "fp32":
            continue
        try:
            art = build_variant(loaded, precision, manifest=args.manifest, calib_size=args.calib_size, log=log)
            paths[precision], builds[precision] = art.path, summary_row(art.meta)
        except Exception as err:  # one variant failing must not hide the others' numbers
            builds[precision] = {"variant": precision, "error": f"{type(err).__name__}: {err}"}
            print(f"{precision}: build failed: {err}", file=sys.stderr)

    clips = parity_audio(loaded)
    with OrtBackend(BackendSpec("ort", "fp32", "cpu"), fp32.path) as reference:
        for precision in args.precision:
            spec = BackendSpec("ort", precision, args.device)
            if precision not in paths:
                rows.append({"backend": str(spec), "precision": precision, "errors": 1,
                             "error": builds[precision]["error"]})
                continue
            try:
                with OrtBackend(spec, paths[precision]) as backend:
                    parity = compare(loaded, reference, backend, clips)
                    for row in bench_backend(backend, loaded, args.seconds, args.batch, args.warmup, args.repeats,
                                             progress=lambda r: log(f"{r['backend']} {r['audio_s']} s x{r['batch']}"
                                                                    f": p50 {r['p50_ms']:.2f} ms")):
                        row.update(max_abs_logit_diff=parity["max_abs_logit_diff"],
                                   transcripts_agree=f"{parity['transcripts_agree']}/{parity['transcripts_total']}",
                                   parity_reference="ort:fp32:cpu", variant_build=builds.get(precision))
                        rows.append(row)
            except Exception as err:  # e.g. the CUDA EP has no kernel for a Q/DQ pattern: say so, carry on
                msg = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                print(f"{spec}: could not run: {msg}", file=sys.stderr)
                if not isinstance(err, WorkbenchError):
                    traceback.print_exc(file=sys.stderr)
                rows.append({"kind": "latency", "model": loaded.source, "backend": str(spec), "runtime": "ort",
                             "precision": precision, "device": args.device, "errors": 1, "error": msg,
                             "env": environment()})

    env = environment()
    print(f"# {loaded.label} | {env.get('gpu') or env.get('cpu')} (cc {env.get('gpu_cc')}) | driver "
          f"{env.get('driver')} | CUDA {env.get('cuda')} | torch {env.get('torch')} | onnxruntime "
          f"{env.get('onnxruntime') or env.get('onnxruntime-gpu')}")
    from core.cli import _table
    print(_table(rows, ["backend", "audio_s", "batch", "p50_ms", "p90_ms", "p99_ms", "rtf", "audio_s_per_s",
                        "max_abs_logit_diff", "transcripts_agree", "error"]))
    print("\nvariants (parity at build time, vs ONNX Runtime FP32 on the CPU):")
    print(_table(list(builds.values()), ["variant", "size_mb", "max_abs_dlogit", "agree", "checked_on", "wer",
                                         "wer_fp32", "kept_fp32", "error"]))
    measured = [r for r in rows if "p50_ms" in r]
    if measured:
        print(f"saved as run {save(measured, 'latency', note='bench/gpu_variants.py ' + ' '.join(argv or sys.argv[1:]))}",
              file=sys.stderr)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_variants.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": loaded.source, "env": env, "rows": rows, "variants": builds},
                                  indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
