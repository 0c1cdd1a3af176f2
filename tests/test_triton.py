"""Triton: a REAL local server (PyTriton's tritonserver) in front of the tiny model, HTTP and gRPC clients,
load sweeps, model-repository configs, and the failure paths (down server, bad input, server killed)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

from core.audio import load_audio  # noqa: E402
from core.backends import make_backend  # noqa: E402
from core.errors import BackendUnavailableError, ExportError  # noqa: E402
from core.transcribe import features, transcribe  # noqa: E402
from core.triton import server  # noqa: E402

TINY = "random:wav2vec2-tiny"


@pytest.fixture(scope="module")
def served(tiny, tiny_onnx):
    """One real Triton server for the module (ONNX Runtime CPU behind it), always stopped afterwards."""
    info = server.start(TINY, "ort:fp32:cpu", name="test", max_batch=8, preferred=[4], max_queue_delay_us=2000,
                        instances=1, threads=1, warmup_s=1.0, timeout_s=120)
    yield info
    server.stop(info)
    assert not server.alive(info)


@pytest.fixture(scope="module")
def speech(tiny, hindi_wav):
    return load_audio(hindi_wav, tiny.sample_rate)


def test_preflight_refuses_numpy_2_with_the_fix():
    server.preflight()  # this environment (numpy<2, PyTriton installed) can serve
    with pytest.raises(server.TritonServerError) as err:
        server.preflight(numpy_version="2.3.5")
    assert "numpy 2.3.5" in str(err.value) and '"numpy<2"' in err.value.hint


def test_serving_options_give_the_fast_backend_a_bucket_per_batch_size():
    """The batcher forms batches of any size up to the max batch: the fast backend is served with a batch bucket
    for each (its default dynamic batch compiles once for every size from 2 up), unless --backend-option says
    otherwise; other backends keep their own options (ONNX Runtime: --threads)."""
    from core.triton.serve import backend_options, parser
    opts = lambda *a: backend_options(parser().parse_args(list(a)))   # noqa: E731
    assert opts("--backend", "fast:fp16:cuda", "--max-batch", "4") == {"batch_buckets": [1, 2, 3, 4]}
    assert opts("--backend", "fast:fp16:cuda", "--backend-option", "batch_buckets=[1,4]",
                "--backend-option", "dynamic_batch=false") == {"batch_buckets": [1, 4], "dynamic_batch": False}
    assert opts("--backend", "ort:fp32:cpu", "--threads", "2") == {"threads": 2}
    assert opts("--backend", "torch:fp16:cuda") == {}


def test_preferred_batch_sizes_parse_and_stay_within_the_max_batch():
    from core.errors import WorkbenchError
    from core.triton.batching import preferred_sizes
    assert preferred_sizes("8 4, 8", 16) == (4, 8)
    assert preferred_sizes("", 16) == () and preferred_sizes([2], 2) == (2,)
    with pytest.raises(WorkbenchError, match=r"outside 1\.\.8"):
        preferred_sizes([4, 16], 8)
    with pytest.raises(WorkbenchError, match="whole numbers, not 'eight'"):
        preferred_sizes("4 eight", 8)
    with pytest.raises(WorkbenchError, match="outside"):   # refused before any process starts
        server.start(TINY, "ort:fp32:cpu", name="never", max_batch=4, preferred=[8])
    assert server.read_state("never") is None


def test_the_served_model_has_the_preferred_sizes_asked_for(served):
    import tritonclient.http as http
    config = http.InferenceServerClient(served.url("http")).get_model_config("asr")
    assert config["dynamic_batching"]["preferred_batch_size"] == [4]


def test_server_warmed_every_batch_size_before_serving(served):
    # the model turns ready inside triton.bind(), a moment before serve.py prints its SERVING line
    deadline = time.monotonic() + 10
    while "SERVING" not in (log := Path(served.log).read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "WARMED batch sizes [1, 2, 4, 8] at 1 s" in log
    assert log.index("WARMED") < log.index("SERVING")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_transcript_through_triton_equals_in_process(served, tiny, speech, protocol):
    with make_backend("ort:fp32:cpu", tiny) as local, \
            make_backend(f"triton:fp32:{protocol}", tiny, url=served.url(protocol)) as remote:
        assert transcribe(speech, remote, tiny).text == transcribe(speech, local, tiny).text
        # a padded batch of two lengths: the server must hand back the same logits row by row
        values, mask = features(tiny.processor, [speech.samples, speech.samples[: len(speech.samples) // 2]],
                                tiny.sample_rate)
        np.testing.assert_allclose(remote.logits(values, mask), local.logits(values, mask), atol=1e-4)


def test_triton_passes_the_conformance_matrix(served, tiny):
    """Every batch size (split into requests of at most the server's max batch of 8) and length, padded mixes and
    repeats, through a real server, against in-process PyTorch FP32."""
    from core.check import lengths_for, run_check
    rows = run_check(tiny, ["triton:fp32:http", "triton:fp32:grpc"], reference="torch:fp32:cpu",
                     lengths=lengths_for((0.5, 1.0, 1.5, 2.0)),
                     options={f"triton:fp32:{p}": {"url": served.url(p)} for p in ("http", "grpc")})
    assert len(rows) == 2 * (8 * 4 + 7 + 2)
    failed = [(r["backend"], r["cell"], r["reason"]) for r in rows if not r["passed"]]
    assert not failed
    assert {r["batch"] for r in rows} >= {9, 17, 33}


def test_served_batches_carry_a_mask_only_where_something_is_masked(tiny):
    """The server-side batch: no int64 mask of ones to build, copy and sum when nothing is padded; a mask where rows
    of different lengths are padded together; each request's logits as if it ran alone."""
    from core.triton.serve import make_infer
    n = 16000
    x = (0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32)
    with make_backend("torch:fp32:cpu", tiny) as backend:
        masks, prepare = [], backend.prepare
        backend.prepare = lambda v, m=None: (masks.append(m), prepare(v, m))[1]
        infer = make_infer(backend, tiny)
        same = infer([{"input_values": x}, {"input_values": x, "attention_mask": np.ones((1, n), np.int64)}])
        assert masks[-1] is None
        mixed = infer([{"input_values": x}, {"input_values": x[:, : n // 2]}])
        assert masks[-1] is not None and masks[-1].sum(-1).tolist() == [n, n // 2]
        for out, alone in ((same[1], x), (mixed[0], x), (mixed[1], x[:, : n // 2])):
            np.testing.assert_allclose(out["logits"], backend.logits(alone), atol=1e-4)


def test_the_reused_batch_buffer_pads_with_zeros_not_the_last_batch(tiny):
    """make_infer keeps one host buffer for its batches: a short row padded after a full batch of long ones must see
    zeros in its tail, not the previous batch's samples, and each batch hands the backend a contiguous array."""
    from core.triton.serve import make_infer
    n = 16000
    loud = np.full((1, n), 0.5, np.float32)
    with make_backend("torch:fp32:cpu", tiny) as backend:
        seen, prepare, given, host_array = [], backend.prepare, [], backend.host_array
        backend.prepare = lambda v, m=None: (seen.append((np.array(v), v)), prepare(v, m))[1]   # a copy: the buffer moves on
        backend.host_array = lambda size, dtype=np.float32: (given.append(host_array(size, dtype)), given[-1])[1]
        infer = make_infer(backend, tiny)
        infer([{"input_values": loud}, {"input_values": loud}])
        quiet = (0.1 * np.random.default_rng(1).standard_normal((1, n // 2))).astype(np.float32)
        out = infer([{"input_values": quiet}, {"input_values": quiet[:, : n // 4]}])
        assert seen[-1][0].shape == (2, n // 2) and not seen[-1][0][1, n // 4:].any()
        np.testing.assert_allclose(out[1]["logits"], backend.logits(quiet[:, : n // 4]), atol=1e-4)
        assert all(o["logits"].flags.c_contiguous and o["logits"].dtype == np.float32 for o in out)   # as Triton takes
        # both batches were padded in the one array the backend handed out (page-locked on a GPU)
        assert len(given) == 1 and all(np.shares_memory(v, given[0]) for _, v in seen[:2])


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="page-locked memory needs a CUDA GPU; the CI "
                    "machine has none (run on the lent H200: bench/gpu_issue16.sh servecheck)")
@pytest.mark.parametrize("spec, options", [("torch:fp32:cuda", {}), ("fast:fp32:cuda", {"compile": None})])
def test_served_batches_from_page_locked_memory_match_plain_ones(tiny, spec, options):
    """On a GPU make_infer pads into page-locked memory that the backend copies without the host waiting: batch after
    batch of other lengths and sizes (and of FP32 and FP16 audio, each in its own buffer) refills it, and every
    result must still be that of its own input."""
    from core.triton.serve import make_infer
    rng = np.random.default_rng(2)
    with make_backend(spec, tiny, **options) as backend:   # the fast one with CUDA graphs, not compiled (quicker)
        infer = make_infer(backend, tiny)
        for dtype in (np.float32, np.float16):
            pinned = backend.host_array(4, dtype)
            assert pinned.dtype == dtype and __import__("torch").from_numpy(pinned).is_pinned()
        shapes = [(1, 16000), (4, 8000), (3, 32000), (8, 4000), (2, 16000)]
        for (rows, n), dtype in zip(shapes + shapes[::-1], [np.float32] * 5 + [np.float16] * 5):
            x = (0.1 * rng.standard_normal((rows, n))).astype(dtype)
            out = infer([{"input_values": x[i:i + 1]} for i in range(rows)])
            want = backend.logits(x.astype(np.float32))
            for i in range(rows):
                np.testing.assert_allclose(out[i]["logits"][0], want[i], atol=2e-3, rtol=2e-3)


def test_cuda_copy_back_is_queued_and_is_a_copy():
    """On a GPU, to_host_async (a served batch's copy back, core.triton.serve.BatchRunner) queues the cast and the
    copy behind the work that computes `out` and returns before they run; what the wait returns is a copy, untouched
    by later work on the same buffer (a graph's next replay)."""
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


def test_sweep_numbers_are_coherent(served, tiny, speech):
    from core.results import rows as db_rows, save
    from core.triton.loadtest import prepare_clips, sweep
    with make_backend("ort:fp32:cpu", tiny) as ref:
        clips = prepare_clips(tiny, [speech], seconds=2.0, reference=ref)
    rows = sweep(tiny, clips, served.url("http"), "http", "asr", concurrency=(1, 2, 4), requests=60, seconds=3.0,
                 timeout_s=10)
    assert [r["concurrency"] for r in rows] == [1, 2, 4]
    for r in rows:
        assert r["errors"] == 0 and r["n"] > 5 and r["hung_clients"] == 0
        assert r["consistency"] == 1.0                          # same transcripts as in-process
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        little = r["items_per_s"] * r["mean_ms"] / 1e3          # Little's law: L = λ·W in a closed loop
        assert abs(little - r["concurrency"]) / r["concurrency"] < 0.35, (r["concurrency"], little)
        assert r["in_flight"] == pytest.approx(little, rel=1e-6) and r["in_flight"] <= r["concurrency"]
        assert r["audio_s_per_s"] == pytest.approx(r["items_per_s"] * 2.0, rel=1e-6)
        assert r["server_stats"] and r["server_requests"] == r["n"]  # server saw exactly what clients counted
        assert r["server_compute_ms"] > 0 and r["server_queue_ms"] >= 0
        # the server's whole time holds its parts, and the client's latency holds the server's time
        assert r["server_total_ms"] >= r["server_queue_ms"] + r["server_compute_ms"] + r["server_io_ms"] - 1e-3
        assert 0 < r["outside_server_ms"] == pytest.approx(r["mean_ms"] - r["server_total_ms"])
    assert rows[2]["server_avg_batch"] > 1.2  # 4 clients, one instance: the dynamic batcher merges requests
    run = save(rows, "sweep")
    stored = db_rows(run, "sweep")
    assert [r["concurrency"] for r in stored] == [1, 2, 4] and stored[0]["consistency"] == 1.0


def test_sweep_from_several_client_processes(served, tiny, speech):
    """The level's clients split over two spawned processes: the same counts the server saw, the same transcripts."""
    from core.triton.loadtest import prepare_clips, sweep
    with make_backend("ort:fp32:cpu", tiny) as ref:
        clips = prepare_clips(tiny, [speech], seconds=2.0, reference=ref)
    [row] = sweep(tiny, clips, served.url("grpc"), "grpc", "asr", concurrency=[5], requests=40, seconds=20,
                  timeout_s=10, processes=2)
    assert row["client_processes"] == 2 and row["errors"] == 0 and row["hung_clients"] == 0
    assert row["n"] == row["requests_sent"] == 40 and row["server_requests"] == 40   # 20 + 20, all answered
    assert row["consistency"] == 1.0 and 0 < row["client_cpu_pct"] <= 100 * os.cpu_count()
    little = row["items_per_s"] * row["mean_ms"] / 1e3
    assert abs(little - 5) / 5 < 0.35, little


def test_a_level_paced_by_its_client_is_flagged(tiny):
    """A load-generator process at a full core is reported (CLI line, Serving page warning) as the possible limit."""
    from core.backends import BackendSpec
    from core.triton.loadtest import level_row
    def row(cpu):
        r = {"latencies": [(10.0, 5.0)] * 4, "errors": [], "sent": 4, "wall_s": 0.01, "hung_clients": 0, "agree": 0,
             "compared": 0, "client_cpu_pct": cpu, "client_processes": 1}
        return level_row(tiny, BackendSpec("triton", "fp32", "grpc"), "u", "asr", 1, r, 5.0, {}, None)
    assert row(97.0)["client_bound"] and not row(40.0)["client_bound"] and not row(None)["client_bound"]


def test_load_generator_processes_end_with_their_parent(tmp_path):
    """A sweep process that dies after its client processes started (killed, crashed) leaves none behind."""
    import subprocess
    import sys

    import psutil
    from core.paths import REPO_ROOT
    script = tmp_path / "parent.py"
    script.write_text(f"""
import multiprocessing, os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from core.models import load_model
from core.triton.loadtest import Clip, Target, load_generator
from core.triton.server import free_port
import numpy as np
if __name__ == "__main__":
    tiny = load_model("random:wav2vec2-tiny")
    clip = Clip("x", np.zeros((1, 16000), np.float32), np.ones((1, 16000), np.int64), 1.0, None)
    target = Target([f"127.0.0.1:{{free_port()}}"], "grpc", "asr", 2.0, tiny.processor)  # nobody listens
    with load_generator(target, 4, [clip], 10, 5.0, 30.0, processes=2) as go:
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        os._exit(0)   # dies before go(): the children wait for a start that never comes
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr[-2000:]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                                for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_mask_of_ones_is_left_to_the_server(served, tiny, speech, protocol):
    """The served model's mask is optional (the server fills in ones): the client sends it only when it says
    something, i.e. for padded rows; a 5 s request is then 320 kB instead of 960 kB."""
    values, mask = features(tiny.processor, [speech.samples, speech.samples[: len(speech.samples) // 2]],
                            tiny.sample_rate)
    with make_backend(f"triton:fp32:{protocol}", tiny, url=served.url(protocol)) as remote:
        assert remote.optional_inputs == {"attention_mask"}
        names = lambda prepared: [i.name() for i in prepared[0]]  # noqa: E731
        assert names(remote.prepare(values[:1], mask[:1])) == ["input_values"]
        assert names(remote.prepare(values[:1])) == ["input_values"]
        assert names(remote.prepare(values, mask)) == ["input_values", "attention_mask"]   # the short row is padded


def test_cli_sweep_over_grpc_saves_sweep_rows(served, hindi_wav):
    from core.cli import main
    from core.results import rows as db_rows
    rc = main(["sweep", "--model", TINY, "--url", served.url("grpc"), "--protocol", "grpc", "--model-name", "asr",
               "--concurrency", "1", "2", "--requests", "6", "--seconds", "3", "--audio", str(hindi_wav),
               "--reference-backend", "ort:fp32:cpu", "--client-processes", "2"])
    assert rc == 0
    latest = db_rows(kind="sweep")[:2]
    assert sorted(r["concurrency"] for r in latest) == [1, 2]
    assert sorted(r["client_processes"] for r in latest) == [1, 2]   # never more processes than clients
    assert all(r["backend"] == "triton:fp32:grpc" and r["errors"] == 0 and r["consistency"] == 1.0 for r in latest)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_down_server_is_not_reachable(tiny, protocol):
    url = f"127.0.0.1:{server.free_port()}"
    t = time.monotonic()
    with pytest.raises(BackendUnavailableError) as err:
        make_backend(f"triton:fp32:{protocol}", tiny, url=url, timeout_s=3).load()
    assert "not reachable" in err.value.message and url in err.value.message
    assert "python -m core serve" in err.value.hint
    assert time.monotonic() - t < 10


def test_unknown_model_and_bad_input_give_clear_errors(served, tiny):
    from core.backends.triton_backend import TritonRequestError
    with pytest.raises(BackendUnavailableError, match="'nope' is not ready"):
        make_backend("triton:fp32:http", tiny, url=served.url("http"), model_name="nope").load()
    with make_backend("triton:fp32:grpc", tiny, url=served.url("grpc")) as remote:
        with pytest.raises(TritonRequestError, match="at least 400"):          # our server-side check
            remote.logits(np.zeros((1, 100), np.float32))
        with pytest.raises(TritonRequestError, match="(?i)shape"):            # Triton's own shape check
            remote.logits(np.zeros((1, 2, 800), np.float32), np.ones((1, 2, 800), np.int64))


def test_server_killed_mid_sweep_ends_the_sweep(tiny, tiny_onnx, speech):
    from core.triton.loadtest import prepare_clips, sweep
    info = server.start(TINY, "ort:fp32:cpu", name="victim", max_batch=4, instances=1, threads=1, timeout_s=120)
    try:
        clips = prepare_clips(tiny, [speech], seconds=1.0)
        out = {}
        job = threading.Thread(target=lambda: out.setdefault("rows", sweep(
            tiny, clips, info.url("http"), "http", "asr", concurrency=(2, 4, 8), requests=100000, seconds=8,
            timeout_s=3)), daemon=True)
        job.start()
        time.sleep(2.0)
        os.killpg(info.pid, signal.SIGKILL)  # a crash, not a clean stop
        job.join(timeout=45)
        assert not job.is_alive(), "the sweep hung after the server died"
        rows = out["rows"]
        assert len(rows) == 1 and rows[0]["concurrency"] == 2     # reported, then the sweep ended
        assert rows[0]["errors"] > 0 and rows[0]["server_died"] and rows[0]["n"] > 0
        assert rows[0]["hung_clients"] == 0
    finally:
        server.stop(info)
    assert server.read_state("victim") is None


def test_repository_config_parses_and_carries_batching(tiny, tiny_onnx):
    from tritonclient.grpc import model_config_pb2 as pb
    from core.triton.repo import RepoOptions, build_repo, parse_config
    repo = build_repo(tiny, "ort:fp32:cuda", name="asr", log=lambda *_: None,
                      opts=RepoOptions(max_batch=16, preferred=(8, 4), max_queue_delay_us=700, instances=2,
                                       kind="gpu", trt_accelerator=True))
    cfg = parse_config((repo / "asr" / "config.pbtxt").read_text())
    assert cfg.name == "asr" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 700
    assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    inputs = {i.name: i for i in cfg.input}
    assert list(inputs["input_values"].dims) == [-1] and inputs["input_values"].data_type == pb.TYPE_FP32
    assert list(inputs["attention_mask"].dims) == [-1] and inputs["attention_mask"].data_type == pb.TYPE_INT64
    assert list(cfg.output[0].dims) == [-1, tiny.model.config.vocab_size]
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
    assert (repo / "asr" / "1" / "model.onnx").stat().st_size == tiny_onnx.path.stat().st_size
    assert "docker run" in (repo / "README.md").read_text()
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".tmp-")]  # no half-written folders
    meta = json.loads((repo / "meta.json").read_text())   # a pipeline artifact: verified, the export's figures
    assert meta["stage"] == "triton" and meta["status"] == "verified" and meta["inputs"]["parent"] == tiny_onnx.key
    assert meta["figures"]["max_abs_dlogit"] == tiny_onnx.meta["figures"]["max_abs_dlogit"]

    cpu = build_repo(tiny, "ort:fp32:cpu", log=lambda *_: None)  # a CPU ONNX model gets CPU instances
    assert parse_config((cpu / "asr" / "config.pbtxt").read_text()).instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_tensorrt_plan_config_and_container_table():
    from core.triton.repo import RepoOptions, config_text, containers_for, model_config, parse_config
    cfg = parse_config(config_text(model_config("asr", "tensorrt_plan", 70, False, "fp16", RepoOptions(max_batch=8))))
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert [i.name for i in cfg.input] == ["input_values"] and not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert containers_for("10.5.0.18") == ["nvcr.io/nvidia/tritonserver:24.10-py3"]
    assert containers_for("7.0.0") == []


def test_repository_rejects_bad_requests(tiny, tiny_onnx):
    from core.triton.repo import RepoOptions, build_repo
    from core.errors import WorkbenchError
    with pytest.raises(WorkbenchError, match="Preferred batch sizes"):
        build_repo(tiny, "ort:fp32:cpu", opts=RepoOptions(max_batch=4, preferred=(8,)), log=lambda *_: None)
    with pytest.raises(ExportError, match="python -m core serve"):
        build_repo(tiny, "torch:fp32:cpu", log=lambda *_: None)
    with pytest.raises(ExportError, match="engine"):
        build_repo(tiny, "trt:fp16:cuda", log=lambda *_: None)


def test_restricted_api_text_is_translated():
    from core.backends.triton_backend import server_message
    msg = server_message(Exception("[403] This API is restricted, expecting header 'triton-access-token'"))
    assert "restricted Triton API" in msg and "[403]" not in msg and "triton-access-token" not in msg
