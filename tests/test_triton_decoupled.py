"""A decoupled served model (`serve --python-backend --decoupled`): a REAL tritonserver whose Python-backend instance
pipelines its batches and sends each request's response from a thread, called over gRPC streams by the workbench's
own client. On this CPU machine the backend's copy back is synchronous, so what runs here is the pipeline's logic
(slots, the responder thread, streams, errors); the overlap with GPU work runs only on a GPU (bench/gpu_issue16.sh)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

from core.backends import make_backend  # noqa: E402
from core.errors import BackendUnavailableError  # noqa: E402
from core.triton import server  # noqa: E402

TINY = "random:wav2vec2-tiny"


@pytest.fixture(scope="module")
def decoupled(tiny):
    info = server.start(TINY, "fast:fp32:cpu", name="pyb-decoupled", max_batch=8, preferred=[4],
                        max_queue_delay_us=2000, instances=1, warmup_s=1.0, timeout_s=180, python_backend=True,
                        decoupled=True, pipeline_depth=2,
                        backend_options={"batch_buckets": [1, 3, 8], "buckets_s": [0.5, 1.0, 2.0]})
    yield info
    server.stop(info)
    assert not server.alive(info)


def test_the_server_records_that_it_is_decoupled(decoupled):
    assert decoupled.decoupled and server.read_state("pyb-decoupled").decoupled


def test_decoupled_model_passes_the_conformance_matrix_over_streams(decoupled, tiny):
    """Every batch size (requests of at most max batch 8) and length, padded mixes and repeats, each request over
    the client's gRPC stream, against in-process PyTorch FP32."""
    from core.check import lengths_for, run_check
    rows = run_check(tiny, ["triton:fp32:grpc"], reference="torch:fp32:cpu", lengths=lengths_for((0.5, 2.0)),
                     options={"triton:fp32:grpc": {"url": decoupled.url("grpc")}})
    failed = [(r["backend"], r["cell"], r["reason"]) for r in rows if not r["passed"]]
    assert rows and not failed
    assert {r["batch"] for r in rows} >= {1, 9, 33}


def test_concurrent_streams_each_get_their_own_answers(decoupled, tiny):
    """Eight client threads, each its own stream, requests of different lengths in flight together: batches mix
    them and the pipeline keeps two in flight; every answer is its own request's logits."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((8, 24000))).astype(np.float32)
    with make_backend("torch:fp32:cpu", tiny) as ref:
        expected = {(i, k): ref.logits(audio[i:i + 1, :8000 + 2000 * k]) for i in range(8) for k in range(6)}

    def client(i):
        with make_backend("triton:fp32:grpc", tiny, url=decoupled.url("grpc")) as c:
            assert c.decoupled
            return [float(np.abs(c.logits(audio[i:i + 1, :8000 + 2000 * k]) - expected[i, k]).max())
                    for k in range(6)]

    with ThreadPoolExecutor(8) as pool:
        errors = [e for row in pool.map(client, range(8)) for e in row]
    assert len(errors) == 48 and max(errors) < 1e-4


def test_http_is_refused_with_the_reason(decoupled, tiny):
    with pytest.raises(BackendUnavailableError, match="decoupled: Triton answers it over gRPC streaming only"):
        make_backend("triton:fp32:http", tiny, url=decoupled.url("http")).load()


def test_a_bad_request_gets_its_own_error_and_the_stream_goes_on(decoupled, tiny):
    from core.backends.triton_backend import TritonRequestError
    with make_backend("triton:fp32:grpc", tiny, url=decoupled.url("grpc")) as c:
        with pytest.raises(TritonRequestError, match="needs at least 400"):
            c.logits(np.zeros((1, 10), np.float32))
        assert c.logits(np.full((1, 16000), 0.01, np.float32)).shape[:2] == (1, 49)


def test_a_client_that_gives_up_leaves_the_server_serving(decoupled, tiny):
    """A stream cancelled while its batch is in flight (the client's timeout): the instance's responder thread, which
    every later batch needs, goes on, and the same client answers on a new stream."""
    from core.backends.triton_backend import TritonRequestError
    x = np.full((8, 32000), 0.01, np.float32)
    with make_backend("triton:fp32:grpc", tiny, url=decoupled.url("grpc")) as c:
        c.timeout_s = 0.001   # after load(): the model's config, which says it is decoupled, is read in time
        for _ in range(3):
            with pytest.raises(TritonRequestError, match="timed out"):
                c.logits(x)
        c.timeout_s = 30.0
        assert c.logits(x).shape[:2] == (8, 99)
    with make_backend("triton:fp32:grpc", tiny, url=decoupled.url("grpc")) as other:
        assert other.logits(x[:1]).shape[:2] == (1, 99)


def test_a_server_that_goes_away_is_a_clear_error(tiny):
    """The stream's client against a server that is gone: refused at load, in words."""
    with pytest.raises(BackendUnavailableError, match="not reachable"):
        make_backend("triton:fp32:grpc", tiny, url=f"127.0.0.1:{server.free_port()}").load()


def test_decoupled_needs_the_python_backend():
    with pytest.raises(server.TritonServerError, match="needs Triton's Python backend"):
        server.start(TINY, "fast:fp32:cpu", name="pyt-decoupled", decoupled=True)


def test_the_repository_declares_the_transaction_policy(tmp_path, tiny):
    from core.errors import ExportError
    from core.triton.pybackend import write_repository
    from core.triton.repo import RepoOptions, model_config, parse_config
    root = write_repository(tmp_path, tiny, "fast:fp16:cuda", "asr", RepoOptions(max_batch=16, decoupled=True), 5.0,
                            pipeline_depth=3)
    cfg = parse_config((root / "asr" / "config.pbtxt").read_text())
    assert cfg.model_transaction_policy.decoupled and cfg.parameters["pipeline_depth"].string_value == "3"
    assert not parse_config((write_repository(tmp_path / "plain", tiny, "fast:fp16:cuda", "asr", RepoOptions(), 0)
                             / "asr" / "config.pbtxt").read_text()).model_transaction_policy.decoupled
    with pytest.raises(ExportError, match="Only the Python backend"):
        model_config("asr", "onnxruntime", 32, True, "fp32", RepoOptions(decoupled=True))


def test_a_batch_runner_keeps_batches_in_flight_apart(tiny):
    """Two batches started before either is finished, each in its own slot, finish with their own logits (the
    decoupled model's order: start N+1, then finish N)."""
    from core.triton.serve import make_infer
    rng = np.random.default_rng(2)
    a = [{"input_values": (0.1 * rng.standard_normal((1, n))).astype(np.float32)} for n in (8000, 12000, 16000)]
    b = [{"input_values": (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)}]
    with make_backend("fast:fp32:cpu", tiny, batch_buckets=[1, 3, 8], buckets_s=[0.5, 1.0]) as fast, \
            make_backend("torch:fp32:cpu", tiny) as ref:
        runner = make_infer(fast, tiny)
        first, second = runner.start(a, slot=0), runner.start(b, slot=1)
        out_a, out_b = runner.finish(first), runner.finish(second)
        for req, out in zip(a + b, out_a + out_b):
            want = ref.logits(req["input_values"])
            assert out["logits"].shape == want.shape and np.abs(out["logits"] - want).max() < 1e-4
        assert len(runner.buffers) == 2   # one host buffer per slot


def test_cuda_copy_back_is_queued_and_is_a_copy():
    """On a GPU, to_host_async queues the cast and the copy behind the work that computes `out` and returns before
    they run; what the wait returns is a copy, untouched by later work on the same buffer (a graph's next replay)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; the CI machine has none (run on the lent H200: bench/gpu_issue16.sh servecheck)")
    from core.backends.torch_backend import to_host_async
    x = torch.randn(8, 249, 64, device="cuda", dtype=torch.float16)
    want = (x * 2).float().cpu().numpy()
    torch.cuda._sleep(200_000_000)   # the GPU spins (~0.1 s), so nothing queued after this has run yet
    out = x * 2
    wait = to_host_async(out)
    assert not torch.cuda.current_stream().query()   # returned while the copy still waits its turn
    out.fill_(float("nan"))
    got = wait()
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_a_sweep_streams_from_several_processes_and_says_the_model_is_decoupled(decoupled, tiny, hindi_wav):
    """The load generator's clients (two processes) stream to the decoupled model; the rows say it is decoupled and
    leave out the time outside the server, which Triton's statistics for such a model cannot give."""
    from core.audio import load_audio
    from core.triton.loadtest import prepare_clips, sweep
    clips = prepare_clips(tiny, [load_audio(hindi_wav, tiny.sample_rate)], seconds=1.0)
    [row] = sweep(tiny, clips, decoupled.url("grpc"), "grpc", concurrency=[4], requests=40, seconds=30, processes=2)
    assert row["n"] == 40 and row["errors"] == 0 and row["server_requests"] == 40
    assert row["server_decoupled"] and "outside_server_ms" not in row


def test_perf_analyzer_streams_to_the_decoupled_model(decoupled, tiny, hindi_wav):
    """Triton's perf_analyzer, told the model is decoupled by the sweep, calls it over gRPC streams (unary calls are
    refused for such a model): every level answered, no time outside the server claimed."""
    from core.audio import load_audio
    from core.triton.loadtest import prepare_clips, sweep
    clips = prepare_clips(tiny, [load_audio(hindi_wav, tiny.sample_rate)], seconds=1.0)
    [row] = sweep(tiny, clips, decoupled.url("grpc"), "grpc", concurrency=[4], seconds=1.5,
                  generator="perf_analyzer", stability_pct=50)   # two shared cores: a wide margin
    assert row["n"] > 5 and row["errors"] == 0, row["error_examples"]
    assert "--streaming" in row["load_generator_command"]
    assert row["server_decoupled"] and "outside_server_ms" not in row
