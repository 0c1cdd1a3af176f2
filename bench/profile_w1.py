"""Where W1's GPU time goes: torch.profiler operator and kernel tables, and kernel launches per forward.

    python bench/profile_w1.py [--model random:wav2vec2-large] [--backends torch:fp16:cuda,fast:fp16:cuda]

bench/gpu_w1.py --profile calls profile_call() on the backends it times."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def profile_call(label: str, fn, iters: int = 5, top: int = 18) -> dict:
    """Profile `fn()` (already warmed up) `iters` times; print the top CUDA kernels and operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    events = prof.events()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.device_time for e in kernels) / iters if kernels else 0.0
    print(f"\n=== profile: {label}: {len(kernels) / iters:.0f} kernels per forward, "
          f"{gpu_us / 1e3:.3f} ms summed kernel time per forward ===")
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=70)
    print(table)
    # group kernel time into the model's stages by the kernel's name
    groups: dict[str, float] = {}
    for e in kernels:
        n = e.name.lower()
        key = ("gemm" if any(s in n for s in ("gemm", "sm90", "cutlass", "xmma", "ampere_", "cublas")) else
               "conv" if "conv" in n or "implicit" in n or "winograd" in n else
               "attention" if any(s in n for s in ("fmha", "attention", "flash", "efficient")) else
               "norm" if "norm" in n else
               "copy/cast" if any(s in n for s in ("copy", "cast", "memcpy", "memset", "fill")) else
               "triton" if n.startswith("triton") else "elementwise/other")
        groups[key] = groups.get(key, 0.0) + e.device_time / iters
    print("kernel time by kind (us per forward): " +
          ", ".join(f"{k} {v:.0f}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])))
    return {"label": label, "kernels_per_forward": len(kernels) / iters, "kernel_ms_per_forward": gpu_us / 1e3,
            "by_kind_us": groups}


def main(argv=None):
    import torch
    from core.backends import make_backend
    from core.bench import speech_input
    from core.models import load_model
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--backends", default="torch:fp32:cuda,torch:fp16:cuda,fast:fp16:cuda")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    loaded = load_model(args.model)
    values, mask = speech_input(loaded, args.seconds, args.batch)
    for spec in args.backends.split(","):
        backend = make_backend(spec, loaded).load()
        if spec.startswith("fast"):
            x, n = backend.tensors(values, mask)
            fn = lambda: backend.forward(x, n)  # noqa: E731
        else:
            x = torch.from_numpy(values).to("cuda", backend.dtype)
            m = torch.from_numpy(mask).to("cuda")
            fn = lambda: backend.forward(x, m)  # noqa: E731
        for _ in range(5):
            fn()
        profile_call(f"{spec} B{args.batch} {args.seconds:g}s", fn)
        backend.close()


if __name__ == "__main__":
    main()
