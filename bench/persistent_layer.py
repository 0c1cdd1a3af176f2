"""An experiment (issue 16, item 1), not used by the backends: one wav2vec2 encoder layer (stable layer norm, as
indicwav2vec) as ONE persistent Triton kernel at batch 1, against the fast backend's compiled layer.

Why: W1 (batch 1, 249 frames) spends its 1.3-1.4 ms in ~250 short kernels; each of the 96 linear layers costs 5-7 us
whatever its size, and ~0.2 ms are gaps between graph nodes (bench/NOTES.md, eighteenth session). A persistent
kernel runs the layer's seven stages (LayerNorm, QKV, attention, out-projection + residual, LayerNorm, FF1 + GELU,
FF2 + residual) in one launch: one program per multiprocessor loops over each stage's tiles, and the programs meet
at a grid-wide barrier between stages instead of ending and launching a kernel. What this measures is whether a
barrier plus a stage's ramp costs less than a kernel boundary plus a launch. It did not (1.6 us a barrier), and the
layer kernel's GEMM tiles were 1.6-1.8x cuBLAS's (the best tile per GEMM, --gemms: 1.16x over the four): 1.50 ms at
best against the compiled layers' 1.19 ms on an H100 (bench/NOTES.md, twenty-third session), so the fast backend
keeps its compiled layers.

The barrier: a counter and a generation word in global memory. Each program reads the generation when it starts;
at barrier i it counts itself in, and the last to arrive resets the counter and bumps the generation (release),
while the others spin until the generation reaches start + i (acquire). Nothing needs clearing between launches or
CUDA graph replays. Every program must be resident at once (the grid is at most one program per multiprocessor
and nothing else runs beside it), which a cooperative launch would guarantee and Triton does not offer. Buffers
that other programs wrote in this launch are read with .cg (L2, not the incoherent L1).

stage=None: all stages in one launch (the GPU form). stage=s: only stage s, no barriers, so Triton's interpreter
(TRITON_INTERPRET=1, which runs programs one after another and would spin for ever at a barrier) can check each
stage's arithmetic on the CPU: `TRITON_INTERPRET=1 python3 bench/persistent_layer.py --check-cpu`.

    python3 bench/persistent_layer.py [--configs e,f,c] [--forms barrier,flow,flow-dynamic] [--breakdown]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gemm_m249 import graph_times   # beside this script, on sys.path when it runs as a script

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

STAGES = 7


@dataclass(frozen=True)
class Config:
    block_m: int = 64
    bn_qkv: int = 128
    bn_out: int = 64
    bn_ff1: int = 128
    bn_ff2: int = 64
    block_k: int = 64
    block_q: int = 64     # attention: queries per program
    warps: int = 8
    stages: int = 3       # software-pipelining depth of the GEMMs' K loops
    ln_rows: int = 16     # flow form: rows per LayerNorm item (its QKV tiles are one head wide, its query blocks BM)


if triton is not None:
    @triton.jit
    def _grid_sync(bar_ptr, target, NP):
        """All NP programs meet here. bar_ptr[0]: arrivals, bar_ptr[1]: generation (see the module docstring)."""
        tl.debug_barrier()   # every thread's stores are issued before this program counts itself in
        arrived = tl.atomic_add(bar_ptr, 1, sem="acq_rel", scope="gpu")
        if arrived == NP - 1:
            tl.atomic_xchg(bar_ptr, 0, sem="relaxed", scope="gpu")
            tl.atomic_add(bar_ptr + 1, 1, sem="release", scope="gpu")
        else:
            gen = tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu")
            while gen < target:
                gen = tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()

    @triton.jit
    def _layernorm(x_ptr, w_ptr, b_ptr, y_ptr, M, pid, NP, eps, H: tl.constexpr):
        cols = tl.arange(0, H)
        w = tl.load(w_ptr + cols).to(tl.float32)
        b = tl.load(b_ptr + cols).to(tl.float32)
        for r in range(pid, M, NP):
            x = tl.load(x_ptr + r * H + cols, cache_modifier=".cg").to(tl.float32)
            mean = tl.sum(x, 0) / H
            d = x - mean
            var = tl.sum(d * d, 0) / H
            tl.store(y_ptr + r * H + cols, (d * tl.rsqrt(var + eps) * w + b).to(y_ptr.dtype.element_ty))

    @triton.jit
    def _gemm_tile(a_ptr, w_ptr, b_ptr, r_ptr, y_ptr, M, tm, tn, N: tl.constexpr, K: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PIPE: tl.constexpr,
                   GELU: tl.constexpr, RESIDUAL: tl.constexpr):
        """Tile (tm, tn) of y[M, N] = [r +] [gelu](a[M, K] @ w[N, K]^T + b)."""
        rm = tm * BM + tl.arange(0, BM)
        rn = tn * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        a_ptrs = a_ptr + tl.minimum(rm, M - 1)[:, None] * K + rk[None, :]   # rows past M repeat the last
        w_ptrs = w_ptr + rn[:, None] * K + rk[None, :]
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for _ in tl.range(0, K, BK, num_stages=PIPE):
            acc = tl.dot(tl.load(a_ptrs, cache_modifier=".cg"), tl.trans(tl.load(w_ptrs)), acc)
            a_ptrs += BK
            w_ptrs += BK
        acc += tl.load(b_ptr + rn).to(tl.float32)[None, :]
        if GELU:  # exact (erf) GELU, as wav2vec2's "gelu"
            acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
        inside = (rm[:, None] < M) & (rn[None, :] < N)
        cell = rm[:, None] * N + rn[None, :]
        if RESIDUAL:
            acc += tl.load(r_ptr + cell, mask=inside, other=0.0, cache_modifier=".cg").to(tl.float32)
        tl.store(y_ptr + cell, acc.to(y_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _gemm(a_ptr, w_ptr, b_ptr, r_ptr, y_ptr, M, pid, NP, N: tl.constexpr, K: tl.constexpr,
              BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PIPE: tl.constexpr,
              GELU: tl.constexpr, RESIDUAL: tl.constexpr):
        """All tiles, handed out round-robin; row tiles vary fastest, so the programs that read one weight tile
        run side by side (it stays in L2)."""
        tiles_m = tl.cdiv(M, BM)
        for t in range(pid, tiles_m * (N // BN), NP):
            _gemm_tile(a_ptr, w_ptr, b_ptr, r_ptr, y_ptr, M, t % tiles_m, t // tiles_m, N, K, BM, BN, BK, PIPE,
                       GELU, RESIDUAL)

    @triton.jit
    def _attention_unit(qkv_ptr, o_ptr, M, head, qb, scale, H: tl.constexpr, HEADS: tl.constexpr,
                        BQ: tl.constexpr, KEYS: tl.constexpr):
        """Query block qb of one head: softmax attention without a mask (batch 1: every frame is audio), all
        KEYS >= M keys in one block."""
        D: tl.constexpr = H // HEADS
        d = tl.arange(0, D)
        rk = tl.arange(0, KEYS)
        k_rows = qkv_ptr + tl.minimum(rk, M - 1)[:, None] * (3 * H) + d[None, :]
        rq = qb * BQ + tl.arange(0, BQ)
        q = tl.load(qkv_ptr + tl.minimum(rq, M - 1)[:, None] * (3 * H) + head * D + d[None, :],
                    cache_modifier=".cg")
        k = tl.load(k_rows + H + head * D, cache_modifier=".cg")
        v = tl.load(k_rows + 2 * H + head * D, cache_modifier=".cg")
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(rk[None, :] < M, s, float("-inf"))
        p = tl.exp(s - tl.max(s, 1)[:, None])
        o = tl.dot(p.to(v.dtype), v) / tl.sum(p, 1)[:, None]
        tl.store(o_ptr + rq[:, None] * H + head * D + d[None, :], o.to(o_ptr.dtype.element_ty),
                 mask=rq[:, None] < M)

    @triton.jit
    def _attention(qkv_ptr, o_ptr, M, pid, NP, scale, H: tl.constexpr, HEADS: tl.constexpr,
                   BQ: tl.constexpr, KEYS: tl.constexpr):
        q_blocks = tl.cdiv(M, BQ)
        for u in range(pid, HEADS * q_blocks, NP):
            _attention_unit(qkv_ptr, o_ptr, M, u // q_blocks, u % q_blocks, scale, H, HEADS, BQ, KEYS)

    @triton.jit
    def _layer_kernel(x_ptr, y_ptr, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2,
                      xn_ptr, qkv_ptr, o_ptr, x1_ptr, xn2_ptr, h_ptr, bar_ptr, M, NP, eps, scale,
                      H: tl.constexpr, HEADS: tl.constexpr, FF: tl.constexpr, KEYS: tl.constexpr,
                      STAGE: tl.constexpr, BM: tl.constexpr, BN_QKV: tl.constexpr, BN_OUT: tl.constexpr,
                      BN_FF1: tl.constexpr, BN_FF2: tl.constexpr, BK: tl.constexpr, BQ: tl.constexpr,
                      PIPE: tl.constexpr):
        pid = tl.program_id(0)
        ALL: tl.constexpr = STAGE < 0
        if ALL:
            gen0 = tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu")
        if ALL or STAGE == 0:
            _layernorm(x_ptr, ln1w, ln1b, xn_ptr, M, pid, NP, eps, H)
        if ALL:
            _grid_sync(bar_ptr, gen0 + 1, NP)
        if ALL or STAGE == 1:
            _gemm(xn_ptr, wqkv, bqkv, qkv_ptr, qkv_ptr, M, pid, NP, 3 * H, H, BM, BN_QKV, BK, PIPE, False, False)
        if ALL:
            _grid_sync(bar_ptr, gen0 + 2, NP)
        if ALL or STAGE == 2:
            _attention(qkv_ptr, o_ptr, M, pid, NP, scale, H, HEADS, BQ, KEYS)
        if ALL:
            _grid_sync(bar_ptr, gen0 + 3, NP)
        if ALL or STAGE == 3:
            _gemm(o_ptr, wo, bo, x_ptr, x1_ptr, M, pid, NP, H, H, BM, BN_OUT, BK, PIPE, False, True)
        if ALL:
            _grid_sync(bar_ptr, gen0 + 4, NP)
        if ALL or STAGE == 4:
            _layernorm(x1_ptr, ln2w, ln2b, xn2_ptr, M, pid, NP, eps, H)
        if ALL:
            _grid_sync(bar_ptr, gen0 + 5, NP)
        if ALL or STAGE == 5:
            _gemm(xn2_ptr, w1, b1, h_ptr, h_ptr, M, pid, NP, FF, H, BM, BN_FF1, BK, PIPE, True, False)
        if ALL:
            _grid_sync(bar_ptr, gen0 + 6, NP)
        if ALL or STAGE == 6:
            _gemm(h_ptr, w2, b2, x1_ptr, y_ptr, M, pid, NP, H, FF, BM, BN_FF2, BK, PIPE, False, True)

    @triton.jit
    def _barriers_kernel(bar_ptr, NP, COUNT: tl.constexpr):
        """COUNT grid barriers and nothing else: what the layer kernel's six cost by themselves."""
        gen0 = tl.atomic_add(bar_ptr + 1, 0, sem="acquire", scope="gpu")
        for i in tl.static_range(COUNT):
            _grid_sync(bar_ptr, gen0 + i + 1, NP)


    # ------------------------------------------------------------ the dataflow form: no grid barrier
    # Counters (int32) of the flow kernel: [0] programs done, [1] the next item (dynamic order), then how many items
    # of each kind have finished, per row block of BM rows (LN1, attention, out-projection, LN2, FF1) or per head
    # (QKV). The last program to finish zeroes them all for the next launch.
    C_LN1, C_ATT, C_OUT, C_LN2, C_FF1, C_QKV = (tl.constexpr(c) for c in (8, 16, 24, 32, 40, 48))
    COUNTERS = tl.constexpr(64)

    @triton.jit
    def _wait(ptr, need):
        c = tl.atomic_add(ptr, 0, sem="acquire", scope="gpu")
        while c < need:
            c = tl.atomic_add(ptr, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()

    @triton.jit
    def _signal(ptr):
        tl.debug_barrier()   # every thread's stores are issued before the count goes up
        tl.atomic_add(ptr, 1, sem="release", scope="gpu")

    @triton.jit
    def _ln_rows(x_ptr, w_ptr, b_ptr, y_ptr, M, r0, eps, ROWS: tl.constexpr, H: tl.constexpr):
        rows = r0 + tl.arange(0, ROWS)
        cols = tl.arange(0, H)
        at = rows[:, None] * H + cols[None, :]
        inside = rows[:, None] < M
        x = tl.load(x_ptr + at, mask=inside, other=0.0, cache_modifier=".cg").to(tl.float32)
        mean = tl.sum(x, 1) / H
        d = x - mean[:, None]
        rstd = tl.rsqrt(tl.sum(d * d, 1) / H + eps)
        y = d * rstd[:, None] * tl.load(w_ptr + cols).to(tl.float32)[None, :] + tl.load(b_ptr + cols).to(
            tl.float32)[None, :]
        tl.store(y_ptr + at, y.to(y_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _flow_item(t, x_ptr, y_ptr, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2,
                   xn_ptr, qkv_ptr, o_ptr, x1_ptr, xn2_ptr, h_ptr, cnt_ptr, M, eps, scale,
                   H: tl.constexpr, HEADS: tl.constexpr, FF: tl.constexpr, KEYS: tl.constexpr, BM: tl.constexpr,
                   LNR: tl.constexpr, BN_OUT: tl.constexpr, BN_FF1: tl.constexpr, BN_FF2: tl.constexpr,
                   BK: tl.constexpr, PIPE: tl.constexpr):
        """Item t of the layer, in an order where every item depends on earlier ones only: LN1 (LNR rows an item),
        QKV (one head's q, k or v columns of a row block, head by head), attention (a head's query block), the
        out-projection + residual, LN2, FF1 + GELU, FF2 + residual (tiles of a row block, row block by row block).
        Each waits for what it reads and counts itself in when done."""
        D: tl.constexpr = H // HEADS
        LN_PER: tl.constexpr = BM // LNR
        tm = tl.cdiv(M, BM)
        e0 = tm * LN_PER
        e1 = e0 + tm * 3 * HEADS
        e2 = e1 + HEADS * tm
        e3 = e2 + tm * (H // BN_OUT)
        e4 = e3 + tm * LN_PER
        e5 = e4 + tm * (FF // BN_FF1)
        if t < e0:
            _ln_rows(x_ptr, ln1w, ln1b, xn_ptr, M, t * LNR, eps, LNR, H)
            _signal(cnt_ptr + C_LN1 + t // LN_PER)
        elif t < e1:
            i = t - e0
            head = i // (3 * tm)
            part = (i // tm) % 3
            m = i % tm
            _wait(cnt_ptr + C_LN1 + m, LN_PER)
            _gemm_tile(xn_ptr, wqkv, bqkv, qkv_ptr, qkv_ptr, M, m, part * HEADS + head, 3 * H, H, BM, D, BK, PIPE,
                       False, False)
            _signal(cnt_ptr + C_QKV + head)
        elif t < e2:
            i = t - e1
            head = i // tm
            qb = i % tm
            _wait(cnt_ptr + C_QKV + head, 3 * tm)
            _attention_unit(qkv_ptr, o_ptr, M, head, qb, scale, H, HEADS, BM, KEYS)
            _signal(cnt_ptr + C_ATT + qb)
        elif t < e3:
            i = t - e2
            m = i // (H // BN_OUT)
            n = i % (H // BN_OUT)
            _wait(cnt_ptr + C_ATT + m, HEADS)
            _gemm_tile(o_ptr, wo, bo, x_ptr, x1_ptr, M, m, n, H, H, BM, BN_OUT, BK, PIPE, False, True)
            _signal(cnt_ptr + C_OUT + m)
        elif t < e4:
            i = t - e3
            m = i // LN_PER
            _wait(cnt_ptr + C_OUT + m, H // BN_OUT)
            _ln_rows(x1_ptr, ln2w, ln2b, xn2_ptr, M, i * LNR, eps, LNR, H)
            _signal(cnt_ptr + C_LN2 + m)
        elif t < e5:
            i = t - e4
            m = i // (FF // BN_FF1)
            n = i % (FF // BN_FF1)
            _wait(cnt_ptr + C_LN2 + m, LN_PER)
            _gemm_tile(xn2_ptr, w1, b1, h_ptr, h_ptr, M, m, n, FF, H, BM, BN_FF1, BK, PIPE, True, False)
            _signal(cnt_ptr + C_FF1 + m)
        else:
            i = t - e5
            m = i // (H // BN_FF2)
            n = i % (H // BN_FF2)
            _wait(cnt_ptr + C_FF1 + m, FF // BN_FF1)
            _gemm_tile(h_ptr, w2, b2, x1_ptr, y_ptr, M, m, n, H, FF, BM, BN_FF2, BK, PIPE, False, True)

    @triton.jit
    def _flow_kernel(x_ptr, y_ptr, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2,
                     xn_ptr, qkv_ptr, o_ptr, x1_ptr, xn2_ptr, h_ptr, cnt_ptr, M, NP, eps, scale,
                     H: tl.constexpr, HEADS: tl.constexpr, FF: tl.constexpr, KEYS: tl.constexpr, BM: tl.constexpr,
                     LNR: tl.constexpr, BN_OUT: tl.constexpr, BN_FF1: tl.constexpr, BN_FF2: tl.constexpr,
                     BK: tl.constexpr, PIPE: tl.constexpr, DYNAMIC: tl.constexpr):
        """The layer as items (see _flow_item). DYNAMIC: each program takes the next item from a counter (Triton's
        interpreter, which runs the programs one after another, needs this); else program p takes items p, p + NP,
        ... (every program resident, as the barrier form)."""
        tm = tl.cdiv(M, BM)
        total = tm * (2 * (BM // LNR) + 4 * HEADS + H // BN_OUT + FF // BN_FF1 + H // BN_FF2)
        if DYNAMIC:
            t = tl.atomic_add(cnt_ptr + 1, 1, sem="relaxed", scope="gpu")
            while t < total:
                _flow_item(t, x_ptr, y_ptr, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2, xn_ptr,
                           qkv_ptr, o_ptr, x1_ptr, xn2_ptr, h_ptr, cnt_ptr, M, eps, scale, H, HEADS, FF, KEYS, BM,
                           LNR, BN_OUT, BN_FF1, BN_FF2, BK, PIPE)
                t = tl.atomic_add(cnt_ptr + 1, 1, sem="relaxed", scope="gpu")
        else:
            for t in range(tl.program_id(0), total, NP):
                _flow_item(t, x_ptr, y_ptr, ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2, xn_ptr,
                           qkv_ptr, o_ptr, x1_ptr, xn2_ptr, h_ptr, cnt_ptr, M, eps, scale, H, HEADS, FF, KEYS, BM,
                           LNR, BN_OUT, BN_FF1, BN_FF2, BK, PIPE)
        tl.debug_barrier()
        if tl.atomic_add(cnt_ptr, 1, sem="acq_rel", scope="gpu") == NP - 1:   # the last program out
            tl.store(cnt_ptr + tl.arange(0, COUNTERS), tl.zeros([COUNTERS], dtype=tl.int32))


    # ------------------------------------------------------------ one GEMM stage alone: pointer loads against TMA
    @triton.jit
    def _gemm_ptr_kernel(a_ptr, w_ptr, b_ptr, y_ptr, M, NP, N: tl.constexpr, K: tl.constexpr, BM: tl.constexpr,
                         BN: tl.constexpr, BK: tl.constexpr, PIPE: tl.constexpr, GELU: tl.constexpr):
        _gemm(a_ptr, w_ptr, b_ptr, y_ptr, y_ptr, M, tl.program_id(0), NP, N, K, BM, BN, BK, PIPE, GELU, False)

    @triton.jit
    def _gemm_tma_kernel(a_desc, w_desc, b_ptr, y_ptr, M, NP, N: tl.constexpr, K: tl.constexpr, BM: tl.constexpr,
                         BN: tl.constexpr, BK: tl.constexpr, PIPE: tl.constexpr, GELU: tl.constexpr):
        """As _gemm_ptr_kernel, the tiles brought in by the tensor memory accelerator (rows past M read as zeros)."""
        tiles_m = tl.cdiv(M, BM)
        for t in range(tl.program_id(0), tiles_m * (N // BN), NP):
            tm = t % tiles_m
            tn = t // tiles_m
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for k in tl.range(0, K, BK, num_stages=PIPE):
                acc = tl.dot(a_desc.load([tm * BM, k]), w_desc.load([tn * BN, k]).T, acc)
            rm = tm * BM + tl.arange(0, BM)
            rn = tn * BN + tl.arange(0, BN)
            acc += tl.load(b_ptr + rn).to(tl.float32)[None, :]
            if GELU:
                acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
            tl.store(y_ptr + rm[:, None] * N + rn[None, :], acc.to(y_ptr.dtype.element_ty), mask=rm[:, None] < M)


def layer_weights(layer) -> dict:
    """The tensors of one core.backends.fast_module.Layer (stable layer norm), contiguous, by kernel argument."""
    return {"ln1w": layer.ln1.weight, "ln1b": layer.ln1.bias, "wqkv": layer.qkv.weight, "bqkv": layer.qkv.bias,
            "wo": layer.out.weight, "bo": layer.out.bias, "ln2w": layer.ln2.weight, "ln2b": layer.ln2.bias,
            "w1": layer.ff1.weight, "b1": layer.ff1.bias, "w2": layer.ff2.weight, "b2": layer.ff2.bias}


class PersistentLayer:
    """Runs one layer's weights on x [M, H] -> a new [M, H] tensor (the kernel's own scratch is reused)."""

    FORMS = ("barrier", "flow", "flow-dynamic")

    def __init__(self, layer, rows: int, cfg: Config, programs: int, form: str = "barrier"):
        import torch
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, not {form!r}")
        self.form = form
        self.w = {k: v.detach().contiguous() for k, v in layer_weights(layer).items()}
        self.heads, self.eps = layer.heads, layer.ln1.eps
        self.h, self.ff = self.w["wo"].shape[0], self.w["w1"].shape[0]
        self.rows, self.cfg, self.programs = rows, cfg, programs
        if not layer.stable:
            raise ValueError("the kernel implements the stable (pre-LN) layer only")
        dev, dt = self.w["wo"].device, self.w["wo"].dtype
        empty = lambda n: torch.empty((rows, n), device=dev, dtype=dt)  # noqa: E731
        self.scratch = {"xn_ptr": empty(self.h), "qkv_ptr": empty(3 * self.h), "o_ptr": empty(self.h),
                        "x1_ptr": empty(self.h), "xn2_ptr": empty(self.h), "h_ptr": empty(self.ff)}
        self.bar = torch.zeros(2 if form == "barrier" else int(COUNTERS), device=dev, dtype=torch.int32)
        if form != "barrier" and (-(-rows // cfg.block_m) > 8 or self.heads > 16 or cfg.block_m % cfg.ln_rows):
            raise ValueError("the flow form's counters hold 8 row blocks and 16 heads; ln_rows must divide block_m")
        self.keys = triton.next_power_of_2(rows)
        qkv_width = cfg.bn_qkv if form == "barrier" else self.h // self.heads
        for n, bn in ((3 * self.h, qkv_width), (self.h, cfg.bn_out), (self.ff, cfg.bn_ff1), (self.h, cfg.bn_ff2)):
            if n % bn:
                raise ValueError(f"{bn} does not divide {n}")

    def __call__(self, x, y, stage: int | None = None):
        c = self.cfg
        scale = 1.0 / math.sqrt(self.h // self.heads)
        if self.form != "barrier":
            _flow_kernel[(self.programs,)](
                x, y, **self.w, **self.scratch, cnt_ptr=self.bar, M=self.rows, NP=self.programs, eps=self.eps,
                scale=scale, H=self.h, HEADS=self.heads, FF=self.ff, KEYS=self.keys, BM=c.block_m, LNR=c.ln_rows,
                BN_OUT=c.bn_out, BN_FF1=c.bn_ff1, BN_FF2=c.bn_ff2, BK=c.block_k, PIPE=c.stages,
                DYNAMIC=self.form == "flow-dynamic", num_warps=c.warps)
            return y
        _layer_kernel[(self.programs,)](
            x, y, **self.w, **self.scratch, bar_ptr=self.bar, M=self.rows, NP=self.programs, eps=self.eps,
            scale=scale, H=self.h, HEADS=self.heads, FF=self.ff, KEYS=self.keys,
            STAGE=-1 if stage is None else stage, BM=c.block_m, BN_QKV=c.bn_qkv, BN_OUT=c.bn_out,
            BN_FF1=c.bn_ff1, BN_FF2=c.bn_ff2, BK=c.block_k, BQ=c.block_q, PIPE=c.stages, num_warps=c.warps)
        return y


def random_encoder(arch: str, device: str, dtype, gelu_epilogue: bool = False):
    """The fast module of a random-weight model and a realistic first-layer input for 5 s of audio [1, F, H]."""
    import torch
    from core.backends.fast_module import build_module
    from core.models import build_random
    hf, _ = build_random(arch)
    module = build_module(hf, "flat", gelu_epilogue).to(device=device, dtype=dtype).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(1, 80000, generator=g).to(device=device, dtype=dtype)
    with torch.no_grad():
        x, _ = module.front(audio, torch.tensor([80000], device=device), True)
    return module, x


def compare(ref, got) -> dict:
    d = (got.float() - ref.float()).abs()
    return {"max_abs": float(d.max()), "max_rel": float(d.max() / ref.float().abs().max().clamp(min=1e-6)),
            "finite": bool(got.isfinite().all())}


def check_cpu(arch: str, rows: int) -> int:
    """Each stage through Triton's interpreter, launched stage by stage, against the module's own layers (fp32)."""
    import torch
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("--check-cpu needs TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    module, x = random_encoder(arch, "cpu", torch.float32)
    x = x[0, :rows].contiguous()
    bad = 0
    for i, layer in enumerate(module.layers[:2]):
        pl = PersistentLayer(layer, rows, Config(block_m=16, bn_qkv=32, bn_out=16, bn_ff1=32, bn_ff2=16,
                                                 block_k=16, block_q=16), programs=5)
        y = torch.empty_like(x)
        for s in range(STAGES):
            pl(x, y, stage=s)
        with torch.no_grad():
            ref = layer(x[None], None)[0]
        cfg_flow = Config(block_m=16, bn_out=16, bn_ff1=32, bn_ff2=16, block_k=16, ln_rows=8)
        flow = PersistentLayer(layer, rows, cfg_flow, programs=5, form="flow-dynamic")
        yf = torch.empty_like(x)
        for launch in range(2):   # twice: the first launch must leave its counters at zero
            flow(x, yf)
            left = flow.bar.abs().sum().item()
        for form, got in (("stage by stage", y), ("flow", yf)):
            r = compare(ref, got)
            print(f"layer {i} {form}: {r}")
            bad += not (r["finite"] and r["max_rel"] < 1e-5)  # interpreter fp32: ~6e-8; GELU's 0.7071 as 0.7: 7e-5
        print(f"layer {i} flow: counters left at {left}")
        bad += left != 0
        x = ref.contiguous()
    print("OK" if not bad else "MISMATCH")
    return int(bool(bad))


def percentiles(times) -> dict:
    """p50/p90/p99 (ms) of replay times, each taken once, with numpy's percentile as core.bench does."""
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99}


GEMM_TILES = [(64, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 128, 3, 4), (128, 64, 64, 4, 8),
              (64, 32, 64, 5, 4), (128, 128, 64, 3, 8)]   # (BM, BN, BK, pipeline stages, warps)


def gemm_stage(form, a, w, b, y, tile, programs: int, gelu: bool = False):
    """y = [gelu](a @ w.T + b) by the stage kernel alone: form "ptr" (the layer kernel's loads) or "tma"."""
    from triton.tools.tensor_descriptor import TensorDescriptor
    bm, bn, bk, pipe, warps = tile
    m, k = a.shape
    n = w.shape[0]
    grid = (min(programs, -(-m // bm) * (n // bn)),)
    common = dict(M=m, NP=grid[0], N=n, K=k, BM=bm, BN=bn, BK=bk, PIPE=pipe, GELU=gelu, num_warps=warps)
    if form == "ptr":
        _gemm_ptr_kernel[grid](a, w, b, y, **common)
    else:
        _gemm_tma_kernel[grid](TensorDescriptor.from_tensor(a, [bm, bk]), TensorDescriptor.from_tensor(w, [bn, bk]),
                               b, y, **common)
    return y


def gemm_forms(layers, rows: int, programs: int, repeats: int, report: dict):
    """The layers' four GEMMs, each 24 times (one per layer's weights) in a graph: cuBLAS against the stage kernel
    with pointer loads and with TMA, every tile of GEMM_TILES, each checked against cuBLAS's result."""
    import torch
    import torch.nn.functional as F
    dev, dt = layers[0].qkv.weight.device, layers[0].qkv.weight.dtype
    shapes = {"qkv": ("qkv", False), "out": ("out", False), "ff1": ("ff1", True), "ff2": ("ff2", False)}
    g = torch.Generator(device=dev).manual_seed(2)
    for name, (attr, gelu) in shapes.items():
        lin = [getattr(l, attr) for l in layers]
        k, n = lin[0].in_features, lin[0].out_features
        a = torch.randn(rows, k, device=dev, dtype=dt, generator=g)
        y = torch.empty(rows, n, device=dev, dtype=dt)
        ref = F.linear(a.float(), lin[0].weight.float(), lin[0].bias.float())
        ref = F.gelu(ref) if gelu else ref
        with torch.no_grad():
            # FF1 as the fast backend runs it: bias and GELU in cuBLASLt's epilogue
            cublas = ((lambda L: torch._addmm_activation(L.bias, a, L.weight.t(), use_gelu=True)) if gelu else
                      (lambda L: F.linear(a, L.weight, L.bias)))
            t = statistics.median(graph_times(lambda: [cublas(L) for L in lin], 20, repeats))
        report["results"][f"gemm_{name}_cublas"] = {"p50_ms": t}
        print(f"{name} {rows}x{k}->{n}: cuBLAS x{len(lin)} p50 {t * 1000:.1f} us")
        for form in ("ptr", "tma"):
            for tile in GEMM_TILES:
                key = f"gemm_{name}_{form}_{'x'.join(map(str, tile))}"
                try:
                    if n % tile[1] or k % tile[2]:
                        continue
                    gemm_stage(form, a, lin[0].weight, lin[0].bias, y, tile, programs, gelu)
                    err = float((y.float() - ref).abs().max())
                    t = statistics.median(graph_times(
                        lambda: [gemm_stage(form, a, L.weight, L.bias, y, tile, programs, gelu) for L in lin],
                        20, repeats))
                except Exception as e:  # noqa: BLE001 — a tile that does not compile or fit is reported
                    report["results"][key] = {"error": f"{type(e).__name__}: {e}"[:300]}
                    print(f"  {form} {tile}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                report["results"][key] = {"p50_ms": t, "max_abs_vs_fp32": err}
                print(f"  {form} {tile}: p50 {t * 1000:.1f} us  max|d| vs fp32 {err:.4f}")


def torch_stages(layers, pls, repeats, report):
    """What cuBLAS / cuDNN take for each stage's work on the same buffers, 24 calls (one per layer) in a graph."""
    import torch
    import torch.nn.functional as F
    sc = pls[0].scratch
    heads = pls[0].heads
    m, h = sc["o_ptr"].shape

    def attn():
        q, k, v = sc["qkv_ptr"].view(1, m, 3, heads, h // heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)
    forms = {
        0: lambda l: F.layer_norm(sc["x1_ptr"], (h,), l.ln1.weight, l.ln1.bias, l.ln1.eps),
        1: lambda l: F.linear(sc["xn_ptr"], l.qkv.weight, l.qkv.bias),
        2: lambda l: attn(),
        3: lambda l: torch.addmm(l.out.bias, sc["o_ptr"], l.out.weight.t()),
        5: lambda l: torch._addmm_activation(l.ff1.bias, sc["xn2_ptr"], l.ff1.weight.t(), use_gelu=True),
        6: lambda l: torch.addmm(l.ff2.bias, sc["h_ptr"], l.ff2.weight.t()),
    }
    with torch.no_grad():
        for s, f in forms.items():
            st = statistics.median(graph_times(lambda: [f(l) for l in layers], 20, repeats))
            report["results"][f"torch_stage{s}"] = {"p50_ms": st}
            print(f"  torch form of stage {s} x{len(layers)}: p50 {st * 1000:.1f} us")


CONFIGS = {
    "a": Config(),
    "b": Config(bn_out=32, bn_ff2=32),
    "c": Config(warps=4, stages=4, bn_qkv=64, bn_ff1=64),
    "d": Config(block_k=128, stages=2),
    "e": Config(bn_qkv=64, bn_out=32, bn_ff1=64, bn_ff2=32, stages=4),
    "f": Config(bn_qkv=64, bn_out=32, bn_ff1=64, bn_ff2=32, stages=5, warps=4),
    "g": Config(block_m=128, bn_qkv=64, bn_out=32, bn_ff1=64, bn_ff2=32, stages=4),
    "h": Config(bn_qkv=32, bn_out=32, bn_ff1=32, bn_ff2=32, stages=4, warps=4),
}


def run_config(name, form, layers, x0, rows, sms, ref32, acc_c, a, report, breakdown: bool):
    """One config in one form: correctness (against FP32, the stage-by-stage launches, and itself over repeated
    runs: a race between programs shows as outputs that differ run to run), then the time of the 24 layers."""
    import torch
    cfg, key = CONFIGS[name], f"{name}:{form}"
    try:
        pls = [PersistentLayer(l, rows, cfg, sms, form) for l in layers]
        ys = [x0[0]] + [torch.empty_like(x0[0]) for _ in layers]

        def chain():
            for i, pl in enumerate(pls):
                pl(ys[i], ys[i + 1])
        t0 = time.perf_counter()
        chain()
        torch.cuda.synchronize()
        build_s = time.perf_counter() - t0
        first = ys[-1].clone()
        repeatable = True
        for _ in range(20):
            chain()
            repeatable &= bool(torch.equal(first, ys[-1]))
        stagewise = PersistentLayer(layers[0], rows, cfg, sms, "barrier")
        one = torch.empty_like(x0[0])
        for s in range(STAGES):
            stagewise(x0[0], one, stage=s)
        same = bool(torch.equal(one, ys[1]))
        acc = compare(ref32[0], ys[-1].float())
        t = graph_times(chain, 20, a.repeats)
        repeatable &= bool(torch.equal(first, ys[-1]))   # after the graph's replays too
        if breakdown:
            stage_breakdown(name, pls, ys, layers, a.repeats, report)
    except Exception as err:  # noqa: BLE001 — a config that does not compile or fit is reported, not fatal
        report["results"][key] = {"config": asdict(cfg), "error": f"{type(err).__name__}: {err}"[:400]}
        print(f"{key}: {type(err).__name__}: {str(err)[:300]}")
        return
    ok = acc["finite"] and acc["max_abs"] <= 2 * acc_c["max_abs"] + 1e-3 and repeatable
    lat = percentiles(t)
    report["results"][key] = {"config": asdict(cfg), "form": form, **lat, "vs_fp32": acc, "repeatable": repeatable,
                              "layer0_equals_stagewise": same, "ok": ok, "build_s": build_s}
    print(f"{key} {asdict(cfg)}: p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  vs fp32 {acc}  "
          f"repeatable {repeatable}  layer 0 == stage by stage {same}  {'OK' if ok else 'WRONG'}  "
          f"(first run {build_s:.1f} s)")


def stage_breakdown(name, pls, ys, layers, repeats, report):
    def stagewise():
        for i, pl in enumerate(pls):
            for s in range(STAGES):
                pl(ys[i], ys[i + 1], stage=s)
    sw = graph_times(stagewise, 20, repeats)
    report["results"][f"{name}_stagewise"] = {"p50_ms": statistics.median(sw)}
    print(f"config {name} launched stage by stage (no barriers): p50 {statistics.median(sw):.3f} ms")
    for s in range(STAGES):   # each stage alone, 24 launches (one per layer's weights)
        one_stage = lambda s=s: [pl(ys[i], ys[i + 1], stage=s) for i, pl in enumerate(pls)]  # noqa: E731
        st = statistics.median(graph_times(one_stage, 20, repeats))
        report["results"][f"{name}_stage{s}"] = {"p50_ms": st}
        print(f"  stage {s} x{len(pls)}: p50 {st * 1000:.1f} us")
    torch_stages(layers, pls, repeats, report)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="wav2vec2-large")
    p.add_argument("--rows", type=int, default=249)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--forms", default=",".join(PersistentLayer.FORMS))
    p.add_argument("--breakdown", action="store_true", help="time each stage alone (first config, barrier form)")
    p.add_argument("--gemms", action="store_true", help="only the GEMM stages alone: cuBLAS, pointer loads, TMA")
    p.add_argument("--check-cpu", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if triton is None:
        print("Triton is not installed", file=sys.stderr)
        return 2
    if a.check_cpu:
        return check_cpu("wav2vec2-tiny" if a.arch == "wav2vec2-large" else a.arch, min(a.rows, 40))
    import torch
    from core.envinfo import environment
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    # the fast backend's FP16 form: FF1's bias and GELU (tanh) in cuBLASLt's epilogue
    module, x0 = random_encoder(a.arch, "cuda", torch.float16, gelu_epilogue=True)
    rows = min(a.rows, x0.shape[1])
    x0 = x0[:, :rows].contiguous()
    layers = module.layers
    report = {"env": environment(), "rows": rows, "sms": sms, "repeats": a.repeats, "results": {}}
    print(f"{torch.cuda.get_device_name()} · {sms} SMs · torch {torch.__version__} · triton {triton.__version__}"
          f" · {len(layers)} layers · {rows} rows")

    if a.gemms:
        gemm_forms(layers, rows, sms, a.repeats, report)
        if a.json:
            a.json.write_text(json.dumps(report, indent=1))
        return 0

    # references: FP32 layers (accuracy) and the fast backend's form (the compiled layer, FP16), on the same input
    ref32 = x0.float()
    with torch.no_grad():
        layers32 = [copy.deepcopy(l).float() for l in layers]
        for l in layers32:
            l.gelu_epilogue = False   # exact GELU, as the model and the kernel
            ref32 = l(ref32, None)
    shared = torch.compile(type(layers[0]).forward, dynamic=False, fullgraph=True)
    xs = [x0] + [torch.empty_like(x0) for _ in layers]

    def compiled_chain():
        for i, l in enumerate(layers):
            xs[i + 1].copy_(shared(l, xs[i], None))
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled_chain()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        base = graph_times(compiled_chain, 20, a.repeats)
    acc_c = compare(ref32, xs[-1].float())
    lat = percentiles(base)
    report["results"]["compiled"] = {**lat, "vs_fp32": acc_c, "compile_s": compile_s}
    print(f"compiled layers (fast backend form): p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  vs fp32 {acc_c}")

    bar = torch.zeros(2, device=dev, dtype=torch.int32)
    for count in (6, 60):
        t = graph_times(lambda: _barriers_kernel[(sms,)](bar, sms, COUNT=count, num_warps=8), 20, a.repeats)
        report["results"][f"barriers{count}"] = {"p50_ms": statistics.median(t)}
        print(f"empty kernel, {count} grid barriers, {sms} programs: p50 {statistics.median(t) * 1000:.1f} us")

    for name in a.configs.split(","):
        for form in a.forms.split(","):
            run_config(name, form, layers, x0, rows, sms, ref32, acc_c, a, report,
                       breakdown=a.breakdown and form == "barrier" and name == a.configs.split(",")[0])
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
