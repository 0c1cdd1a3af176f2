"""What the 96 linear-layer GEMMs of W1 (wav2vec2-large, 249 frames, batch 1) cost in different forms, on
one GPU: the GEMM floor that bounds the fast backend's batch-1 latency (bench/NOTES.md, issue 7).

Each form runs the 24 layers' 4 GEMMs (QKV 1024->3072, out 1024->1024, FF1 1024->4096, FF2 4096->1024,
with bias) back to back inside one CUDA graph; the graph is replayed with CUDA events around it (10 warm-up,
50 timed replays, p50). Forms: cuBLAS through F.linear in FP16 and BF16; rows padded to 256; split-K
(K cut in 2 or 4, one batched GEMM, partial sums added in FP32); FP8 weights and activations with
torch._scaled_mm (row-wise scales, BF16 out; quantisation of the activations not included); the project's
Triton split-K kernel (bench/triton_splitk.py, an experiment that lost to cuBLAS, bench/NOTES.md) with the
best config per shape from the sweep (the default config at other row counts), the layers' epilogues fused
(out and FF2 + residual, FF1 + GELU), without and with programmatic dependent launch, against cuBLAS with
the same epilogues as separate kernels.

--sweep also times every candidate Triton config per GEMM shape (24 launches on 24 different weights in one
graph, so the weights stream from HBM as in the model) and prints the best per shape.

    python3 bench/gemm_m249.py [--rows 249] [--sweep]
"""
from __future__ import annotations

import argparse
import statistics

SHAPES = [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]   # (K, N) of each layer's four GEMMs
EPILOGUES = [(False, False), (False, True), (True, False), (False, True)]   # (GELU, residual) per GEMM
LAYERS = 24
# the fastest Triton config (block m, n, k, split, warps, stages) per shape in the H200 sweep, M=249
# (bench/results/2026-11-29-s2/gemm_sweep.log)
BEST_M249 = [(64, 128, 64, 1, 4, 5), (64, 64, 128, 1, 4, 5), (64, 64, 64, 1, 4, 5), (64, 64, 128, 2, 4, 5)]


def graph_times(fn, warmup: int = 10, repeats: int = 50) -> list[float]:
    """fn captured in one CUDA graph (after three runs on a side stream), then replayed: the times (ms) of
    `repeats` replays after `warmup`, each between CUDA events."""
    import torch
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
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
    return times


def graph_ms(fn, warmup: int = 10, repeats: int = 50) -> float:
    return statistics.median(graph_times(fn, warmup, repeats))


def main(argv=None):
    import torch
    import torch.nn.functional as F
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=249)
    p.add_argument("--sweep", action="store_true", help="time every candidate Triton config per shape")
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

    def with_epilogues(ws, run):
        """The four GEMMs of each layer with their epilogues, run(x, w, b, residual, gelu) computing one."""
        xs = {k: torch.randn(m, k, device=dev, dtype=torch.float16) for k, _ in SHAPES}
        res = {n: torch.randn(m, n, device=dev, dtype=torch.float16) for _, n in SHAPES}
        return lambda: [run(xs[w.shape[1]], w, b, res[w.shape[0]] if r else None, g)
                        for layer in ws for (w, b), (g, r) in zip(layer, EPILOGUES)]

    def cublas_epilogue(x, w, b, residual, gelu):
        y = F.linear(x, w, b)
        y = F.gelu(y) if gelu else y
        return y if residual is None else residual + y

    forms = {}
    w16 = weights(torch.float16)
    forms["cuBLAS fp16 + epilogue kernels"] = with_epilogues(w16, cublas_epilogue)
    import triton_splitk as small_gemm   # beside this script, on sys.path when it runs as a script
    if small_gemm.triton is not None:
        ws, cnt = small_gemm.scratch(dev)
        if args.sweep:
            sweep(small_gemm, w16, m, ws, cnt)
        best = {shape: small_gemm.Config(*c) for shape, c in zip(SHAPES, BEST_M249)} if m == 249 else {}
        for pdl, label in ((0, ""), (1, " + PDL"), (2, " + PDL + L2 weight prefetch")):
            def run(x, w, b, r, g, pdl=pdl):
                cfg = best.get((w.shape[1], w.shape[0]))   # (K, N); None: the default config
                return small_gemm.linear(x, w, b, ws, cnt, residual=r, gelu=g, cfg=cfg, pdl=pdl)
            if check(w16, m, run):
                forms[f"Triton sweep-best configs, fused{label}"] = with_epilogues(w16, run)
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


def fp32_reference(x, w, b, residual, gelu):
    """[residual +] [gelu](x @ w.T + b) in FP32: what every Triton form is checked against."""
    import torch.nn.functional as F
    y = F.linear(x.float(), w.float(), b.float())
    y = F.gelu(y) if gelu else y
    return y if residual is None else y + residual.float()


def check(ws16, m, run) -> bool:
    """run(x, w, b, residual, gelu) against FP32 math on each shape's first layer; prints what is wrong."""
    import torch
    ok = True
    for (w, b), (gelu, res) in zip(ws16[0], EPILOGUES):
        x = torch.randn(m, w.shape[1], device="cuda", dtype=torch.float16)
        r = torch.randn(m, w.shape[0], device="cuda", dtype=torch.float16) if res else None
        err = (run(x, w, b, r, gelu).float() - fp32_reference(x, w, b, r, gelu)).abs().max().item()
        if not err < 0.05:
            print(f"  WRONG: K={w.shape[1]} N={w.shape[0]} max abs error {err:.3g}")
            ok = False
    return ok


def candidates(small_gemm, m, n, k):
    """Block shapes x K slices that make between 16 and ~4 waves of programs on 132 multiprocessors."""
    out = []
    for bm in (64, 128):
        for bn in (64, 128, 256):
            for bk in (64, 128):
                for split in (1, 2, 4, 8):
                    warps = 4 if bm * bn <= 64 * 128 else 8
                    stages = max(2, min(5, 160 * 1024 // ((bm + bn) * bk * 2)))
                    cfg = small_gemm.Config(bm, bn, bk, split, warps, stages)
                    if small_gemm.fits(m, n, k, cfg) and 16 <= small_gemm.tiles(m, n, cfg) * split <= 600:
                        out.append(cfg)
    return out


def sweep(small_gemm, ws16, m, ws, cnt):
    import torch
    dev = "cuda"
    print("sweep: each line one config, 24 launches on 24 weights in one graph; us per GEMM (p50)")
    for i, ((k, n), (gelu, res)) in enumerate(zip(SHAPES, EPILOGUES)):
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        r = torch.randn(m, n, device=dev, dtype=torch.float16) if res else None
        layers = [layer[i] for layer in ws16]
        ref = graph_ms(lambda: [torch.nn.functional.linear(x, w, b) for w, b in layers]) * 1e3 / LAYERS
        w0, b0 = layers[0]
        want = fp32_reference(x, w0, b0, r, gelu)
        rows = []
        for cfg in candidates(small_gemm, m, n, k):
            try:
                for _ in range(2):  # twice: the second launch checks that the first left the counters at zero
                    got = small_gemm.linear(x, w0, b0, ws, cnt, residual=r, gelu=gelu, cfg=cfg)
                err = (got.float() - want).abs().max().item()
                if not err < 0.05:
                    print(f"  K={k} N={n} {cfg} WRONG: max abs error {err:.3g}")
                    continue
                us = graph_ms(lambda: [small_gemm.linear(x, w, b, ws, cnt, residual=r, gelu=gelu, cfg=cfg)
                                       for w, b in layers]) * 1e3 / LAYERS
            except Exception as err:  # noqa: BLE001 - e.g. out of shared memory: report, go on
                print(f"  K={k} N={n} {cfg} failed: {str(err).splitlines()[0][:60]}")
                continue
            rows.append((us, cfg))
        rows.sort(key=lambda t: t[0])
        tf = 2 * m * n * k / 1e6
        print(f"K={k} N={n} gelu={gelu} residual={res}: cuBLAS (bias only) {ref:.2f} us ({tf / ref:.0f} TFLOP/s); "
              f"default {small_gemm.default_config(m, n, k)}")
        for us, cfg in rows[:8]:
            print(f"  {us:7.2f} us {tf / us:5.0f} TFLOP/s  {cfg}")
        print(f"  ... {len(rows)} configs, slowest {rows[-1][0]:.2f} us" if rows else "  no config ran")


if __name__ == "__main__":
    main()
