"""An experiment (issue 7), not used by the backends: linear layers for few rows (batch 1: 249 rows for 5 s of
audio) as one Triton kernel each, with the bias, GELU and residual add fused into the kernel's epilogue.
bench/gemm_m249.py --sweep times it against cuBLAS; it lost on every wav2vec2-large shape on an H200
(bench/NOTES.md, 2026-11-29 run 11), so the fast backend keeps cuBLAS.

Why: at 249 rows cuBLAS covers a wav2vec2-large linear layer with 16-64 output tiles, so most of the GPU's
132 multiprocessors idle (96 such GEMMs ran at ~207 TFLOP/s on an H200, bench/gemm_m249.py). This kernel cuts
the reduction dimension K into SPLIT_K slices as well ("split-K"), so tiles x slices fill the GPU. Each slice
writes its FP32 partial tile to a workspace and counts itself in on a per-tile counter; the slice that
arrives last adds the partials, applies the epilogue and resets the counter to zero, so one launch does it
all and the scratch is left as it was found (nothing to clear between launches or CUDA graph replays).

The scratch (workspace, counters) is shared by the launches of one stream, which run one after another;
two streams must not share one scratch at the same time.
"""
from __future__ import annotations

from dataclasses import dataclass

try:
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # bench/gemm_m249.py then skips the Triton forms
    triton = None

WORKSPACE_FLOATS = 1 << 22  # 16 MiB of FP32 partial tiles
MAX_TILES = 4096


@dataclass(frozen=True)
class Config:
    block_m: int = 64
    block_n: int = 128
    block_k: int = 64
    split_k: int = 1
    warps: int = 4
    stages: int = 4


def tiles(m: int, n: int, cfg: Config) -> int:
    return -(-m // cfg.block_m) * -(-n // cfg.block_n)


def fits(m: int, n: int, k: int, cfg: Config) -> bool:
    """Whether the kernel runs this shape with this config: K cut into whole BLOCK_K steps per slice, the
    partial tiles within the workspace."""
    t = tiles(m, n, cfg)
    return (k % (cfg.split_k * cfg.block_k) == 0 and t <= MAX_TILES
            and (cfg.split_k == 1 or cfg.split_k * t * cfg.block_m * cfg.block_n <= WORKSPACE_FLOATS))


def default_config(m: int, n: int, k: int, sms: int = 132) -> Config:
    """Tiles of 64 x 128; K split so that tiles x slices come close to one wave over the multiprocessors."""
    cfg = Config()
    t = tiles(m, n, cfg)
    split = 1
    while split * 2 * t <= sms and fits(m, n, k, Config(split_k=split * 2)):
        split *= 2
    return Config(split_k=split)


if triton is not None:
    @triton.jit
    def _prefetch_l2(ptrs):
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // $0", "=r,l", [ptrs.to(tl.int64)], dtype=tl.int32,
                                  is_pure=False, pack=1)

    @triton.jit
    def _epilogue(acc, rm, rn, M, N, b_ptr, r_ptr, y_ptr, stride_r, stride_y,
                  GELU: tl.constexpr, RESIDUAL: tl.constexpr):
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if GELU:  # exact (erf) GELU, as wav2vec2's "gelu"
            acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
        inside = (rm[:, None] < M) & (rn[None, :] < N)
        if RESIDUAL:
            acc += tl.load(r_ptr + rm[:, None] * stride_r + rn[None, :], mask=inside, other=0.0).to(tl.float32)
        tl.store(y_ptr + rm[:, None] * stride_y + rn[None, :], acc.to(y_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _linear_kernel(x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K,
                       stride_x, stride_w, stride_r, stride_y,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SPLIT_K: tl.constexpr, GELU: tl.constexpr, RESIDUAL: tl.constexpr, PDL: tl.constexpr):
        tile = tl.program_id(0)
        piece = tl.program_id(1)
        tiles_m = tl.cdiv(M, BLOCK_M)
        # row tiles vary fastest: the programs that read one weight tile run side by side (it stays in L2)
        rm = (tile % tiles_m) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = (tile // tiles_m) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = piece * (K // SPLIT_K) + tl.arange(0, BLOCK_K)
        # programmatic dependent launch: this grid may start while the previous kernel still runs; PDL=2 first
        # pulls this program's weights (which no kernel writes) into L2, one 128-byte line per row and step
        if PDL == 2:
            rows = w_ptr + tl.minimum(rn, N - 1) * stride_w + piece * (K // SPLIT_K)
            for kk in range(0, K // SPLIT_K, 64):
                _prefetch_l2(rows + kk)
        if PDL > 0:
            gdc_wait()   # the previous kernel's writes (this kernel's input) are visible after this
        # rows/columns past the edge read the last real one (no masks in the loop); they are never stored
        x_ptrs = x_ptr + tl.minimum(rm, M - 1)[:, None] * stride_x + rk[None, :]
        w_ptrs = w_ptr + tl.minimum(rn, N - 1)[:, None] * stride_w + rk[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for _ in range(0, K // SPLIT_K, BLOCK_K):
            acc = tl.dot(tl.load(x_ptrs), tl.trans(tl.load(w_ptrs)), acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        if PDL > 0:
            gdc_launch_dependents()
        if SPLIT_K == 1:
            _epilogue(acc, rm, rn, M, N, b_ptr, r_ptr, y_ptr, stride_r, stride_y, GELU, RESIDUAL)
        else:
            size = BLOCK_M * BLOCK_N
            cell = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
            part = ws_ptr + (tile * SPLIT_K) * size + cell
            tl.store(part + piece * size, acc, cache_modifier=".cg")
            tl.debug_barrier()   # every thread's partial is written before the tile counts this slice in
            arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
            if arrived == SPLIT_K - 1:   # the last slice: every partial is visible (acquire)
                total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                for s in tl.static_range(SPLIT_K):
                    total += tl.load(part + s * size, cache_modifier=".cg")
                tl.store(cnt_ptr + tile, 0)   # ready for the next launch
                _epilogue(total, rm, rn, M, N, b_ptr, r_ptr, y_ptr, stride_r, stride_y, GELU, RESIDUAL)


def scratch(device):
    """(workspace, counters) for linear(): allocate once per stream that runs these kernels; the counters
    start at zero and every launch leaves them at zero."""
    import torch
    return (torch.empty(WORKSPACE_FLOATS, dtype=torch.float32, device=device),
            torch.zeros(MAX_TILES, dtype=torch.int32, device=device))


def linear(x, weight, bias, workspace, counters, residual=None, gelu: bool = False, cfg: Config | None = None,
           pdl: int = 0):
    """y = [residual +] [gelu](x @ weight.T + bias) for x [M, K], weight [N, K] (nn.Linear's layout),
    bias [N], residual [M, N]; y in x's dtype. FP32 accumulation, one rounding at the end. pdl: 0 off, 1
    programmatic dependent launch, 2 that plus an L2 prefetch of the weights before waiting (Hopper)."""
    import torch
    m, k = x.shape
    n = weight.shape[0]
    cfg = cfg or default_config(m, n, k, _sms(x.device))
    if not fits(m, n, k, cfg):
        raise ValueError(f"small_gemm: {cfg} does not fit M={m} N={n} K={k}")
    x = x.contiguous()
    weight = weight.contiguous()
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    r = y if residual is None else residual.contiguous()
    _linear_kernel[(tiles(m, n, cfg), cfg.split_k)](
        x, weight, bias, r, y, workspace, counters, m, n, k, x.stride(0), weight.stride(0), r.stride(0), y.stride(0),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLIT_K=cfg.split_k,
        GELU=gelu, RESIDUAL=residual is not None, PDL=pdl, num_warps=cfg.warps, num_stages=cfg.stages,
        launch_pdl=pdl > 0)
    return y


_SMS: dict = {}


def _sms(device) -> int:
    import torch
    if device.type != "cuda":
        return 132   # Triton's interpreter (CPU tests): plan as for an H100/H200
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]
