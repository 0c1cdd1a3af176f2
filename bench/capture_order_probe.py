"""Does the order in which a dynamic-batch backend first meets its batch sizes change the speed of its graphs?
Inductor picks some kernel configurations from the sizes of the first call of a dynamic compile, and capture_all
goes largest first since the ninth session (tenth-session Triton runs were ~12 % slower per batch than the ninth's,
which captured in growing order). One process per order, each with an empty compile cache, so neither reuses the
other's kernels; the same graphs (batch 1..--max-batch at 5 s) are then timed with CUDA events.

    python bench/capture_order_probe.py [--max-batch 16] [--model random:wav2vec2-large]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def child(order: str, max_batch: int, model: str) -> dict:
    import numpy as np
    import torch
    from core.backends import make_backend
    from core.bench import measure, speech_input
    from core.models import load_model
    loaded = load_model(model)
    sizes = list(range(1, max_batch + 1))
    backend = make_backend("fast:fp16:cuda", loaded, buckets_s=(5.0,), batch_buckets=tuple(sizes),
                           dynamic_batch=True).load()
    with torch.inference_mode():
        for b in (sizes if order == "ascending" else sizes[::-1]):
            backend._capture(b, backend.buckets[0], False)   # the masked graphs, which the Triton server replays
    out = {"order": order}
    for b in (1, 4, 8, 16):
        if b <= max_batch:
            prepared = backend.prepare(*speech_input(loaded, 5.0, b))
            m = measure(lambda: backend.run(prepared), "cuda", 20, 100)
            out[f"b{b}_p50_ms"] = round(float(np.percentile(m["times"], 50)), 3)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--child", choices=("ascending", "descending"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.max_batch, args.model)))
        return 0
    for order in ("ascending", "descending"):
        with tempfile.TemporaryDirectory() as tmp:   # an empty compile cache for each order
            env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
            env["WORKBENCH_ARTIFACTS"] = tmp
            r = subprocess.run([sys.executable, __file__, "--child", order, "--max-batch", str(args.max_batch),
                                "--model", args.model], env=env, capture_output=True, text=True)
            print(r.stdout.strip().splitlines()[-1] if r.returncode == 0 else r.stderr[-2000:], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
