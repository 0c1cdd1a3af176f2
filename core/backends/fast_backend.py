"""Fast GPU backend for wav2vec2-style CTC models: the same function as the Hugging Face model,
rewritten for speed (runtime "fast").

What it changes, each an exact reformulation (tests check them against the original on CPU):
  * weight norm of the positional conv folded into a plain weight once at load time (the
    parametrization recomputes the norm on every call);
  * Q, K and V projections fused into one matrix product; SDPA attention;
  * the feature encoder's convolutions channels-last, over the batch laid end to end (conv_flat);
  * padding is expressed by per-row *lengths*, from which every mask is derived inside the graph,
    so inputs padded to a fixed bucket give the same logits on the real frames as unpadded inputs;
    inputs that fill their bucket exactly run a mask-free variant (attention's mask-free kernels).
One approximation, in fp16 only: the first feed-forward GEMM applies bias + GELU in cuBLASLt's epilogue, whose
GELU is the tanh form (gelu_epilogue; checked against FP32 on the labelled set by bench/gpu_w1.py).
And the speed machinery on CUDA:
  * FP16/BF16 weights (layer norms and attention softmax still accumulate in FP32);
  * optional torch.compile (static shapes), its caches (Inductor's FX graph and autotune caches, Triton's kernels)
    persisted under artifacts/compile-cache, so a new process compiles a shape from cache (H200: 4 s a graph
    instead of 18, bench/NOTES.md);
  * one CUDA graph per (batch bucket, length bucket, masked/mask-free), captured lazily on first use, so a replay is
    a single launch instead of hundreds. Inputs longer than the largest bucket, or larger batches
    than the largest batch bucket, run eagerly (same code, no graph): any length works.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend

SPECS = ["fast:fp16:cuda", "fast:bf16:cuda", "fast:fp32:cuda"]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
BUCKETS_S = (1, 2, 3, 5, 8, 12, 16, 20)   # audio seconds; transcribe() windows are at most 20 s
BATCH_BUCKETS = (1, 2, 4, 8)
# "hybrid" runs the grouped positional conv as a GEMM up to this batch size and through cuDNN above it: the
# GEMM's unfolded windows grow with the batch (H100, bench/NOTES.md run 6: W1 1.77 ms GEMM vs 1.96 cuDNN;
# W2 6.15 ms GEMM vs 5.65 cuDNN).
POS_GEMM_MAX_BATCH = 2


def available(spec) -> tuple[bool, str]:
    if spec.precision not in DTYPES:
        return False, f"the fast backend runs fp16/bf16/fp32 only, not '{spec.precision}'"
    if spec.device == "cpu":  # a reference mode for tests: the same buckets and buffers, graphs emulated
        return (True, "") if spec.precision == "fp32" else (False, "on the CPU the fast backend runs fp32 only")
    if spec.device != "cuda":
        return False, f"the fast backend runs on 'cuda' (or 'cpu' for checks), not '{spec.device}'"
    try:
        import torch
    except ImportError:
        return False, "torch not installed: pip install torch"
    if not torch.cuda.is_available():
        return False, ("no CUDA GPU visible to PyTorch: CUDA graphs and FP16 kernels need an NVIDIA GPU "
                       "and a CUDA build of torch")
    if spec.precision == "bf16" and not torch.cuda.is_bf16_supported():
        return False, "this GPU has no bf16 support: use fast:fp16:cuda"
    return True, ""


def make(spec, loaded, **options):
    return FastBackend(spec, loaded, **options)


def use_compile_cache():
    """Inductor's and Triton's on-disk caches under artifacts/compile-cache (unless the environment already
    names them), so compiled kernels outlive /tmp and the process: a new process compiles from cache."""
    import os
    from ..paths import artifacts_dir
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    root = artifacts_dir() / "compile-cache"
    # importing torch._dynamo already writes Inductor's default (/tmp/torchinductor_<user>) into the environment:
    # only a directory the user chose is kept
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    return root


# ---------------------------------------------------------------- bucketing (pure, CPU-testable)

def choose_bucket(n: int, buckets) -> int | None:
    """The smallest bucket that holds n, or None when n is larger than every bucket."""
    fits = [b for b in sorted(buckets) if b >= n]
    return fits[0] if fits else None


def conv_out_length(n, config):
    """Feature frames for n samples (ints or an integer tensor): the feature encoder's conv arithmetic."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        n = (n - kernel) // stride + 1
    return n


# ---------------------------------------------------------------- the reformulated model

def _folded_conv_weight(conv):
    """The effective weight of a (possibly weight-normed) conv as a plain tensor: weight norm folded once."""
    import torch
    with torch.no_grad():
        return conv.weight.detach().clone()  # a parametrized module computes g * v / ||v|| here


def conv_as_gemm(x, weight, bias, stride: int = 1, groups: int = 1, padding: int = 0, out_len: int | None = None):
    """Conv1d on channels-last x [B, T, Cin] as one (batched) matrix product over unfolded windows.
    weight is the conv's [Cout, Cin/groups, K]. Same sums as the cuDNN conv, but without its layout
    transposes and, for the grouped positional conv, without one launch per group (seen in the profile:
    16 launches of ~130 us for W1)."""
    import torch.nn.functional as F
    b, _, cin = x.shape
    cout, cg, k = weight.shape
    if padding:
        x = F.pad(x, (0, 0, padding, padding))
    win = x.unfold(1, k, stride)                       # [B, Tout, Cin, K], a view
    if out_len is not None:
        win = win[:, :out_len]
    tout = win.shape[1]
    if groups == 1:
        y = win.reshape(b, tout, cin * k) @ weight.reshape(cout, cin * k).t()
    else:
        win = win.reshape(b, tout, groups, cg * k).transpose(1, 2)               # [B, G, Tout, Cg*K]
        w = weight.reshape(groups, cout // groups, cg * k).transpose(1, 2)       # [G, Cg*K, Cout/G]
        y = (win @ w).transpose(1, 2).reshape(b, tout, cout)
    return y if bias is None else y + bias


def conv_flat(x, chunks, bias, stride: int):
    """Conv1d over a whole batch laid end to end: x [N, Cin] (contiguous; N = B * rows per item, rows per item
    a multiple of stride), chunks the [taps*Cin, Cout] matrices of tap_runs(weight, stride) with G=1
    -> [N / stride, Cout], one output row per `stride` input rows. Each run of taps is a
    *view* of x (x as [N / stride, stride*Cin] rows, shifted by the run's index, the columns of its taps: no
    copy) times its weight, so there are no unfolded windows and no layout transposes. Rows whose window
    crosses into the next item are computed and left unused (each item has spare rows at its end, see
    FeatureEncoder.forward); the shifted runs lack the last rows, which are zero-padded."""
    import torch.nn.functional as F
    n, cin = x.shape
    u = n // stride
    rows = x.contiguous().view(u, stride * cin)   # row r: input rows r*stride .. r*stride + stride - 1
    y = None
    for j, w in enumerate(chunks):                # taps j*stride ..: row r + j of `rows`, its first taps*cin columns
        p = rows[j:, :w.shape[0]] @ w
        if j:
            p = F.pad(p, (0, 0, 0, j))
        y = p if y is None else y + p
    return y if bias is None else y + bias


POS_TAPS = 16  # taps per run of the positional conv in grouped_conv_runs


def tap_runs(weight, taps: int, groups: int = 1):
    """A (grouped) conv's [Cout, Cin/G, K] weight as [G, taps*Cin/G, Cout/G] matrices, one per run of `taps`
    consecutive taps (the last may be shorter), rows ordered (tap, channel) like the rows they multiply:
    what conv_flat (G=1, a run per stride) and grouped_conv_runs multiply."""
    cout, cg, k = weight.shape
    w = weight.reshape(groups, cout // groups, cg, k)
    return [w[..., m:m + taps].permute(0, 3, 2, 1).reshape(groups, -1, cout // groups).contiguous()
            for m in range(0, k, taps)]


def grouped_conv_runs(x, runs, bias, groups: int, padding: int, kernel: int, out_len: int, taps: int = POS_TAPS):
    """The grouped positional conv on channels-last x [B, T, C] -> [B, out_len, C], as batched GEMMs over the
    groups. The padded items are laid end to end; one copy holds, for every row, the next `taps` rows of
    its group's channels ([G, rows, taps*C/G], taps/K of the fully unfolded windows); run m's product reads
    that copy shifted by m*taps rows (a view) and the runs are summed. Windows that cross into the next
    item give rows that are dropped. cuDNN ran this conv one group at a time with a generic kernel (H200
    profile, batch 8: 16 x 145 us per forward)."""
    import torch
    import torch.nn.functional as F
    b, _, c = x.shape
    span = x.shape[1] + 2 * padding                                   # rows per padded item
    flat = F.pad(x, (0, 0, padding, padding)).reshape(b * span, groups, c // groups)
    flat = F.pad(flat, (0, 0, 0, 0, 0, taps - 1))                    # so a short last run has rows too
    win = flat.unfold(0, taps, 1).permute(1, 0, 3, 2).reshape(groups, b * span, -1)   # the copy
    r = b * span - kernel + 1                                         # rows whose window stays in the data
    y = None
    for m, w in enumerate(runs):
        p = torch.bmm(win[:, m * taps:m * taps + r, :w.shape[1]], w)  # [G, r, C/G]
        y = p if y is None else y + p
    y = F.pad(y, (0, 0, 0, b * span - r)).view(groups, b, span, -1)[:, :, :out_len]
    y = y.permute(1, 2, 0, 3).reshape(b, out_len, c)
    return y if bias is None else y + bias


def build_module(hf_model, conv: str = "flat", gelu_epilogue: bool = False):
    """A torch.nn.Module computing Wav2Vec2ForCTC's logits from (input_values [B,T], lengths [B]).
    conv: how the convolutions run: "gemm" (all as matrix products over unfolded windows on channels-last
    tensors), "cudnn" (all through F.conv1d), "hybrid" (feature encoder through cuDNN, grouped positional conv
    as a GEMM for batches up to POS_GEMM_MAX_BATCH, cuDNN above: on an H100 the unfolded windows cost more
    than cuDNN's convs for the feature encoder and for large batches, see bench/NOTES.md), "flat" (feature
    encoder channels-last through conv_flat, positional conv through grouped_conv_runs; the default: fastest
    on an H200, bench/NOTES.md runs 8-10). gelu_epilogue: the first feed-forward GEMM applies its bias and GELU
    in cuBLASLt's epilogue (torch._addmm_activation) instead of a separate pass over its output; on CUDA that
    GELU is the tanh approximation (exact on the CPU), so it is an approximation, checked by bench/gpu_w1.py."""
    if conv not in ("gemm", "cudnn", "hybrid", "flat"):
        raise ValueError(f"conv must be gemm, cudnn, hybrid or flat, not {conv!r}")
    import torch
    from torch import nn
    import torch.nn.functional as F

    cfg = hf_model.config
    w2v = hf_model.wav2vec2
    if getattr(w2v, "adapter", None) is not None or getattr(cfg, "adapter_attn_dim", None) is not None:
        raise BackendUnavailableError("The fast backend does not support wav2vec2 adapters.",
                                      "Use torch:fp16:cuda or an ONNX/TensorRT backend for this model.")
    if cfg.model_type not in ("wav2vec2",):
        raise BackendUnavailableError(f"The fast backend supports wav2vec2 CTC models, not '{cfg.model_type}'.",
                                      "Use torch:fp16:cuda or an ONNX/TensorRT backend for this model.")

    class FeatureEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            layers = w2v.feature_extractor.conv_layers
            self.convs = nn.ModuleList(copy.deepcopy(l.conv) for l in layers)
            self.norm = cfg.feat_extract_norm  # "layer": LN per conv over channels; "group": first conv only
            self.norms = nn.ModuleList(copy.deepcopy(l.layer_norm) for l in layers if hasattr(l, "layer_norm"))
            self.act = layers[0].activation
            self.geometry = [(c.kernel_size[0], c.stride[0]) for c in self.convs]   # plain ints: static when compiled
            self.later_stride = math.prod(s for _, s in self.geometry[1:])
            if conv == "flat":
                w0 = self.convs[0].weight.detach()[:, 0, :]                              # [C, K0]
                self.register_buffer("w0", F.pad(w0, (0, -w0.shape[1] % 8)).t().contiguous())  # [K0 -> x8, C]
                for i, c in enumerate(self.convs[1:], 1):
                    for j, w in enumerate(tap_runs(c.weight.detach(), c.stride[0])):
                        self.register_buffer(f"chunk{i}_{j}", w[0])

        def forward(self, x, lengths):
            if conv == "flat":
                return self._forward_flat(x, lengths)
            h = x[:, :, None]                                    # channels-last [B, T, C]
            for i, c in enumerate(self.convs):
                if conv == "gemm":
                    h = conv_as_gemm(h, c.weight, c.bias, c.stride[0])
                else:
                    h = c(h.transpose(1, 2)).transpose(1, 2)
                h = self._norm_act(i, h, lengths)
            return h  # [B, frames, C]

        def _norm_act(self, i, h, lengths):
            if self.norm == "layer":
                h = self.norms[i](h)
            elif i == 0:
                h = self._masked_group_norm(h, lengths, self.convs[0])
            return self.act(h)

        def _forward_flat(self, x, lengths):
            # Each item gets `rows` frames after the first conv, rounded up to a multiple of every later
            # stride, so the later convs can run over the batch laid end to end (conv_flat); the spare
            # frames are computed from zero-padded audio and dropped at the end (valid frames never read them).
            b = x.shape[0]
            c0 = self.convs[0]
            (k0, s0), later = self.geometry[0], self.geometry[1:]
            t = (x.shape[1] - k0) // s0 + 1
            rows = -(-t // self.later_stride) * self.later_stride
            win = F.pad(x, (0, s0 * (rows - 1) + k0 - x.shape[1])).unfold(1, k0, s0)     # [B, rows, K0] view
            # the first conv (one input channel) as a GEMM over its windows, zero-padded to 8k taps so the rows
            # are aligned for the tensor cores (H200 profile: as fused sums of products it took 0.48 ms at W2)
            h = F.pad(win, (0, self.w0.shape[0] - k0)) @ self.w0
            h = h if c0.bias is None else h + c0.bias
            h = self._norm_act(0, h, lengths)
            for i, (k, s) in enumerate(later, 1):
                chunks = [getattr(self, f"chunk{i}_{j}") for j in range(-(-k // s))]
                h = conv_flat(h.reshape(b * rows, -1), chunks, self.convs[i].bias, s).view(b, rows // s, -1)
                rows //= s
                t = (t - k) // s + 1
                h = self._norm_act(i, h, lengths)
            return h[:, :t]

        def _masked_group_norm(self, h, lengths, c):
            # GroupNorm with one group per channel normalises over time: take the statistics over the
            # frames of real audio only, so padding to a bucket does not change them.
            gn = self.norms[0]
            n = (lengths - c.kernel_size[0]) // c.stride[0] + 1
            m = (torch.arange(h.shape[1], device=h.device)[None] < n[:, None]).to(torch.float32)[..., None]
            hf = h.float()
            count = m.sum(1, keepdim=True)
            mean = (hf * m).sum(1, keepdim=True) / count
            var = (((hf - mean) * m) ** 2).sum(1, keepdim=True) / count
            out = (hf - mean) * torch.rsqrt(var + gn.eps)
            return (out * gn.weight.float() + gn.bias.float()).to(h.dtype)

    class Layer(nn.Module):
        def __init__(self, hf_layer):
            super().__init__()
            a = hf_layer.attention
            self.heads = a.num_heads
            hidden = a.q_proj.in_features
            self.qkv = nn.Linear(hidden, 3 * hidden)  # fused: one GEMM instead of three
            with torch.no_grad():
                self.qkv.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
                self.qkv.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            self.out = copy.deepcopy(a.out_proj)
            self.ln1 = copy.deepcopy(hf_layer.layer_norm)
            self.ln2 = copy.deepcopy(hf_layer.final_layer_norm)
            ff = hf_layer.feed_forward
            self.ff1, self.ff2 = copy.deepcopy(ff.intermediate_dense), copy.deepcopy(ff.output_dense)
            self.act = ff.intermediate_act_fn
            self.gelu_epilogue = gelu_epilogue and cfg.hidden_act == "gelu"
            self.stable = cfg.do_stable_layer_norm

        def attention(self, x, mask):
            b, t, h = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.out(o.transpose(1, 2).reshape(b, t, h))

        def feed_forward(self, x):
            if not self.gelu_epilogue:
                return self.ff2(self.act(self.ff1(x)))
            b, t, h = x.shape
            y = torch._addmm_activation(self.ff1.bias, x.reshape(b * t, h), self.ff1.weight.t(), use_gelu=True)
            return self.ff2(y.view(b, t, -1))

        def forward(self, x, mask):
            if self.stable:
                x = x + self.attention(self.ln1(x), mask)
                return x + self.feed_forward(self.ln2(x))
            x = self.ln1(x + self.attention(x, mask))
            return self.ln2(x + self.feed_forward(x))

    class FastWav2Vec2(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = cfg
            self.features = FeatureEncoder()
            self.proj_ln = copy.deepcopy(w2v.feature_projection.layer_norm)
            self.proj = copy.deepcopy(w2v.feature_projection.projection)
            pc = w2v.encoder.pos_conv_embed.conv
            self.pos_conv = nn.Conv1d(pc.in_channels, pc.out_channels, pc.kernel_size[0], padding=pc.padding[0],
                                      groups=pc.groups)
            with torch.no_grad():
                self.pos_conv.weight.copy_(_folded_conv_weight(pc))
                self.pos_conv.bias.copy_(pc.bias)
            if conv == "flat":
                for m, w in enumerate(tap_runs(self.pos_conv.weight.detach(), POS_TAPS, self.pos_conv.groups)):
                    self.register_buffer(f"pos_run{m}", w)
            self.pos_act = w2v.encoder.pos_conv_embed.activation
            self.enc_ln = copy.deepcopy(w2v.encoder.layer_norm)
            self.layers = nn.ModuleList(Layer(l) for l in w2v.encoder.layers)
            self.lm_head = copy.deepcopy(hf_model.lm_head)
            self.stable = cfg.do_stable_layer_norm

        @property
        def pos_runs(self):
            return [getattr(self, f"pos_run{m}") for m in range(-(-self.pos_conv.kernel_size[0] // POS_TAPS))]

        def forward(self, input_values, lengths, full: bool = False):
            """input_values [B,T] (processor-normalised, zero padded), lengths [B] int64 samples of real audio
            -> logits [B, frames(T), vocab]; frames beyond a row's length are not meaningful. full=True says
            every row is real audio to the end (lengths == T): then nothing is masked, which lets attention
            take its mask-free kernels; the caller must know it (a static choice per captured graph)."""
            x, mask = self.front(input_values, lengths, full)
            for layer in self.layers:
                x = layer(x, mask)
            return self.head(x)

        def front(self, input_values, lengths, full: bool):
            """Feature encoder, projection and positional conv -> the first layer's input and the attention mask."""
            h = self.features(input_values, lengths)
            x = self.proj(self.proj_ln(h))
            keep = None
            if not full:
                frames = conv_out_length(lengths, cfg).clamp(min=1)
                keep = torch.arange(x.shape[1], device=x.device)[None] < frames[:, None]   # [B, F]
                x = x * keep[..., None].to(x.dtype)                          # HF zeroes padded frames
            pc, t = self.pos_conv, x.shape[1]
            if conv == "flat":
                pos = grouped_conv_runs(x, self.pos_runs, pc.bias, pc.groups, pc.padding[0], pc.kernel_size[0], t)
            elif conv == "gemm" or (conv == "hybrid" and x.shape[0] <= POS_GEMM_MAX_BATCH):  # static per shape
                pos = conv_as_gemm(x, pc.weight, pc.bias, groups=pc.groups, padding=pc.padding[0], out_len=t)
            else:
                pos = pc(x.transpose(1, 2))[..., :t].transpose(1, 2)   # [:t]: HF's SamePad layer
            x = x + self.pos_act(pos)
            if not self.stable:
                x = self.enc_ln(x)
            mask = None if full else keep[:, None, None, :]              # keys of real frames only
            return x, mask

        def head(self, x):
            return self.lm_head(self.enc_ln(x) if self.stable else x)

    return FastWav2Vec2().eval()


def compile_regions(module, mode=None):
    """torch.compile the fast module by region: the front, one encoder layer's code shared by all layers (their
    weights are graph inputs, so 24 layers make one graph per shape, not 24 copies inside one), and the head. A new
    shape then costs three small compiles instead of one of the whole model: on the CPU, wav2vec2-large's second
    shape took 0.84 s against 2.07 s from a warm cache, 2.7 s against 19.7 s cold (bench/NOTES.md, 2026-12-02).
    Fusion stops at the regions' edges. Returns the module, its regions replaced in place."""
    import functools
    import torch
    opts = dict(mode=mode, dynamic=False, fullgraph=True)
    module.front = torch.compile(module.front, **opts)
    shared = torch.compile(type(module.layers[0]).forward, **opts)
    for layer in module.layers:
        layer.forward = functools.partial(shared, layer)
    module.head = torch.compile(module.head, **opts)
    return module


# ---------------------------------------------------------------- the backend

class _Replay:
    """A CUDA graph's stand-in on the CPU: replay() recomputes into the same static output buffer."""

    def __init__(self, fn):
        self.replay = fn


class FastBackend(Backend):
    """Options: compile (None | "default" | "max-autotune-no-cudagraphs" | "aoti": AOTInductor packages per bucket
    shape, see aoti_cache; CPU only), graphs (CUDA graphs; default on
    for CUDA), buckets_s (length buckets in seconds), batch_buckets, pad (pad to buckets even without graphs),
    conv ("flat" | "hybrid" | "gemm" | "cudnn": how the convolutions run, see build_module), mask_free (inputs
    that fill their bucket run the mask-free variant; False forces masks, for comparison), gelu_epilogue (see
    build_module; None: on for fp16 only. H200 run 12, bench/NOTES.md: fp16 W2 3.88 -> 3.70 ms with all 36 demo
    transcripts unchanged; bf16 with it changed one transcript, +0.51 WER points, past the 0.5 limit),
    compile_scope ("whole": one graph per shape; "layer": see compile_regions; not measured on a GPU yet)."""
    runtime = "fast"

    def __init__(self, spec, loaded, compile: str | None = "default", graphs: bool | None = None,
                 buckets_s=BUCKETS_S, batch_buckets=BATCH_BUCKETS, pad: bool | None = None, conv: str = "flat",
                 mask_free: bool = True, gelu_epilogue: bool | None = None, compile_scope: str = "whole"):
        super().__init__(spec)
        # refused before anything loads, on any machine: a segfault would take the caller (the dashboard) with it
        if compile == "aoti" and spec.device == "cuda":
            raise BackendUnavailableError(
                "compile='aoti' does not run on CUDA here: loading any AOTInductor package segfaults the process "
                "(torch 2.11.0+cu130 on an H200, 2026-12-02, even for a two-layer module; bench/aoti_load_probe.py).",
                "Use the default compile (torch.compile with its persisted cache); aoti runs on the CPU.")
        ok, why = available(spec)
        if not ok:
            raise BackendUnavailableError(f"Backend {spec} is not available: {why}.", "Pick another backend.")
        self.loaded = loaded
        cuda = spec.device == "cuda"
        if compile not in (None, "default", "max-autotune-no-cudagraphs", "aoti"):
            raise BackendUnavailableError(f"Unknown compile mode '{compile}'.",
                                          "Use default, max-autotune-no-cudagraphs, aoti or none.")
        if compile_scope not in ("whole", "layer"):
            raise BackendUnavailableError(f"Unknown compile scope '{compile_scope}'.", "Use whole or layer.")
        self.compile_scope = compile_scope
        # torch.compile only on CUDA (the CPU is the tests' reference mode); AOTInductor packages on the CPU
        self.compile_mode = compile if cuda or compile == "aoti" else None
        # on the CPU (the reference mode for tests) graphs are emulated: same buckets, static buffers and replay
        self.use_graphs = True if graphs is None else graphs
        self.pad = self.use_graphs if pad is None else pad
        rate = loaded.sample_rate
        self.buckets = tuple(int(round(s * rate)) for s in sorted(buckets_s))
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.use_mask = loaded.uses_attention_mask
        self.conv = conv
        self.mask_free = mask_free
        self.gelu_epilogue = spec.precision == "fp16" if gelu_epilogue is None else gelu_epilogue
        self.module = None
        self.graphs: dict = {}
        self.stats = {"graph": 0, "eager": 0}

    def load(self):
        import torch
        self.dtype = getattr(torch, DTYPES[self.precision])
        module = build_module(self.loaded.model, self.conv, self.gelu_epilogue).to(device=self.device, dtype=self.dtype)
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self.call = module
        self.packages: dict = {}   # compile="aoti": one package per bucket shape (_shape_call); others run eagerly
        if self.compile_mode:
            use_compile_cache()
        if self.compile_mode not in (None, "aoti"):
            mode = None if self.compile_mode == "default" else self.compile_mode
            import torch._dynamo as dynamo
            for knob in ("recompile_limit", "cache_size_limit"):  # one compile per bucket shape
                if hasattr(dynamo.config, knob):
                    setattr(dynamo.config, knob, max(getattr(dynamo.config, knob), 64))
            self.call = (compile_regions(module, mode) if self.compile_scope == "layer" else
                         torch.compile(module, mode=mode, dynamic=False, fullgraph=True))
        if self.device == "cuda" and self.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here, not TF32
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs and self.device == "cuda" else None
        return self

    def capture_all(self) -> int:
        """Compile and capture every (batch bucket, length bucket, masked/mask-free) graph now instead of on
        first use: a server's or a long transcription's first requests then pay nothing. Returns how many."""
        for bb in self.batch_buckets:
            for tb in self.buckets:
                for full in ((True, False) if self.mask_free else (False,)):
                    if (bb, tb, full) not in self.graphs:
                        self._capture(bb, tb, full)
        return len(self.graphs)

    def lengths_of(self, input_values, attention_mask):
        """Per-row real samples: the mask's sum for models that take one, else the full (padded) width,
        which is what the Hugging Face model sees when it is given no mask."""
        b, t = input_values.shape
        if attention_mask is None or not self.use_mask:
            return np.full(b, t, np.int64)
        return np.asarray(attention_mask).sum(-1).astype(np.int64)

    def forward(self, values, lengths):
        """values [B,T] (a device tensor in the backend's dtype) and lengths [B] (int64 samples of real audio,
        a host numpy array: known on the host, the mask-free graph is picked without a device sync) -> device
        logits [B, frames(T), vocab]. A graph's output buffer is reused by its next replay: copy it if kept."""
        import torch
        b, t = values.shape
        lengths = np.asarray(lengths, dtype=np.int64)
        with torch.inference_mode():
            tb = choose_bucket(t, self.buckets) if self.pad else t
            bb = choose_bucket(b, self.batch_buckets) if self.pad else b
            if tb is None or bb is None:
                if bb is None and b > self.batch_buckets[-1] and tb is not None:  # split big batches
                    # each piece is copied out before the next replay overwrites its graph's output buffer
                    step = self.batch_buckets[-1]
                    return torch.cat([self.forward(values[i:i + step], lengths[i:i + step]).clone()
                                      for i in range(0, b, step)])
                self.stats["eager"] += 1
                full = self.mask_free and bool((lengths == t).all())
                return self.module(values, self._device(lengths), full=full)
            frames = int(conv_out_length(t, self.loaded.model.config))
            padded = np.full(bb, tb, np.int64)   # padded rows get the full length: finite, and dropped below
            padded[:b] = lengths
            full = self.mask_free and bool((padded == tb).all())    # every row real audio to the end
            if not self.use_graphs:
                x = values
                if (b, t) != (bb, tb):
                    x = torch.zeros((bb, tb), dtype=values.dtype, device=values.device)
                    x[:b, :t] = values
                self.stats["eager"] += 1
                n = self._device(padded)
                return self._shape_call(x, n, full)(x, n, full=full)[:b, :frames]
            g, x_static, n_static, out = self.graphs.get((bb, tb, full)) or self._capture(bb, tb, full)
            if (b, t) != (bb, tb):
                x_static.zero_()
            x_static[:b, :t].copy_(values)
            if not full:  # a full graph was captured with every length at tb
                n_static.copy_(torch.from_numpy(padded))
            g.replay()
            if not isinstance(g, torch.cuda.CUDAGraph):   # emulated: model the shared pool's reuse (see _capture)
                for key, other in self.graphs.items():
                    if key != (bb, tb, full):
                        other[3].fill_(float("nan"))
            self.stats["graph"] += 1
            return out[:b, :frames]

    def _shape_call(self, x, n, full: bool):
        """What computes a bucket shape: the (compiled) module, or with compile="aoti" this shape's AOTInductor
        package (core.backends.aoti_cache: built once, loaded with this module's weights)."""
        if self.compile_mode != "aoti":
            return self.call
        shape = (tuple(x.shape), full)
        if shape not in self.packages:
            from ..paths import artifacts_dir
            from .aoti_cache import package_key, shape_runner
            config = {k: v for k, v in self.loaded.model.config.to_dict().items()
                      if not k.startswith("_") and k != "transformers_version"}
            options = {"conv": self.conv, "gelu_epilogue": self.gelu_epilogue}
            key = package_key(config, options, self.dtype, x.device, (x, n), {"full": full})
            self.packages[shape] = shape_runner(self.module, (x, n), {"full": full}, key,
                                                artifacts_dir() / "compile-cache" / "aoti", self.stats)
        return self.packages[shape]

    def _device(self, lengths):
        import torch
        return torch.from_numpy(lengths).to(self.device)

    def _capture(self, bb, tb, full):
        """A graph for one (batch bucket, length bucket, mask-free) shape with its static input, lengths and
        output buffers. Graphs share one memory pool, so a replay may overwrite another graph's output: a result
        is only valid until the next replay of any graph. On the CPU the graph is emulated (_Replay) with the
        same buffers, and a replay poisons every other graph's output with NaN, so a test on the CPU fails where
        a CUDA run would return overwritten logits."""
        import torch
        x = (0.1 * torch.randn((bb, tb), device=self.device)).to(self.dtype)  # never zeros
        n = torch.full((bb,), tb, dtype=torch.int64, device=self.device)
        call = self._shape_call(x, n, full)
        if self.device != "cuda":
            out = call(x, n, full=full).clone()
            self.graphs[(bb, tb, full)] = (_Replay(lambda: out.copy_(call(x, n, full=full))), x, n, out)
            return self.graphs[(bb, tb, full)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compiles (if torch.compile) and lets cuBLAS/cuDNN pick kernels
                call(x, n, full=full)
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        # torch.cuda.graph's default capture stream is created once, on the GPU current at its first use: a
        # backend on another GPU of the same process (Triton instances over GPUs) must capture on its own stream
        with torch.cuda.graph(g, pool=self.pool, stream=stream):
            out = call(x, n, full=full)
        self.graphs[(bb, tb, full)] = (g, x, n, out)
        return self.graphs[(bb, tb, full)]

    def tensors(self, input_values, attention_mask=None):
        """numpy -> what forward() takes: the values as a device tensor, the lengths on the host."""
        import torch
        x = torch.from_numpy(np.ascontiguousarray(input_values, dtype=np.float32)).to(self.device, self.dtype)
        return x, self.lengths_of(input_values, attention_mask)

    def prepare(self, input_values, attention_mask=None):
        return self.tensors(input_values, attention_mask)

    def run(self, prepared):
        return self.forward(*prepared)

    def to_host(self, out):
        return out.float().cpu().numpy()

    def close(self):
        self.graphs.clear()
        self.module = self.call = None
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


__all__ = ["SPECS", "available", "make", "FastBackend", "build_module", "choose_bucket", "conv_as_gemm",
           "conv_flat", "conv_out_length", "grouped_conv_runs", "tap_runs"]
