"""What the 96 linear-layer GEMMs of W1 (wav2vec2-large, 249 frames, batch 1) cost in different forms, on
one GPU: the GEMM floor that bounds the fast backend's batch-1 latency (bench/NOTES.md, issue 7).

Each form runs the 24 layers' 4 GEMMs (QKV 1024->3072, out 1024->1024, FF1 1024->4096, FF2 4096->1024,
with bias) back to back inside one CUDA graph; the graph is replayed with CUDA events around it (10 warm-up,
50 timed replays, p50). Forms: cuBLAS through F.linear in FP16 and BF16; rows padded to 256; split-K
(K cut in 2 or 4, one batched GEMM, partial sums added in FP32); FP8 weights and activations with
torch._scaled_mm (row-wise scales, BF16 out; quantisation of the activations not included).

    python3 bench/gemm_m249.py [--rows 249]
"""
from __future__ import annotations

import argparse
import statistics

SHAPES = [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]   # (K, N) of each layer's four GEMMs
LAYERS = 24


def graph_ms(fn, warmup: int = 10, repeats: int = 50) -> float:
    import torch
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    for _ in range(warmup):
        g.replay()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main(argv=None):
    import torch
    import torch.nn.functional as F
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=249)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU: this script times GPU matrix products (see bench/NOTES.md).")
    torch.manual_seed(0)
    dev = "cuda"
    m = args.rows
    flops = 2 * m * sum(k * n for k, n in SHAPES) * LAYERS
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  M={m}  {len(SHAPES) * LAYERS} GEMMs, "
          f"{flops / 1e9:.1f} GFLOP per pass")

    def weights(dtype):
        return [[(torch.randn(n, k, device=dev, dtype=dtype) * 0.02, torch.randn(n, device=dev, dtype=dtype))
                 for k, n in SHAPES] for _ in range(LAYERS)]

    def linear_chain(ws, rows, dtype):
        xs = {k: torch.randn(rows, k, device=dev, dtype=dtype) for k, _ in SHAPES}
        return lambda: [F.linear(xs[w.shape[1]], w, b) for layer in ws for w, b in layer]

    def split_k_chain(ws, parts, dtype):
        xs = {k: torch.randn(m, k, device=dev, dtype=dtype) for k, _ in SHAPES}
        # x [M, K] -> [parts, M, K/parts]; W^T [K, N] -> [parts, K/parts, N]
        pre = [[(xs[w.shape[1]].view(m, parts, -1).transpose(0, 1), w.t().reshape(parts, -1, w.shape[0]), b)
                for w, b in layer] for layer in ws]
        return lambda: [torch.bmm(a, wt).float().sum(0).add_(b).to(dtype) for layer in pre for a, wt, b in layer]

    def fp8_chain():
        out = []
        for _ in range(LAYERS):
            for k, n in SHAPES:
                w = (torch.randn(n, k, device=dev) * 0.02).to(torch.float8_e4m3fn)
                x = torch.randn(m, k, device=dev).to(torch.float8_e4m3fn)
                out.append((x, w, torch.rand(m, 1, device=dev), torch.rand(1, n, device=dev),
                            torch.randn(n, device=dev, dtype=torch.bfloat16)))
        return lambda: [torch._scaled_mm(x, w.t(), scale_a=sa, scale_b=sb, bias=b, out_dtype=torch.bfloat16)
                        for x, w, sa, sb, b in out]

    forms = {}
    w16 = weights(torch.float16)
    forms["cuBLAS fp16 (F.linear)"] = linear_chain(w16, m, torch.float16)
    forms["cuBLAS bf16 (F.linear)"] = linear_chain(weights(torch.bfloat16), m, torch.bfloat16)
    forms["cuBLAS fp16, rows padded to 256"] = linear_chain(w16, -(-m // 256) * 256, torch.float16)
    forms["split-K 2 (bmm + fp32 sum)"] = split_k_chain(w16, 2, torch.float16)
    forms["split-K 4 (bmm + fp32 sum)"] = split_k_chain(w16, 4, torch.float16)
    forms["fp8 _scaled_mm (row-wise, bf16 out)"] = fp8_chain()
    print(f"{'form':40} {'pass ms':>8} {'us/GEMM':>8} {'TFLOP/s':>8}")
    for name, fn in forms.items():
        try:
            ms = graph_ms(fn)
        except Exception as err:  # noqa: BLE001 - a form this GPU/torch lacks is reported, the rest still run
            print(f"{name:40} failed: {str(err).splitlines()[0][:80]}")
            continue
        print(f"{name:40} {ms:8.3f} {1e3 * ms / (len(SHAPES) * LAYERS):8.2f} {flops / ms / 1e9:8.0f}")


if __name__ == "__main__":
    main()
