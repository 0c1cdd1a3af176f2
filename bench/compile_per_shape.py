"""Issue 16, item 3: what one new shape costs the fast module, compiled four ways, each output checked against the
eager module. One process per run; run each form twice (the first fills the caches under $WORKBENCH_ARTIFACTS):
  whole       torch.compile of the whole module (the backend's default): the first call traces and compiles
  layer       core.backends.fast_module.compile_regions: the front, one encoder layer shared by all, the head
  encoder     the same with the front left eager
  precompile  core.backends.shape_cache.precompiled_runner: the saved artifact built, or loaded (`ready_s`)

    python bench/compile_per_shape.py --form whole|layer|encoder|precompile --shapes 1x1 2x1 4x1 \
        [--device cuda --precision fp16] [--dynamic]
--dynamic (whole, layer, encoder): batches from 2 up and every length marked dynamic, as the backend's dynamic_batch and
dynamic_time do, so shapes after the first of a kind reuse its graphs; the last line then gives Dynamo's tracing
seconds (what a warm-cache compile mostly is on the H200, bench/NOTES.md, tenth session)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--form", choices=("whole", "layer", "encoder", "precompile"), default="whole")
    p.add_argument("--shapes", nargs="+", default=["1x1", "2x1"], help="batch x seconds")
    p.add_argument("--dynamic", action="store_true", help="mark the batch (from 2 up) and the length dynamic")
    args = p.parse_args(argv)

    from core.backends.fast_backend import use_compile_cache
    from core.backends.fast_module import build_module, compile_regions
    from core.backends.shape_cache import precompiled_runner, shape_key
    cache = use_compile_cache()
    t0 = time.perf_counter()
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters
    from core.models import load_model
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    loaded = load_model(args.model)
    module = build_module(loaded.model).to(args.device, dtype).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    eager = build_module(loaded.model).to(args.device, dtype).eval()   # the reference
    call = (compile_regions(module, dynamic_batch=args.dynamic, dynamic_time=args.dynamic, front=args.form == "layer")
            if args.form in ("layer", "encoder") else
            torch.compile(module, dynamic=False, fullgraph=True) if args.form == "whole" else None)
    print(json.dumps({"form": args.form, "setup_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__}),
          flush=True)
    rows = []
    for shape in args.shapes:
        batch, seconds = shape.split("x")
        n = int(float(seconds) * loaded.sample_rate)
        x = (0.1 * torch.randn(int(batch), n, device=args.device)).to(dtype)
        lengths = torch.full((int(batch),), n, dtype=torch.int64, device=args.device)
        row = {"shape": shape}
        if args.dynamic:
            if x.shape[0] > 1:
                torch._dynamo.mark_dynamic(x, 0)
                torch._dynamo.mark_dynamic(lengths, 0)
            torch._dynamo.mark_dynamic(x, 1)
        with torch.no_grad():
            graphs = counters["stats"]["unique_graphs"]
            t = time.perf_counter()
            if args.form == "precompile":
                stats: dict = {}
                key = shape_key({"model": args.model}, {"bench": True}, dtype, args.device, (x, lengths),
                                {"full": True})
                fn = precompiled_runner(module, (x, lengths), {"full": True}, key, cache / "precompiled-bench", stats)
                row["built_s" if stats.get("precompiled_built") else "loaded_s"] = round(time.perf_counter() - t, 2)
                call = fn
            out = call(x, lengths, full=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            row["first_call_s"] = round(time.perf_counter() - t, 2)   # precompile: ready + call
            row["new_graphs"] = counters["stats"]["unique_graphs"] - graphs
            row["max_abs_diff"] = float((out.float() - eager(x, lengths, full=True).float()).abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    names, totals = torch._dynamo.utils.compile_times(repr="csv", aggregate=True)
    phases = dict(zip(names, totals))
    print(json.dumps({"form": args.form, "device": args.device, "precision": args.precision, "dynamic": args.dynamic,
                      "dynamo_compile_s": round(float(phases.get("_compile.compile_inner", 0)), 2),
                      "bytecode_tracing_s": round(float(phases.get("bytecode_tracing", 0)), 2),
                      "total_first_calls_s": round(sum(r["first_call_s"] for r in rows), 2),
                      "process_s": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
