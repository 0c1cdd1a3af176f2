"""The fast backend's reformulated model and bucketing, checked on the CPU against the Hugging Face model.
(Its CUDA graphs and FP16/BF16 kernels are measured by bench/gpu_w1.py on a GPU.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.backends import availability, make_backend
from core.backends.fast_backend import FastBackend, choose_bucket
from core.backends.fast_module import build_module, conv_as_gemm, conv_out_length
from core.models import build_random
from core.transcribe import features, frame_lengths

ROOT = Path(__file__).resolve().parent.parent


def hf_logits(model, values, mask=None):
    with torch.inference_mode():
        m = None if mask is None else torch.from_numpy(mask)
        return model(torch.from_numpy(values), attention_mask=m).logits.numpy()


def noise(*seconds, rate=16000, seed=1):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * rate))).astype(np.float32) for s in seconds]


def test_choose_bucket():
    assert choose_bucket(16000, (16000, 32000)) == 16000          # exact fit
    assert choose_bucket(16001, (32000, 16000)) == 32000          # next one up, order-independent
    assert choose_bucket(1, (16000, 32000)) == 16000
    assert choose_bucket(32001, (16000, 32000)) is None           # too long: eager fallback


def test_conv_out_length_matches_transformers(tiny):
    cfg = tiny.model.config
    for n in (400, 16000, 16001, 80000, 123457):
        assert conv_out_length(n, cfg) == int(tiny.model._get_feat_extract_output_lengths(n))


@pytest.mark.parametrize("groups,stride,padding,kernel", [(1, 5, 0, 10), (1, 2, 0, 3), (4, 1, 8, 16), (4, 1, 7, 15)])
def test_conv_as_gemm_equals_conv1d(groups, stride, padding, kernel):
    torch.manual_seed(groups + stride + kernel)
    cin = 1 if kernel == 10 else 8
    x = torch.randn(3, 50, cin, dtype=torch.float64)
    w = torch.randn(8, cin // groups, kernel, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), w, b, stride=stride, padding=padding, groups=groups)
    ref = ref[..., :50 if padding else None].transpose(1, 2)      # same-length output for the padded (pos) conv
    out = conv_as_gemm(x, w, b, stride, groups, padding, out_len=50 if padding else None)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv,gelu_epilogue", [("hybrid", False), ("flat", False), ("gemm", False), ("cudnn", False),
                                                ("flat", True)])
def test_reformulated_model_matches_hf(tiny, conv, gelu_epilogue):
    """Folded weight norm, fused QKV, convs as GEMMs, in-graph masks, GELU in the GEMM's epilogue (exact on the
    CPU): same logits as the original, to 1e-5."""
    module = build_module(tiny.model, conv, gelu_epilogue)
    assert all(layer.gelu_epilogue == gelu_epilogue for layer in module.layers)
    # weight norm folded into a plain parameter, equal to what the parametrization computes
    pc = tiny.model.wav2vec2.encoder.pos_conv_embed.conv
    assert not hasattr(module.pos_conv, "parametrizations")
    torch.testing.assert_close(module.pos_conv.weight, pc.weight, rtol=0, atol=1e-7)
    # a batch of 2 and one of 3: "hybrid" runs the positional conv as a GEMM for the first, cuDNN for the second
    for clips in ((1.3, 0.7), (1.3, 0.7, 2.1)):
        values, mask = features(tiny.processor, noise(*clips), tiny.sample_rate)
        ref = hf_logits(tiny.model, values, mask)
        with torch.inference_mode():
            out = module(torch.from_numpy(values), torch.from_numpy(mask.sum(-1))).numpy()
        for i, n in enumerate(frame_lengths(tiny.model.config, mask)):
            np.testing.assert_allclose(out[i, :n], ref[i, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("conv", ["hybrid", "flat"])
def test_group_norm_model_matches_hf_and_ignores_padding(conv):
    """wav2vec2-base style (group-norm feature encoder, post-LN encoder, no attention mask): the masked
    group norm makes a bucket-padded input give the unpadded model's logits."""
    from core.models import ARCHITECTURES
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(vocab_size=12, feat_extract_norm="group", do_stable_layer_norm=False,
                         **ARCHITECTURES["wav2vec2-tiny"])
    model = Wav2Vec2ForCTC(cfg).eval()
    x = noise(0.9)[0][None]
    ref = hf_logits(model, x)
    module = build_module(model, conv)
    padded = np.zeros((1, 16000), np.float32)
    padded[:, :x.shape[1]] = x
    with torch.inference_mode():
        out = module(torch.from_numpy(padded), torch.tensor([x.shape[1]])).numpy()
    np.testing.assert_allclose(out[:, :ref.shape[1]], ref, atol=1e-5, rtol=0)


def test_bucketed_backend_matches_unpadded_any_length(tiny):
    """CPU mode with padding to buckets: each length (inside a bucket, exactly a bucket, past the largest
    bucket -> eager fallback, and a batch larger than the largest batch bucket) gives the unpadded logits,
    trimmed to the true frame count."""
    backend = FastBackend(BackendSpecFor("fast:fp32:cpu"), tiny, buckets_s=(0.5, 1), batch_buckets=(1, 2),
                          pad=True).load()
    for seconds in [(0.3,), (0.5,), (0.8, 0.41), (1.7,), (0.6, 0.9, 0.4)]:
        values, mask = features(tiny.processor, noise(*seconds), tiny.sample_rate)
        ref = hf_logits(tiny.model, values, mask)
        out = backend.logits(values, mask)
        assert out.shape == ref.shape, seconds  # trimmed to the unpadded input's frames
        for i, n in enumerate(frame_lengths(tiny.model.config, mask)):
            np.testing.assert_allclose(out[i, :n], ref[i, :n], atol=1e-5, rtol=0, err_msg=str(seconds))
    assert backend.stats["eager"] >= 1  # the 1.7 s input ran past the largest bucket
    backend.close()


def BackendSpecFor(text):
    from core.backends import BackendSpec
    return BackendSpec.parse(text)


def test_registry_and_availability_say_why(tiny):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the no-CUDA message cannot be checked here")
    ok, why = availability("fast:fp16:cuda")
    assert not ok and "CUDA" in why
    assert availability("fast:fp32:cpu") == (True, "")
    assert not availability("fast:int8:cuda")[0]
    backend = make_backend("fast:fp32:cpu", tiny)
    values, mask = features(tiny.processor, noise(0.6), tiny.sample_rate)
    with backend:
        np.testing.assert_allclose(backend.logits(values, mask), hf_logits(tiny.model, values, mask), atol=1e-5)


def test_gpu_w1_script_runs_on_cpu(tiny, tmp_path, monkeypatch, capsys):
    """bench/gpu_w1.py's CPU smoke mode: the table, parity columns, results DB and $OUT JSON all come out
    (a GPU figure only comes from a CUDA run; this keeps the script from rotting in CI)."""
    import json
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parent.parent / "bench"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["gpu_w1.py"])
    import gpu_w1
    gpu_w1.main(["--device", "cpu", "--model", "random:wav2vec2-tiny", "--seconds", "1", "--w2-batch", "2",
                 "--repeats", "50", "--warmup", "1", "--variants", "fast:fp32:graphs,fast:fp16:graphs"])
    out = capsys.readouterr().out
    assert "fast:fp16:graphs             skipped: on the CPU the fast backend runs fp32 only" in out
    data = json.loads((tmp_path / "gpu_w1.json").read_text())
    fast = [r for r in data["rows"] if r["backend"] == "fast:fp32:graphs"]
    assert {r["workload"] for r in fast} == {"W1", "W2"}
    assert all(r["parity"]["agree"] == r["parity"]["total"] == 8 for r in fast)
    assert all(r["parity"]["max_abs_logit_diff"] < 1e-4 for r in fast)


def test_conv_flat_equals_conv1d_over_each_item():
    """conv_flat over a batch laid end to end, each item with spare rows: the valid rows equal conv1d per item."""
    from core.backends.fast_module import conv_flat, tap_runs
    torch.manual_seed(3)
    for kernel, stride in ((3, 2), (2, 2), (5, 2), (4, 4)):
        x = torch.randn(3, 24, 8, dtype=torch.float64)   # 24 rows per item: a multiple of every stride here
        w = torch.randn(6, 8, kernel, dtype=torch.float64)
        b = torch.randn(6, dtype=torch.float64)
        out = conv_flat(x.reshape(-1, stride * 8), [r[0] for r in tap_runs(w, stride)], b).view(3, 24 // stride, 6)
        ref = torch.nn.functional.conv1d(x.transpose(1, 2), w, b, stride=stride).transpose(1, 2)
        torch.testing.assert_close(out[:, :ref.shape[1]], ref, rtol=1e-12, atol=1e-12)


def test_mask_free_variant_equals_masked_when_the_input_fills_the_bucket(tiny):
    module = build_module(tiny.model, "flat")
    values, mask = features(tiny.processor, noise(0.5, 0.5), tiny.sample_rate)
    n = torch.from_numpy(mask.sum(-1))
    with torch.inference_mode():
        masked = module(torch.from_numpy(values), n)
        free = module(torch.from_numpy(values), n, full=True)
    torch.testing.assert_close(free, masked, rtol=0, atol=1e-6)



@pytest.mark.parametrize("groups,kernel,padding,taps", [(4, 16, 8, 4), (4, 15, 7, 4), (2, 12, 6, 16), (1, 8, 4, 3)])
def test_grouped_conv_runs_equals_conv1d(groups, kernel, padding, taps):
    """The positional conv as summed runs of taps over the batch laid end to end = conv1d with SamePad."""
    from core.backends.fast_module import grouped_conv_runs, tap_runs
    torch.manual_seed(kernel + taps)
    x = torch.randn(3, 21, 8, dtype=torch.float64)
    w = torch.randn(8, 8 // groups, kernel, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), w, b, padding=padding, groups=groups)[..., :21].transpose(1, 2)
    out = grouped_conv_runs(x, tap_runs(w, taps, groups), b, groups, padding, kernel, 21, taps)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_backend_shared_by_dashboard_sessions_is_used_one_call_at_a_time(tiny):
    """The dashboard caches one backend for every browser session (pages._shared): its wrapper lets one logits call
    through at a time. Unwrapped, the fast backend's static buffers mix up concurrent calls (4 of 40 results wrong
    in a trial of this very test, 2026-11-29)."""
    import threading
    from core.backends import make_backend
    from pages._shared import _OneAtATime
    raw = make_backend("fast:fp32:cpu", tiny).load()
    shared = _OneAtATime(raw)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1 + i % 3, 16000 * (1 + i % 2))).astype(np.float32) for i in range(8)]
    want = [raw.logits(x, np.ones(x.shape, np.int64)) for x in xs]
    wrong = []

    def session(i):
        for _ in range(5):
            got = shared.logits(xs[i], np.ones(xs[i].shape, np.int64))
            if got.shape != want[i].shape or not np.allclose(got, want[i], atol=1e-4):
                wrong.append(i)
    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and shared.name == raw.name


def test_compile_cache_lives_under_artifacts_unless_named(monkeypatch, tmp_path):
    from core.backends.fast_backend import use_compile_cache
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    root = use_compile_cache()
    assert root == tmp_path / "compile-cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(root / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")   # a user's own choice wins
    use_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


def test_capture_all_takes_every_bucket_up_front(tiny):
    """Every (batch bucket, length bucket, masked/mask-free) graph captured at once; afterwards a call of any
    bucketed shape replays a graph (no capture on first use) and matches the lazily captured backend."""
    from core.backends import make_backend
    up_front = make_backend("fast:fp32:cpu", tiny, buckets_s=(1, 2), batch_buckets=(1, 2)).load()
    lazy = make_backend("fast:fp32:cpu", tiny, buckets_s=(1, 2), batch_buckets=(1, 2)).load()
    assert up_front.capture_all() == 2 * 2 * 2 and set(up_front.graphs) == {
        (b, n, full) for b in (1, 2) for n in (16000, 32000) for full in (True, False)}
    x = np.random.default_rng(1).standard_normal((2, 24000)).astype(np.float32)
    mask = np.ones(x.shape, np.int64)
    mask[1, 20000:] = 0
    assert np.allclose(up_front.logits(x, mask), lazy.logits(x, mask), atol=1e-5)
    assert len(up_front.graphs) == 8 and up_front.stats["eager"] == 0


def test_compile_cache_used_after_torch_dynamo_is_imported(tmp_path):
    """Importing torch._dynamo writes Inductor's default cache dir into the environment; the workbench's cache must
    still win (it did not: every backend but the cold-start bench compiled into /tmp)."""
    code = ("import torch._dynamo, os\n"
            "from torch._inductor.runtime.cache_dir_utils import cache_dir\n"
            "before = os.environ['TORCHINDUCTOR_CACHE_DIR']\n"
            "from core.backends.fast_backend import use_compile_cache\n"
            "root = use_compile_cache()\n"
            "print(before, cache_dir(), root, sep='\\n')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env["WORKBENCH_ARTIFACTS"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    before, used, root = out.stdout.split()
    assert before != used and root == str(tmp_path / "compile-cache")
    assert used == str(tmp_path / "compile-cache" / "inductor")


@pytest.mark.parametrize("compile, folder, suffix", [("aoti", "aoti", ".pt2"), ("precompile", "precompiled", ".bin")])
def test_ahead_of_time_artifacts_hold_no_weights_and_match_eager(monkeypatch, tmp_path, compile, folder, suffix):
    """compile="aoti" / "precompile": one artifact per bucket shape, built once and called with the live module's own
    weights. A second model of the same architecture but other weights loads the first one's artifact (nothing
    built) and still computes its own logits, equal to its eager forward."""
    from core.backends import BackendSpec
    from core.models import LoadedModel, build_random
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path))
    spec = BackendSpec.parse("fast:fp32:cpu")
    x = (0.1 * np.random.default_rng(0).standard_normal((1, 16000))).astype(np.float32)
    outs = []
    for seed in (0, 1):
        model, processor = build_random("wav2vec2-tiny", seed=seed)
        loaded = LoadedModel("random:wav2vec2-tiny", "random", model, processor)
        options = dict(buckets_s=(1.0,), batch_buckets=(1,))
        with FastBackend(spec, loaded, compile=compile, **options) as ahead, \
                FastBackend(spec, loaded, compile=None, **options) as eager:
            out = ahead.logits(x)
            np.testing.assert_allclose(out, eager.logits(x), atol=1e-5)
            outs.append((out, dict(ahead.stats)))
    assert outs[0][1].get(f"{folder}_built") == 1 and outs[1][1].get(f"{folder}_loaded") == 1
    assert f"{folder}_built" not in outs[1][1]
    assert np.abs(outs[0][0] - outs[1][0]).max() > 1e-2     # other weights, same artifact: other logits
    files = list((tmp_path / "compile-cache" / folder).iterdir())
    assert [p.suffix for p in files] == [suffix]            # no partial file left
    assert files[0].stat().st_size < 5e6                     # the weights are not in it


def test_dynamic_batch_compiles_once_for_every_batch_from_two(monkeypatch, tmp_path):
    """dynamic_batch with compile="precompile": per length bucket and mask variant, one artifact for batch 1 and one
    for every batch from 2 up (4 artifacts for 6 captured shapes here, 6 without), each batch's logits equal to the
    uncompiled backend's, padded rows and mixed lengths included; a second backend loads all 4 and builds none."""
    from core.backends import BackendSpec
    from core.models import LoadedModel
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path))
    spec = BackendSpec.parse("fast:fp32:cpu")
    model, processor = build_random("wav2vec2-tiny", seed=0)
    loaded = LoadedModel("random:wav2vec2-tiny", "random", model, processor)
    options = dict(buckets_s=(1.0,), batch_buckets=(1, 2, 4))
    rng = np.random.default_rng(3)
    cases = [(0.1 * rng.standard_normal((b, 16000))).astype(np.float32) for b in (1, 2, 3, 4)]
    masks = [None, None, np.ones((3, 16000), np.int64), None]
    masks[2][1, 9000:] = 0                                      # a padded row: the masked graph
    stats = []
    for _ in range(2):
        with FastBackend(spec, loaded, compile="precompile", dynamic_batch=True, **options) as dyn, \
                FastBackend(spec, loaded, compile=None, **options) as eager:
            assert dyn.capture_all() == 6
            for x, mask in zip(cases, masks):
                np.testing.assert_allclose(dyn.logits(x, mask), eager.logits(x, mask), atol=1e-5)
            stats.append(dict(dyn.stats))
    assert stats[0].get("precompiled_built") == 4 and "precompiled_loaded" not in stats[0]
    assert stats[1].get("precompiled_loaded") == 4 and "precompiled_built" not in stats[1]
    assert len(list((tmp_path / "compile-cache" / "precompiled").iterdir())) == 4


def test_precompile_is_refused_on_a_torch_without_aot_compile(monkeypatch):
    """torch 2.11 (the GPU machine's, 2026-12-02) has no aot_compile: the precompiled form is refused at
    construction with the reason, not with an AttributeError in the middle of the first capture."""
    from core.backends import BackendSpec, shape_cache
    from core.errors import BackendUnavailableError
    from core.models import load_model
    assert shape_cache.precompile_supported()        # this machine's torch 2.13
    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)   # what torch 2.11 gives: no aot_compile attribute
    with pytest.raises(BackendUnavailableError, match="aot_compile"):
        FastBackend(BackendSpec.parse("fast:fp32:cpu"), load_model("random:wav2vec2-tiny"), compile="precompile")


def test_module_compiles_once_for_every_length_when_time_is_dynamic():
    """What dynamic_time relies on (the backend compiles only on CUDA, so this checks the module under torch.compile
    on the CPU): with the length dimension marked dynamic, one graph serves every length at batch 1 and one every
    length and batch from 2 up, padded rows included, each equal to the eager module."""
    from torch._dynamo.utils import counters
    model, _ = build_random("wav2vec2-tiny", seed=0)
    module = build_module(model).eval()
    compiled = torch.compile(module, dynamic=False, fullgraph=True,
                             options={"triton.coalesce_tiling_analysis": False})
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    rng = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch, n in ((1, 16000), (1, 40000), (2, 16000), (3, 24000), (2, 40000)):
            x = 0.1 * torch.randn(batch, n, generator=rng)
            lengths = torch.tensor([n] + [n // 2] * (batch - 1))
            torch._dynamo.mark_dynamic(x, 1)
            if batch > 1:
                torch._dynamo.mark_dynamic(x, 0)
                torch._dynamo.mark_dynamic(lengths, 0)
            torch.testing.assert_close(compiled(x, lengths, full=False), module(x, lengths, full=False),
                                       atol=1e-4, rtol=1e-4)
    assert counters["stats"]["unique_graphs"] - before == 2


def test_dynamic_batch_is_refused_where_it_does_not_apply():
    from core.backends import BackendSpec
    from core.errors import BackendUnavailableError
    from core.models import load_model
    loaded = load_model("random:wav2vec2-tiny")
    with pytest.raises(BackendUnavailableError, match="dynamic_batch"):
        FastBackend(BackendSpec.parse("fast:fp32:cpu"), loaded, dynamic_batch=True, compile="aoti")
    for options in ({"compile": "precompile"}, {"compile": None}):
        with pytest.raises(BackendUnavailableError, match="dynamic_time"):
            FastBackend(BackendSpec.parse("fast:fp32:cpu"), loaded, dynamic_time=True, **options)


def test_the_default_compile_is_by_part_with_dynamic_batch_and_time_and_the_others_keep_their_shapes():
    """torch.compile's default is compiled by part with batch and length dynamic (every bucket from a few small
    compiles); the other modes, where those options are refused or were never measured, stay whole and static."""
    from core.backends import BackendSpec
    from core.backends.shape_cache import precompile_supported
    from core.models import load_model
    loaded, spec = load_model("random:wav2vec2-tiny"), BackendSpec.parse("fast:fp32:cpu")
    settings = lambda b: (b.compile_scope, b.dynamic_batch, b.dynamic_time)   # noqa: E731
    assert settings(FastBackend(spec, loaded)) == ("encoder", True, True)
    for compile in (None, "max-autotune-no-cudagraphs", "precompile", "aoti"):
        if compile == "precompile" and not precompile_supported():
            continue
        assert settings(FastBackend(spec, loaded, compile=compile)) == ("whole", False, False), compile
    assert settings(FastBackend(spec, loaded, compile_scope="whole", dynamic_time=False)) == ("whole", True, False)


def test_aoti_on_cuda_is_refused_before_it_can_crash():
    """Loading an AOTInductor package segfaulted on the H200 (torch 2.11.0+cu130, 2026-12-02): compile="aoti" on
    CUDA is refused at construction with the reason, before any GPU is touched (so this runs on the CPU too)."""
    from core.backends import BackendSpec
    from core.errors import BackendUnavailableError
    from core.models import load_model
    loaded = load_model("random:wav2vec2-tiny")
    with pytest.raises(BackendUnavailableError, match="segfaults"):
        FastBackend(BackendSpec.parse("fast:fp16:cuda"), loaded, compile="aoti")


def test_compile_regions_share_one_graph_across_layers():
    """compile_scope="layer": the front, one layer's code and the head are compiled apart, so a new shape makes
    three graphs however many layers the model has, and the logits stay the eager module's."""
    from torch._dynamo.utils import counters
    from core.models import build_random
    from core.backends.fast_module import compile_regions
    model, _ = build_random("wav2vec2-tiny", seed=0)
    assert model.config.num_hidden_layers >= 2
    eager = build_module(model).eval()
    compiled = compile_regions(build_module(model).eval())
    torch._dynamo.reset()
    for batch, n, full in ((1, 16000, True), (2, 12000, False)):
        x = 0.1 * torch.randn(batch, n, generator=torch.Generator().manual_seed(batch))
        lengths = torch.tensor([n] + [n // 2] * (batch - 1))
        before = counters["stats"]["unique_graphs"]
        with torch.no_grad():
            out, ref = compiled(x, lengths, full=full), eager(x, lengths, full=full)
        assert counters["stats"]["unique_graphs"] - before == 3
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU; the CI machine has none "
                    "(passed on an H200, bench/results/2026-12-02-s10/graphmem_test.log)")
def test_cuda_graphs_reuse_the_blocks_of_their_shared_pool(tiny):
    """After the largest graph, the smaller batches' graphs (and the mask-free twin) reuse the blocks its capture and
    warm-up freed: GPU memory grows by a fraction of what the first graph took. A new capture stream per graph made
    each add its whole working set (the caching allocator reuses a block only on the stream it was used on)."""
    backend = make_backend("fast:fp16:cuda", tiny, compile=None, buckets_s=(20,), batch_buckets=(1, 2, 4, 8)).load()
    torch.cuda.synchronize()
    base = torch.cuda.memory_reserved()
    x = (0.1 * np.random.default_rng(0).standard_normal((8, 20 * 16000))).astype(np.float32)
    mask = np.ones(x.shape, np.int64)
    mask[-1, 16000:] = 0
    backend.logits(x, mask)   # captures the batch-8 masked graph
    first = torch.cuda.memory_reserved() - base
    assert backend.capture_all() == 8
    grown = torch.cuda.memory_reserved() - base - first
    assert first > 0 and grown < 0.5 * first, (first / 2**20, grown / 2**20)


@pytest.mark.parametrize("front", [True, False], ids=["layer", "encoder"])
def test_compile_regions_with_dynamic_batch_and_time_compile_each_region_once(front):
    """compile_scope="layer"/"encoder" with dynamic_batch and dynamic_time: the layers' and the head's inputs come
    from the previous region and carry no marks, so compile_regions marks them; batches from 2 up and every length
    then share one graph per compiled region, logits the eager module's: three (front, layer, head), or with the
    front by parts (encoder) the first conv, each later conv, the projection and positional conv, layer and head."""
    from torch._dynamo.utils import counters
    from core.models import build_random
    from core.backends.fast_module import compile_regions
    model, _ = build_random("wav2vec2-tiny", seed=0)
    eager = build_module(model).eval()
    compiled = compile_regions(build_module(model).eval(), dynamic_batch=True, dynamic_time=True, front=front)
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    for batch, n in ((2, 16000), (4, 24000), (3, 20000)):
        x = 0.1 * torch.randn(batch, n, generator=torch.Generator().manual_seed(batch))
        lengths = torch.tensor([n] + [n // 2] * (batch - 1))
        for t in (x, lengths):    # as FastBackend._shape_call marks the front's inputs
            torch._dynamo.mark_dynamic(t, 0)
        torch._dynamo.mark_dynamic(x, 1)
        with torch.no_grad():
            out, ref = compiled(x, lengths, full=False), eager(x, lengths, full=False)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    regions = 3 if front else len(model.config.conv_kernel) + 3
    assert counters["stats"]["unique_graphs"] - before == regions
    x = 0.1 * torch.randn(1, 18000, generator=torch.Generator().manual_seed(1))   # batch 1, mask-free: specialized
    torch._dynamo.mark_dynamic(x, 1)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, torch.tensor([18000]), full=True),
                                   eager(x, torch.tensor([18000]), full=True), atol=1e-4, rtol=1e-4)
