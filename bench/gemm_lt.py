"""Does cuBLASLt hold a faster algorithm for W1's linear layers than the one PyTorch runs? (issue 16, item 1)

PyTorch's F.linear asks cuBLAS(Lt) for its heuristic's first choice. At 249 rows (W1: batch 1, 5 s) that choice
runs ~7 us per GEMM whatever its size (bench/NOTES.md, "Where the targets stand"), far from the FLOP and weight
floors. TensorRT's answer is to time every candidate (tactic) and keep the fastest; this script does the same with
cuBLASLt itself, called through ctypes on the library torch has loaded:

  * candidates per GEMM shape: the heuristic's ranked list (up to --heuristics algorithms), and for each one that
    supports split-K, the same with K cut in 2..16 parts under each reduction scheme it offers
    (cublasLtMatmulAlgoCheck rejects the invalid ones and gives each its workspace);
  * each candidate's output is checked against F.linear on the same operands before it is timed;
  * timing as bench/gemm_m249.py: 24 launches on the 24 layers' weights in one CUDA graph (so the weights stream
    from HBM as in the model), CUDA events around replays, p50; every candidate screened with --screen replays,
    the best --final re-timed with 50;
  * then the 96-GEMM chain (24 layers x 4 shapes) with the fastest candidate per shape against F.linear's chain.

The layers' GEMMs with bias (epilogue BIAS), FP16 in and out, FP32 accumulation, as the fast backend's are.

    python3 bench/gemm_lt.py [--rows 249] [--heuristics 32] [--json out.json]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path

from gemm_m249 import LAYERS, SHAPES, graph_ms   # beside this script, on sys.path when it runs as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.envinfo import environment  # noqa: E402
from core.paths import write_json_atomic  # noqa: E402

# cublasLt.h (CUDA 12/13)
CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F = 68, 0, 2
DESC_TRANSA, DESC_TRANSB, DESC_EPILOGUE, DESC_BIAS_POINTER = 3, 4, 7, 8
OP_N, OP_T, EPILOGUE_BIAS = 0, 1, 4
PREF_MAX_WORKSPACE_BYTES = 1
CONFIG_SPLITK_NUM, CONFIG_REDUCTION_SCHEME = 2, 3
CAP_SPLITK_SUPPORT, CAP_REDUCTION_SCHEME_MASK = 0, 1
REDUCTION_SCHEMES = {1: "inplace", 2: "compute-type", 4: "output-type"}
WORKSPACE = 32 << 20   # what PyTorch gives cuBLASLt on Hopper


class Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", Algo), ("workspaceSize", ctypes.c_size_t), ("state", ctypes.c_int),
                ("wavesCount", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def load_cublaslt():
    """The libcublasLt torch has loaded (the same build its own GEMMs use)."""
    import torch
    torch.nn.functional.linear(torch.ones(8, 8, device="cuda", dtype=torch.float16),
                               torch.ones(8, 8, device="cuda", dtype=torch.float16))
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libcublasLt" in line})
    if not paths:
        raise SystemExit("libcublasLt is not loaded in this process: torch did not use it")
    lib = ctypes.CDLL(paths[0])
    lib.cublasLtGetStatusName.restype = ctypes.c_char_p
    lib.cublasLtGetVersion.restype = ctypes.c_size_t
    return lib, paths[0]


class Lt:
    """One cuBLASLt handle and the descriptors of one GEMM shape: y[M, N] = x[M, K] @ w[N, K]^T + b[N].

    Row-major y is column-major y^T = w @ x^T: A is w seen column-major (K x N, transposed), B is x (K x M)."""

    def __init__(self, lib, m: int, k: int, n: int):
        self.lib = lib
        self.handle = ctypes.c_void_p()
        self.call("cublasLtCreate", ctypes.byref(self.handle))
        self.desc = ctypes.c_void_p()
        self.call("cublasLtMatmulDescCreate", ctypes.byref(self.desc), CUBLAS_COMPUTE_32F, CUDA_R_32F)
        self.set_desc(DESC_TRANSA, ctypes.c_int32(OP_T))
        self.set_desc(DESC_TRANSB, ctypes.c_int32(OP_N))
        self.set_desc(DESC_EPILOGUE, ctypes.c_int32(EPILOGUE_BIAS))
        self.layouts = [self.layout(k, n, k), self.layout(k, m, k), self.layout(n, m, n), self.layout(n, m, n)]
        self.pref = ctypes.c_void_p()
        self.call("cublasLtMatmulPreferenceCreate", ctypes.byref(self.pref))
        ws = ctypes.c_uint64(WORKSPACE)
        self.call("cublasLtMatmulPreferenceSetAttribute", self.pref, PREF_MAX_WORKSPACE_BYTES, ctypes.byref(ws),
                  ctypes.sizeof(ws))
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def call(self, name, *args) -> int:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name}: {self.lib.cublasLtGetStatusName(status).decode()}")
        return status

    def set_desc(self, attr, value):
        self.call("cublasLtMatmulDescSetAttribute", self.desc, attr, ctypes.byref(value), ctypes.sizeof(value))

    def layout(self, rows, cols, ld):
        out = ctypes.c_void_p()
        self.call("cublasLtMatrixLayoutCreate", ctypes.byref(out), CUDA_R_16F, ctypes.c_uint64(rows),
                  ctypes.c_uint64(cols), ctypes.c_int64(ld))
        return out

    def heuristics(self, count: int, bias) -> list[HeuristicResult]:
        self.set_desc(DESC_BIAS_POINTER, ctypes.c_void_p(bias.data_ptr()))   # its alignment steers the choice
        results = (HeuristicResult * count)()
        found = ctypes.c_int()
        a, b, c, d = self.layouts
        self.call("cublasLtMatmulAlgoGetHeuristic", self.handle, self.desc, a, b, c, d, self.pref, count, results,
                  ctypes.byref(found))
        return [results[i] for i in range(found.value) if results[i].state == 0]

    def cap(self, algo: Algo, attr) -> int:
        value, written = ctypes.c_uint32(), ctypes.c_size_t()
        status = self.lib.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), attr, ctypes.byref(value),
                                                             ctypes.sizeof(value), ctypes.byref(written))
        return value.value if status == 0 else 0

    def with_split(self, algo: Algo, parts: int, scheme: int) -> tuple[Algo, int] | None:
        """algo with K cut in `parts` reduced by `scheme`, and the workspace it needs; None where not valid."""
        out = Algo()
        ctypes.memmove(ctypes.byref(out), ctypes.byref(algo), ctypes.sizeof(Algo))
        for attr, value in ((CONFIG_SPLITK_NUM, parts), (CONFIG_REDUCTION_SCHEME, scheme)):
            v = ctypes.c_uint32(value)
            if self.lib.cublasLtMatmulAlgoConfigSetAttribute(ctypes.byref(out), attr, ctypes.byref(v),
                                                              ctypes.sizeof(v)) != 0:
                return None
        check = HeuristicResult()
        a, b, c, d = self.layouts
        if self.lib.cublasLtMatmulAlgoCheck(self.handle, self.desc, a, b, c, d, ctypes.byref(out),
                                            ctypes.byref(check)) != 0 or check.workspaceSize > WORKSPACE:
            return None
        return out, check.workspaceSize

    def matmul(self, algo: Algo, x, w, b, y, workspace, stream: int):
        self.set_desc(DESC_BIAS_POINTER, ctypes.c_void_p(b.data_ptr()))
        a, bl, c, d = self.layouts
        self.call("cublasLtMatmul", self.handle, self.desc, ctypes.byref(self.alpha), ctypes.c_void_p(w.data_ptr()),
                  a, ctypes.c_void_p(x.data_ptr()), bl, ctypes.byref(self.beta), ctypes.c_void_p(y.data_ptr()), c,
                  ctypes.c_void_p(y.data_ptr()), d, ctypes.byref(algo), ctypes.c_void_p(workspace.data_ptr()),
                  ctypes.c_size_t(WORKSPACE), ctypes.c_void_p(stream))


def candidates(lt: Lt, bias, count: int) -> list[tuple[str, Algo]]:
    out = []
    for rank, h in enumerate(lt.heuristics(count, bias)):
        out.append((f"h{rank} waves {h.wavesCount:.2f}", h.algo))
        if not lt.cap(h.algo, CAP_SPLITK_SUPPORT):
            continue
        mask = lt.cap(h.algo, CAP_REDUCTION_SCHEME_MASK)
        for parts in (2, 3, 4, 6, 8, 12, 16):
            for scheme, name in REDUCTION_SCHEMES.items():
                if mask & scheme and (split := lt.with_split(h.algo, parts, scheme)):
                    out.append((f"h{rank} split {parts} {name} ws {split[1] >> 10} KiB", split[0]))
    return out


def main(argv=None):
    import torch
    import torch.nn.functional as F
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=249)
    p.add_argument("--heuristics", type=int, default=32, help="how many of the heuristic's ranked algorithms")
    p.add_argument("--screen", type=int, default=10, help="replays per candidate in the first pass")
    p.add_argument("--final", type=int, default=8, help="candidates per shape re-timed with 50 replays")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU: this script times cuBLASLt matrix products (see bench/NOTES.md).")
    torch.manual_seed(0)
    lib, path = load_cublaslt()
    m, dev = args.rows, "cuda"
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  {os.path.basename(path)} "
          f"{lib.cublasLtGetVersion()}  M={m}", flush=True)
    workspace = torch.empty(WORKSPACE, dtype=torch.uint8, device=dev)
    report = {"rows": m, "library": path, "version": lib.cublasLtGetVersion(), "env": environment(), "shapes": []}
    best = {}
    for k, n in SHAPES:
        ws = [(torch.randn(n, k, device=dev, dtype=torch.float16) * 0.02,
               torch.randn(n, device=dev, dtype=torch.float16)) for _ in range(LAYERS)]
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        y = torch.empty(m, n, device=dev, dtype=torch.float16)
        lt = Lt(lib, m, k, n)
        ref_us = graph_ms(lambda: [F.linear(x, w, b) for w, b in ws], repeats=50) * 1e3 / LAYERS
        want = F.linear(x, *ws[0]).float()
        timed, wrong, failed = [], 0, 0
        for name, algo in candidates(lt, ws[0][1], args.heuristics):
            def run(algo=algo):
                stream = torch.cuda.current_stream().cuda_stream   # the capture stream inside graph_ms
                for w, b in ws:
                    lt.matmul(algo, x, w, b, y, workspace, stream)
            try:
                lt.matmul(algo, x, *ws[0], y, workspace, torch.cuda.current_stream().cuda_stream)
                torch.cuda.synchronize()
                err = (y.float() - want).abs().max().item()
                if not err < 0.05:
                    wrong += 1
                    print(f"  K={k} N={n} {name}: WRONG, max abs error {err:.3g}")
                    continue
                timed.append([graph_ms(run, repeats=args.screen) * 1e3 / LAYERS, name, algo, run])
            except RuntimeError as e:
                failed += 1
                print(f"  K={k} N={n} {name}: {e}")
        for row in sorted(timed, key=lambda r: r[0])[:args.final]:
            row[0] = graph_ms(row[3], repeats=50) * 1e3 / LAYERS
        top = sorted(timed, key=lambda r: r[0])[:args.final]
        tf = 2 * m * n * k / 1e6
        h0 = next((r[0] for r in timed if r[1].startswith("h0 waves")), None)
        print(f"K={k} N={n}: F.linear {ref_us:.2f} us ({tf / ref_us:.0f} TFLOP/s); cuBLASLt heuristic #0 "
              f"{h0 if h0 is None else round(h0, 2)} us; {len(timed)} candidates timed, {wrong} wrong, {failed} failed",
              flush=True)
        for us, name, _, _ in top:
            print(f"  {us:7.2f} us {tf / us:5.0f} TFLOP/s  {name}")
        if top:
            best[(k, n)] = (lt, ws, x, y, top[0][2])
        report["shapes"].append({"k": k, "n": n, "f_linear_us": ref_us, "heuristic0_us": h0, "timed": len(timed),
                                 "wrong": wrong, "failed": failed,
                                 "top": [{"us": us, "algo": name} for us, name, _, _ in top]})
    if len(best) == len(SHAPES):
        # the 96 GEMMs in model order (layer by layer), fastest candidate per shape, against F.linear's chain
        def lt_chain():
            stream = torch.cuda.current_stream().cuda_stream
            for i in range(LAYERS):
                for lt, ws, x, y, algo in best.values():
                    lt.matmul(algo, x, *ws[i], y, workspace, stream)
        chain = [(v[1], v[2]) for v in best.values()]
        ref = graph_ms(lambda: [F.linear(x, *ws[i]) for i in range(LAYERS) for ws, x in chain], repeats=50)
        ours = graph_ms(lt_chain, repeats=50)
        print(f"96-GEMM chain: F.linear {ref:.3f} ms, cuBLASLt fastest per shape {ours:.3f} ms ({ref / ours:.2f}x)")
        report["chain_ms"] = {"f_linear": ref, "cublaslt_best": ours}
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
