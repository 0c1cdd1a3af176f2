"""Which SDPA kernel is fastest for the encoder's attention at W1 and W2, and where do W1's 24 memsets come from?

The fast module calls F.scaled_dot_product_attention on q, k, v seen through one fused QKV output
([b, t, 3, heads, d] permuted, so not contiguous), and PyTorch picks cuDNN's flash kernel on the H200: 5.9 us a layer
at 249 tokens in run 13's W1 profile, beside 24 "Memset (Unknown)" of 0.83 us each whose source was not named
(bench/NOTES.md, seventeenth session). This script, per SDPA backend PyTorch offers (cuDNN, flash, memory-efficient):

  * the output against the math backend in FP32 on the same q, k, v (max abs error);
  * the kernels and memsets one call launches (torch.profiler, eager);
  * the time of 24 calls in one CUDA graph (as the 24 layers run), CUDA events around replays, p50 per call.

    python3 bench/sdpa_backends.py [--tokens 249] [--batches 1,8] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gemm_m249 import graph_ms   # beside this script, on sys.path when it runs as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.envinfo import environment  # noqa: E402
from core.paths import write_json_atomic  # noqa: E402

HEADS, HEAD_DIM, LAYERS = 16, 64, 24


def kernels_of(fn) -> dict[str, int]:
    """Names and counts of the GPU activities (kernels, memsets, copies) one call of fn launches."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    counts: dict[str, int] = {}
    for e in prof.events():
        if e.device_type.name == "CUDA":
            counts[e.name[:90]] = counts.get(e.name[:90], 0) + 1
    return counts


def main(argv=None):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=249)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU: this script times attention kernels (see bench/NOTES.md).")
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  cuDNN {torch.backends.cudnn.version()}  "
          f"tokens {args.tokens}", flush=True)
    report = {"tokens": args.tokens, "env": environment(), "cases": []}
    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    for b in (int(s) for s in args.batches.split(",")):
        t, h = args.tokens, HEADS * HEAD_DIM
        # one fused QKV output per layer, viewed as the fast module views it
        qkvs = [torch.randn(b, t, 3 * h, device="cuda", dtype=torch.float16) for _ in range(LAYERS)]
        views = [x.view(b, t, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4) for x in qkvs]
        q, k, v = views[0]
        with sdpa_kernel([SDPBackend.MATH]):
            want = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        chosen = kernels_of(lambda: F.scaled_dot_product_attention(q, k, v))
        print(f"\nbatch {b}: PyTorch's own choice launches {chosen}")
        for name, backend in backends.items():
            def one(q=q, k=k, v=v, backend=backend):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v)

            def layers(backend=backend):
                with sdpa_kernel([backend]):
                    for qq, kk, vv in views:
                        F.scaled_dot_product_attention(qq, kk, vv)
            try:
                err = (one().float() - want).abs().max().item()
                launched = kernels_of(one)
                us = graph_ms(layers, repeats=100) * 1e3 / LAYERS
            except RuntimeError as e:
                print(f"  {name:9s} not available: {str(e).splitlines()[0][:160]}")
                report["cases"].append({"batch": b, "backend": name, "error": str(e)[:300]})
                continue
            print(f"  {name:9s} {us:6.2f} us per call (p50 of 100 replays of 24 calls)  max abs error {err:.2e}  "
                  f"launches {launched}", flush=True)
            report["cases"].append({"batch": b, "backend": name, "us_per_call": us, "max_abs_error": err,
                                    "launches": launched})
        report["cases"].append({"batch": b, "backend": "default", "launches": chosen})
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
