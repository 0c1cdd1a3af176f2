"""Issue 16, item 3: what a compile="precompile" artifact (core/backends/shape_cache.py) costs to build and to load,
per shape, each call checked against the eager module. Run it twice: the first run builds, the second loads.

    python bench/precompile_load.py --shapes 1x1 2x1 [--device cuda --precision fp16]"""
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
    p.add_argument("--shapes", nargs="+", default=["1x1", "2x1"], help="batch x seconds")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    from core.backends.fast_backend import use_compile_cache
    root = use_compile_cache() / "precompiled-bench"
    import torch
    from core.backends.fast_module import build_module
    from core.backends.shape_cache import precompiled_runner, shape_key
    from core.models import load_model
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    loaded = load_model(args.model)
    module = build_module(loaded.model).to(args.device, dtype).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    print(json.dumps({"setup_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__}), flush=True)
    for shape in args.shapes:
        batch, seconds = shape.split("x")
        n = int(float(seconds) * loaded.sample_rate)
        x = (0.1 * torch.randn(int(batch), n, generator=torch.Generator().manual_seed(0))).to(args.device, dtype)
        lengths = torch.full((int(batch),), n, dtype=torch.int64, device=args.device)
        stats: dict = {}
        key = shape_key({"model": args.model}, {"bench": True}, dtype, args.device, (x, lengths), {"full": True})
        with torch.no_grad():
            t = time.perf_counter()
            fn = precompiled_runner(module, (x, lengths), {"full": True}, key, root, stats)
            ready = time.perf_counter() - t
            t = time.perf_counter()
            out = fn(x, lengths, full=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            first = time.perf_counter() - t
            diff = float((out.float() - module(x, lengths, full=True).float()).abs().max())
        print(json.dumps({"shape": shape, "built" if stats.get("precompiled_built") else "loaded": round(ready, 2),
                          "first_call_s": round(first, 2), "max_abs_diff": diff}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
