"""Issue 16, item 3 (cold start): where a warm-cache compile of one fast-backend shape spends its time, against
loading the same shape as an AOTInductor package. Run it twice (the first run fills the caches under
$WORKBENCH_ARTIFACTS/compile-cache); every run is one process, the shapes compiled one after another.

    python bench/compile_breakdown.py --device cpu --model random:wav2vec2-large --shapes 1x5 8x5
    python3 bench/compile_breakdown.py --device cuda --precision fp16 --shapes 1x5 8x5 1x20 8x20   # on a GPU

Per shape: torch.compile's first call (Dynamo trace, AOTAutograd, Inductor's FX-graph cache) with the compile-time
breakdown torch reports, then AOTInductor: torch.export + aoti_compile_and_package (once, cached as a .pt2 file) and
aoti_load_package + first call, each output checked against the eager module; --aoti-weights out (the default) uses
the backend's own packages, which leave the weights out and take the module's at load. bench/NOTES.md has the figures."""
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
    p.add_argument("--shapes", nargs="+", default=["1x5"], help="batch x seconds, e.g. 1x5 8x20")
    p.add_argument("--skip", nargs="*", default=[], choices=("compile", "aoti"))
    p.add_argument("--aoti-weights", choices=("in", "out"), default="out", help="out: the packages the backend uses "
                   "(core/backends/shape_cache.py, weights handed over at load); in: the weights inside each package")
    args = p.parse_args(argv)

    from core.backends.fast_backend import use_compile_cache
    from core.backends.fast_module import build_module
    cache = use_compile_cache()   # before torch._inductor reads its cache directory
    import torch
    import torch._dynamo
    from torch._dynamo.utils import compile_times, counters
    from core.models import load_model

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    loaded = load_model(args.model)
    module = build_module(loaded.model).to(args.device, dtype).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    compiled = torch.compile(module, dynamic=False, fullgraph=True)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    rows = []

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for shape in args.shapes:
        batch, seconds = shape.split("x")
        n = int(float(seconds) * loaded.sample_rate)
        x = (0.1 * torch.randn(int(batch), n, device=args.device)).to(dtype)
        lengths = torch.full((int(batch),), n, dtype=torch.int64, device=args.device)
        with torch.no_grad():
            ref = module(x, lengths, full=True).float()
            row = {"shape": shape}
            if "compile" not in args.skip:
                hits = dict(counters["inductor"])
                t = time.perf_counter()
                out = compiled(x, lengths, full=True)
                sync()
                row["compile_first_call_s"] = round(time.perf_counter() - t, 2)
                row["compile_max_abs_diff"] = float((out.float() - ref).abs().max())
                row["fxgraph_cache"] = {k: v - hits.get(k, 0) for k, v in counters["inductor"].items()
                                        if k.startswith("fxgraph_cache") and v - hits.get(k, 0)}
            if "aoti" not in args.skip and args.aoti_weights == "out":
                from core.backends.shape_cache import aoti_runner, shape_key
                stats: dict = {}
                key = shape_key({"model": args.model}, {"bench": True}, dtype, args.device, (x, lengths),
                                  {"full": True})
                t = time.perf_counter()
                runner = aoti_runner(module, (x, lengths), {"full": True}, key, cache / "aoti", stats)
                row["aoti_" + ("build_and_load_s" if stats.get("aoti_built") else "load_s")] = round(
                    time.perf_counter() - t, 2)
                t = time.perf_counter()
                out = runner(x, lengths, full=True)
                sync()
                row["aoti_first_call_s"] = round(time.perf_counter() - t, 2)
                row["aoti_max_abs_diff"] = float((out.float() - ref).abs().max())
            elif "aoti" not in args.skip:
                name = f"{loaded.label.split()[0]}-{args.device.split(':')[0]}-{args.precision}-{shape}.pt2"
                package = cache / "aoti" / name   # the weights inside: what the 2026-11-30 notes compare against
                if not package.exists():
                    package.parent.mkdir(parents=True, exist_ok=True)
                    t = time.perf_counter()
                    exported = torch.export.export(module, (x, lengths), {"full": True})
                    torch._inductor.aoti_compile_and_package(exported, package_path=str(package))
                    row["aoti_build_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                runner = torch._inductor.aoti_load_package(str(package))
                row["aoti_load_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                out = runner(x, lengths, full=True)
                sync()
                row["aoti_first_call_s"] = round(time.perf_counter() - t, 2)
                row["aoti_max_abs_diff"] = float((out.float() - ref).abs().max())
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("torch.compile time by phase (s, this process):")
    print(compile_times(repr="str", aggregate=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
