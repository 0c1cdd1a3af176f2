"""Triton's own Python backend (core.triton.pybackend): a REAL tritonserver (PyTriton's bundled binary) on a
generated model repository, each instance its own stub process running a workbench backend."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

from core.triton import server  # noqa: E402
from core.triton.repo import parse_config  # noqa: E402

TINY = "random:wav2vec2-tiny"


@pytest.fixture(scope="module")
def served(tiny):
    os.environ["WORKBENCH_STAGES_EVERY_S"] = "1"   # the instance processes inherit it: stage summaries every second
    # the fast backend's CPU reference mode, with options that reach each instance process: its batch buckets
    info = server.start(TINY, "fast:fp32:cpu", name="pyb", max_batch=8, preferred=[4], max_queue_delay_us=2000,
                        instances=2, warmup_s=1.0, timeout_s=180, python_backend=True,
                        backend_options={"batch_buckets": [1, 3, 8], "buckets_s": [0.5, 1.0, 2.0]})
    os.environ.pop("WORKBENCH_STAGES_EVERY_S")
    yield info
    stubs = _stubs(info)
    server.stop(info)
    assert not server.alive(info)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in stubs)


def _stubs(info) -> list[psutil.Process]:
    return [p for p in psutil.Process(info.pid).children(recursive=True) if p.name() == "triton_python_backend_stub"]


def test_each_instance_reports_where_its_batches_host_time_went(served):
    """Every second of serving, each instance process writes a STAGES line: concurrent requests keep both busy."""
    import time
    from concurrent.futures import ThreadPoolExecutor
    import tritonclient.http as http
    x = np.full((1, 16000), 0.01, np.float32)

    def send(_):
        client = http.InferenceServerClient(served.url("http"))
        inp = http.InferInput("input_values", [1, 16000], "FP32")
        inp.set_data_from_numpy(x)
        for _ in range(6):
            client.infer("asr", [inp])

    def stages():
        return [line for line in Path(served.log).read_text(errors="replace").splitlines()
                if line.startswith("STAGES")]

    deadline = time.time() + 60
    while {line.split()[1] for line in stages()} != {"asr_0_0", "asr_0_1"} and time.time() < deadline:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(8)))
        time.sleep(1.5)   # the summaries are written every second (WORKBENCH_STAGES_EVERY_S=1)
    assert {line.split()[1] for line in stages()} == {"asr_0_0", "asr_0_1"}
    assert all("run " in line and "to_host " in line and "inputs " in line for line in stages())


def test_backend_options_reach_every_instance(served):
    """Each instance warmed the batch buckets given as a backend option, not the backend's default (1, 2, 4, 8)."""
    log = Path(served.log).read_text(errors="replace")
    for name in ("asr_0_0", "asr_0_1"):
        assert f"WARMED batch sizes [1, 3, 8] at 1 s ({name})" in log


def test_server_cpu_by_role_leaves_out_processes_that_ended(served):
    """Each role of the server's process tree reads its own CPU time; a process that ended between two readings
    (Inductor's compile workers do) is left out rather than subtracted, so no role goes negative."""
    from core.triton.loadtest import cpu_by_role, server_cpu
    before = server_cpu(served.pid)
    assert {key[0] for key in before} >= {"launcher", "tritonserver", "python-backend stub"}
    after = server_cpu(served.pid)
    spent = cpu_by_role(before, after)
    assert all(v >= 0 for v in spent.values())
    ended = {("python3", 1, 0.0): 50.0, **before}
    assert cpu_by_role(ended, after) == spent


def test_each_instance_is_its_own_process(served):
    import tritonclient.http as http
    client = http.InferenceServerClient(served.url("http"))
    config = client.get_model_config("asr")
    assert config["backend"] == "python"
    assert config["dynamic_batching"]["preferred_batch_size"] == [4]
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]
    stubs = _stubs(served)
    assert len(stubs) == 2 and len({p.pid for p in stubs}) == 2
    assert all(p.cmdline()[1].endswith("asr/1/model.py") for p in stubs)


def test_python_backend_passes_the_conformance_matrix(served, tiny):
    """Every batch size (requests of at most max batch 8) and length, padded mixes and repeats, over gRPC (HTTP
    is the next test's), against in-process PyTorch FP32: what the instance processes return is what the backend
    computes."""
    from core.check import lengths_for, run_check
    rows = run_check(tiny, ["triton:fp32:grpc"], reference="torch:fp32:cpu", lengths=lengths_for((0.5, 2.0)),
                     options={"triton:fp32:grpc": {"url": served.url("grpc")}})
    failed = [(r["backend"], r["cell"], r["reason"]) for r in rows if not r["passed"]]
    assert rows and not failed
    assert {r["batch"] for r in rows} >= {1, 9, 33}


def test_a_bad_request_gets_its_own_error(served, tiny):
    import tritonclient.http as http
    client = http.InferenceServerClient(served.url("http"))

    def request(n):
        x = np.full((1, n), 0.01, np.float32)
        inp = http.InferInput("input_values", [1, n], "FP32")
        inp.set_data_from_numpy(x)
        return [inp]   # no attention_mask: optional, the model fills it in

    with pytest.raises(Exception, match="needs at least 400"):
        client.infer("asr", request(10))
    assert client.infer("asr", request(16000)).as_numpy("logits").shape[:2] == (1, 49)


def test_python_repository_config_parses(tmp_path, tiny):
    from core.triton.pybackend import write_repository
    from core.triton.repo import RepoOptions
    root = write_repository(tmp_path, tiny, "fast:fp16:cuda", "asr", RepoOptions(max_batch=16, instances=2, gpus=(0, 1)),
                            5.0, {"dynamic_batch": True, "batch_buckets": [1, 2, 3]})
    cfg = parse_config((root / "asr" / "config.pbtxt").read_text())
    assert cfg.backend == "python" and list(cfg.instance_group[0].gpus) == [0, 1] and cfg.instance_group[0].count == 2
    assert {k: v.string_value for k, v in cfg.parameters.items()} == {
        "model": TINY, "backend": "fast:fp16:cuda", "warmup_seconds": "5",
        "backend_options": '{"dynamic_batch": true, "batch_buckets": [1, 2, 3]}'}
    assert (root / "asr" / "1" / "model.py").read_text().startswith('"""A Triton Python-backend model')


def test_sweep_spreads_clients_over_several_servers(served, tiny, hindi_wav):
    """One server per GPU behind a client-side balancer: the sweep's clients take the urls in turn, and its server
    figures are the servers' added up."""
    from core.audio import load_audio
    from core.triton.loadtest import prepare_clips, server_stats, sweep, _stats_client
    other = server.start(TINY, "torch:fp32:cpu", name="pyb-other", max_batch=4, instances=1, timeout_s=180)
    try:
        urls = [served.url("grpc"), other.url("grpc")]
        clients = [_stats_client(u, "grpc", 10) for u in urls]
        before = [server_stats(c, "grpc", "asr", 10)["requests"] for c in clients]
        clips = prepare_clips(tiny, [load_audio(hindi_wav, tiny.sample_rate)], seconds=1.0)
        [row] = sweep(tiny, clips, urls, "grpc", concurrency=[4], requests=40, seconds=30)
        served_each = [server_stats(c, "grpc", "asr", 10)["requests"] - b for c, b in zip(clients, before)]
        assert row["n"] == 40 and row["errors"] == 0 and row["url"] == ",".join(urls)
        # clients 0 and 2 send to the first url, 1 and 3 to the second; the 40 requests are shared, so the faster
        # server takes more of them (CI saw 31/9): each server answered at least its own two clients' first requests
        assert min(served_each) >= 2 and sum(served_each) == row["server_requests"] == 40
        assert 0 < row["client_cpu_pct"] < 100 * (os.cpu_count() or 1)   # the load generator's own CPU use
    finally:
        server.stop(other)
