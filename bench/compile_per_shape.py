"""Issue 16, item 3: does compiling the fast module by region (core.backends.fast_module.compile_regions: the
front, one encoder layer shared by all 24, the head) instead of whole cut the per-shape cost of a compile? One
process per run: every shape compiled in turn, each output checked against the eager module. Run it twice per
scope (the first fills the caches under $WORKBENCH_ARTIFACTS).

    python bench/compile_scope.py --scope whole|layer --shapes 1x1 2x1 4x1 [--device cuda --precision fp16]"""
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
    p.add_argument("--scope", choices=("whole", "layer"), default="whole")
    p.add_argument("--shapes", nargs="+", default=["1x1", "2x1"], help="batch x seconds")
    args = p.parse_args(argv)

    from core.backends.fast_backend import use_compile_cache
    from core.backends.fast_module import build_module, compile_regions
    use_compile_cache()
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
    call = (compile_regions(module) if args.scope == "layer" else
            torch.compile(module, dynamic=False, fullgraph=True))
    rows = []
    for shape in args.shapes:
        batch, seconds = shape.split("x")
        n = int(float(seconds) * loaded.sample_rate)
        x = (0.1 * torch.randn(int(batch), n, device=args.device)).to(dtype)
        lengths = torch.full((int(batch),), n, dtype=torch.int64, device=args.device)
        with torch.no_grad():
            graphs = counters["stats"]["unique_graphs"]
            t = time.perf_counter()
            out = call(x, lengths, full=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            first = time.perf_counter() - t
            rows.append({"shape": shape, "first_call_s": round(first, 2),
                         "new_graphs": counters["stats"]["unique_graphs"] - graphs,
                         "max_abs_diff": float((out.float() - eager(x, lengths, full=True).float()).abs().max())})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"scope": args.scope, "device": args.device, "precision": args.precision,
                      "total_first_calls_s": round(sum(r["first_call_s"] for r in rows), 2),
                      "process_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
