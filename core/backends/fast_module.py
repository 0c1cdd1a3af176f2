"""The fast backend's module: Wav2Vec2ForCTC's logits rewritten for speed, each change an exact reformulation
(tests check them against the Hugging Face model on the CPU), and the convolution forms it uses. Its classes live at
the top level so that torch.compile can save what it compiles for them (a class defined inside a function cannot
be saved). core/backends/fast_backend.py runs it: buckets, CUDA graphs, compile modes."""
from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackendUnavailableError

# "hybrid" runs the grouped positional conv as a GEMM up to this batch size and through cuDNN above it: the
# GEMM's unfolded windows grow with the batch (H100, bench/NOTES.md run 6: W1 1.77 ms GEMM vs 1.96 cuDNN;
# W2 6.15 ms GEMM vs 5.65 cuDNN).
POS_GEMM_MAX_BATCH = 2


def conv_out_length(n, config):
    """Feature frames for n samples (ints or an integer tensor): the feature encoder's conv arithmetic."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        n = (n - kernel) // stride + 1
    return n


# ---------------------------------------------------------------- the reformulated model

def _folded_conv_weight(conv):
    """The effective weight of a (possibly weight-normed) conv as a plain tensor: weight norm folded once."""
    with torch.no_grad():
        return conv.weight.detach().clone()  # a parametrized module computes g * v / ||v|| here


def conv_as_gemm(x, weight, bias, stride: int = 1, groups: int = 1, padding: int = 0, out_len: int | None = None):
    """Conv1d on channels-last x [B, T, Cin] as one (batched) matrix product over unfolded windows.
    weight is the conv's [Cout, Cin/groups, K]. Same sums as the cuDNN conv, but without its layout
    transposes and, for the grouped positional conv, without one launch per group (seen in the profile:
    16 launches of ~130 us for W1)."""
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


def conv_flat(rows, chunks, bias):
    """Conv1d over a whole batch laid end to end: its N input frames [N, Cin] given as rows [U, stride*Cin]
    (U = N / stride; row r holds frames r*stride .. r*stride + stride - 1; each item has a multiple of stride frames),
    chunks the [taps*Cin, Cout] matrices of tap_runs(weight, stride) with G=1 -> [U, Cout], one output frame per row.
    Each run of taps is a *view* of the rows (shifted by the run's index, the columns of its taps: no copy) times its
    weight, so there are no unfolded windows and no layout transposes. Rows whose window crosses into the next item
    are computed and left unused (each item has spare rows at its end, see FeatureEncoder.forward); the shifted runs
    lack the last rows, which are zero-padded."""
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


class FeatureEncoder(nn.Module):
    def __init__(self, hf_model, conv: str):
        super().__init__()
        cfg, layers = hf_model.config, hf_model.wav2vec2.feature_extractor.conv_layers
        self.conv_mode = conv
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
        if self.conv_mode == "flat":
            return self._forward_flat(x, lengths)
        h = x[:, :, None]                                    # channels-last [B, T, C]
        for i, c in enumerate(self.convs):
            if self.conv_mode == "gemm":
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
        (k0, s0), later = self.geometry[0], self.geometry[1:]
        t = (x.shape[1] - k0) // s0 + 1
        rows = -(-t // self.later_stride) * self.later_stride
        win = F.pad(x, (0, s0 * (rows - 1) + k0 - x.shape[1])).unfold(1, k0, s0)     # [B, rows, K0] view
        h = self.first_conv(F.pad(win, (0, self.w0.shape[0] - k0)))
        if self.norm != "layer":
            h = self.act(self._masked_group_norm(h, lengths, self.convs[0]))
        for i, (k, s) in enumerate(later, 1):
            rows //= s
            h = self.conv_rows(h.reshape(b * rows, -1), i)   # [B * rows, s * C]: s input frames per row
            t = (t - k) // s + 1
        return h.view(b, rows, -1)[:, :t]

    def first_conv(self, win):
        """The first conv (one input channel) as a GEMM over its windows [B, rows, K0 -> x8], zero-padded to 8k
        taps so the rows are aligned for the tensor cores (H200 profile: as fused sums of products it took 0.48 ms
        at W2); with per-conv LayerNorm, its norm and activation too (per frame)."""
        bias = self.convs[0].bias
        h = win @ self.w0
        h = h if bias is None else h + bias
        return self._row_norm_act(0, h) if self.norm == "layer" else h

    def conv_rows(self, rows, i: int):
        """Conv i >= 1 over the batch laid end to end, given as rows [U, stride * C] (conv_flat), with its norm
        (per-conv LayerNorm) and activation -> [U, C]. No batch or time dimension: compiled apart (compile_regions,
        scope "encoder"), its one symbol is U, so no strided-length arithmetic reaches Dynamo."""
        chunks = [getattr(self, f"chunk{i}_{j}") for j in range(-(-self.geometry[i][0] // self.geometry[i][1]))]
        return self._row_norm_act(i, conv_flat(rows, chunks, self.convs[i].bias))

    def _row_norm_act(self, i, h):
        return self.act(self.norms[i](h) if self.norm == "layer" else h)

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
    def __init__(self, hf_layer, cfg, gelu_epilogue: bool):
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
    def __init__(self, hf_model, conv: str, gelu_epilogue: bool):
        super().__init__()
        cfg, w2v = hf_model.config, hf_model.wav2vec2
        self.config = cfg
        self.conv_mode = conv
        self.features = FeatureEncoder(hf_model, conv)
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
        self.layers = nn.ModuleList(Layer(l, cfg, gelu_epilogue) for l in w2v.encoder.layers)
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
        return self.embed(self.features(input_values, lengths), lengths, full)

    def embed(self, h, lengths, full: bool):
        """The feature encoder's frames h [B, F, C] -> projection and positional conv (see front)."""
        x = self.proj(self.proj_ln(h))
        keep = None
        if not full:
            frames = conv_out_length(lengths, self.config).clamp(min=1)
            keep = torch.arange(x.shape[1], device=x.device)[None] < frames[:, None]   # [B, F]
            x = x * keep[..., None].to(x.dtype)                          # HF zeroes padded frames
        pc, t = self.pos_conv, x.shape[1]
        if self.conv_mode == "flat":
            pos = grouped_conv_runs(x, self.pos_runs, pc.bias, pc.groups, pc.padding[0], pc.kernel_size[0], t)
        elif self.conv_mode == "gemm" or (self.conv_mode == "hybrid" and x.shape[0] <= POS_GEMM_MAX_BATCH):
            # the batch size is static per compiled shape
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
    cfg, w2v = hf_model.config, hf_model.wav2vec2
    if getattr(w2v, "adapter", None) is not None or getattr(cfg, "adapter_attn_dim", None) is not None:
        raise BackendUnavailableError("The fast backend does not support wav2vec2 adapters.",
                                      "Use torch:fp16:cuda or an ONNX/TensorRT backend for this model.")
    if cfg.model_type not in ("wav2vec2",):
        raise BackendUnavailableError(f"The fast backend supports wav2vec2 CTC models, not '{cfg.model_type}'.",
                                      "Use torch:fp16:cuda or an ONNX/TensorRT backend for this model.")
    return FastWav2Vec2(hf_model, conv, gelu_epilogue).eval()


def compile_regions(module, mode=None, options=None, dynamic_batch: bool = False, dynamic_time: bool = False,
                    front: bool = True):
    """torch.compile the fast module by region: the front, one encoder layer's code shared by all layers (their
    weights are graph inputs, so 24 layers make one graph per shape, not 24 copies inside one), and the head. A new
    shape then costs three small compiles instead of one of the whole model: on the CPU, wav2vec2-large's second
    shape took 1.42 s against 2.03 s from a warm cache, 8.0 s against 20.2 s cold (bench/NOTES.md, 2026-12-02).
    Fusion stops at the regions' edges. dynamic_batch / dynamic_time: the caller marks the front's inputs; every
    other region's inputs are a previous region's outputs, which carry no marks, so they are marked here (the batch
    from 2 up, as the caller does: torch specializes a batch of 1). front=False compiles the front by its parts
    instead (scope "encoder"): the feature encoder's first conv, each later conv (conv_rows: one symbol, the rows of
    the batch laid end to end; conv "flat" only, other forms leave the convs eager) and the projection with the
    positional conv (embed). With a symbolic length, the whole front's seven strided convolutions make nested
    floor-divisions that Dynamo's shape reasoning spends most of a compile on (CPU, wav2vec2-large, warm cache:
    13.4 s of the front against 0.8 s of a layer); by parts, each region sees a fresh symbol. Returns the module,
    its regions replaced in place."""
    import torch._dynamo
    opts = dict(mode=mode, options=options, dynamic=False, fullgraph=True)

    def marked(x, *also):
        """x [B, T, ...] marked as the options say; each of `also` (the mask [B, 1, 1, T], the lengths [B]) with it."""
        batch = dynamic_batch and x.shape[0] > 1
        for d in ([0] if batch else []) + ([1] if dynamic_time else []):
            torch._dynamo.mark_dynamic(x, d)
            for t in also:
                if d == 0 or t.dim() == 4:
                    torch._dynamo.mark_dynamic(t, 0 if d == 0 else 3)
        return x

    if front:
        module.front = torch.compile(module.front, **opts)
    else:
        enc = module.features
        if enc.conv_mode == "flat":
            first, rows = torch.compile(enc.first_conv, **opts), torch.compile(enc.conv_rows, **opts)

            def conv_rows(r, i):
                if (dynamic_batch or dynamic_time) and r.shape[0] > 1:
                    torch._dynamo.mark_dynamic(r, 0)
                return rows(r, i)
            enc.first_conv = lambda win: first(marked(win))
            enc.conv_rows = conv_rows
        embed = torch.compile(module.embed, **opts)
        module.embed = lambda h, lengths, full: embed(marked(h, lengths), lengths, full)

    shared = torch.compile(type(module.layers[0]).forward, **opts)

    def layer_forward(layer, x, mask):
        return shared(layer, marked(x, *([] if mask is None else [mask])), mask)
    for layer in module.layers:
        layer.forward = functools.partial(layer_forward, layer)
    head = torch.compile(module.head, **opts)
    module.head = lambda x: head(marked(x))
    return module
