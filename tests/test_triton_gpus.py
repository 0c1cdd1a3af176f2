"""More than one GPU (issue 17, part 5), the parts that run on the CPU: instance groups with a gpus list in the
exported config.pbtxt (parsed back with tritonclient's own protobufs), the --gpus validation, the serving process's
placement refusals, and the sweep's per-GPU load fields, empty with a reason where NVML is absent."""
import subprocess
import sys

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from core.errors import ExportError  # noqa: E402
from core.paths import REPO_ROOT  # noqa: E402
from core.triton.gpus import ALL, GpuLoad, GpuSelectionError, local_url, parse_gpus  # noqa: E402
from core.triton.repo import RepoOptions, build_repo  # noqa: E402
from tests.test_cli import cli  # noqa: E402


def _config(repo, name="asr"):
    return text_format.Parse((repo / name / "config.pbtxt").read_text(encoding="utf-8"), pb.ModelConfig())


def test_multi_gpu_instance_group_parses_with_tritons_protobufs(tiny, tiny_onnx):
    two = build_repo(tiny, "ort:fp32:cuda", opts=RepoOptions(instances=2, gpus=(0, 1)), log=lambda *_: None)
    [group] = _config(two).instance_group
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU and group.count == 2 and list(group.gpus) == [0, 1]
    assert "2 instance(s) on each of GPUs 0, 1" in (two / "README.md").read_text(encoding="utf-8")
    every = build_repo(tiny, "ort:fp32:cuda", opts=RepoOptions(instances=3), log=lambda *_: None)
    [group] = _config(every).instance_group
    assert group.count == 3 and list(group.gpus) == []      # no list: Triton puts 3 on every GPU it sees
    assert every != two                                      # the GPU list is part of the artifact's key
    one = build_repo(tiny, "ort:fp32:cuda", opts=RepoOptions(gpus=(1,)), log=lambda *_: None)
    assert list(_config(one).instance_group[0].gpus) == [1]


def test_a_cpu_instance_group_takes_no_gpus(tiny, tiny_onnx):
    with pytest.raises(ExportError, match="CPU instance group"):   # ort:…:cpu makes the group KIND_CPU
        build_repo(tiny, "ort:fp32:cpu", opts=RepoOptions(gpus=(0,)), log=lambda *_: None)


@pytest.mark.parametrize("words, available, expected", [
    (None, None, None), (["all"], None, ALL), (["ALL"], 0, ALL), (["0", "1"], None, (0, 1)), (["3", "1"], 4, (3, 1)),
    ([" 2 "], None, (2,))])
def test_gpu_lists_that_are_accepted(words, available, expected):
    assert parse_gpus(words, available) == expected


@pytest.mark.parametrize("words, available, says", [
    ([], None, "at least one"), (["all", "0"], None, "cannot be combined"), (["0", "x"], None, "whole numbers"),
    (["-1"], None, "start at 0"), (["0", "1", "0"], None, "listed twice"), (["0", "2"], 2, "2 GPU(s) visible"),
    (["0"], 0, "no GPU is visible")])
def test_gpu_lists_that_are_refused(words, available, says):
    with pytest.raises(GpuSelectionError) as err:
        parse_gpus(words, available)
    assert says in err.value.message and err.value.hint


def test_cli_triton_repo_refuses_a_bad_gpu_list_before_loading_a_model():
    out = cli("triton-repo", "--model", "demo", "--backend", "ort:fp16:cuda", "--gpus", "0", "0", check=False)
    assert out.returncode == 2 and "a GPU is listed twice" in out.stderr and "model:" not in out.stderr


def test_serve_refuses_gpus_for_a_cpu_backend():
    out = subprocess.run([sys.executable, "-m", "core.triton.serve", "--backend", "ort:fp32:cpu", "--gpus", "0"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "runs on 'cpu'" in out.stderr


def test_serve_places_instances_only_for_runtimes_that_follow_the_current_device(monkeypatch):
    from core.triton import gpus, serve
    assert serve.devices("fast:fp16:cuda", None) == [None]            # no --gpus: the backend's own device
    monkeypatch.setattr(gpus, "visible_gpus", lambda: 2)              # a 2-GPU machine's count, on the CPU
    assert serve.devices("fast:fp16:cuda", ["all"]) == [0, 1]
    assert serve.devices("torch:fp16:cuda", ["1"]) == [1]
    assert serve.devices("ort:fp16:cuda", ["0"]) == [0]               # GPU 0 is where ONNX Runtime goes anyway
    with pytest.raises(GpuSelectionError, match="always open GPU 0"):
        serve.devices("ort:fp16:cuda", ["0", "1"])
    with pytest.raises(GpuSelectionError, match="2 GPU"):
        serve.devices("fast:fp16:cuda", ["2"])


def test_gpu_load_is_empty_with_a_reason_without_nvml():
    with GpuLoad(sample_s=0.01) as load:
        pass
    r = load.result()
    if load.handles:
        pytest.skip("NVML sees a GPU here: this test is for machines without one")
    assert r["gpu_load"] is None and ("NVML" in r["gpu_load_reason"] or "nvidia-ml-py" in r["gpu_load_reason"])


def test_gpu_load_reads_utilisation_and_the_sm_clock_on_a_gpu():
    """On an NVIDIA GPU (bench/gpu_issue16.sh servecheck runs it): every sample has a utilisation and the SM clock."""
    with GpuLoad(sample_s=0.01) as load:
        __import__("time").sleep(0.1)
    if not load.handles:
        pytest.skip(f"needs an NVIDIA GPU; here: {load.result()['gpu_load_reason']}")
    for g in load.result()["gpu_load"]:
        assert g["samples"] >= 3 and 0 <= g["util_mean_pct"] <= g["util_max_pct"] <= 100
        assert 0 < g["sm_clock_min_mhz"] <= g["sm_clock_mean_mhz"] < 5000


def test_sweep_rows_carry_gpu_load_or_why_not(tiny):
    """Against a port nobody listens on (every request fails fast): each level row still says why it has no load."""
    from core.export import parity_audio
    from core.triton.loadtest import prepare_clips, sweep
    from core.triton.server import free_port
    clips = prepare_clips(tiny, parity_audio(tiny, n=1), 0.5)
    [row] = sweep(tiny, clips, f"127.0.0.1:{free_port()}", "http", "asr", [1], requests=2, seconds=1, timeout_s=1)
    assert row["errors"] and row["gpu_load"] is None and "NVML" in row["gpu_load_reason"]
    assert local_url("localhost:8001") and not local_url("triton.example.org:8001")
    [row] = sweep(tiny, clips, "192.0.2.1:8001", "http", "asr", [1], requests=1, seconds=1, timeout_s=1)  # TEST-NET
    assert row["gpu_load"] is None and "not on this machine" in row["gpu_load_reason"]


def test_serving_page_shows_per_gpu_load_when_a_sweep_recorded_it(tiny, monkeypatch, server_navigation):
    """Rows as a sweep of a 2-GPU server records them (one level, NVML load per GPU): the page charts both GPUs."""
    from streamlit.testing.v1 import AppTest

    from core.backends import BackendSpec
    from core.export import parity_audio
    from core.results import save
    from core.triton.loadtest import level_row, prepare_clips
    clips = prepare_clips(tiny, parity_audio(tiny, n=1), 0.5)
    r = {"latencies": [(12.0, 0.5), (14.0, 0.5)], "errors": [], "sent": 2, "wall_s": 0.1, "hung_clients": 0,
         "agree": 0, "compared": 0}
    row = level_row(tiny, BackendSpec("triton", "fp32", "grpc"), "127.0.0.1:8001", "asr", 32, r, clips[0].seconds, {},
                    "fast:fp16:cuda")
    row.update(gpu_load=[{"gpu": i, "name": "NVIDIA H200", "util_mean_pct": u, "util_max_pct": 100,
                          "mem_util_mean_pct": 40.0, "mem_used_max_mb": 9000.0, "sm_clock_mean_mhz": c,
                          "sm_clock_min_mhz": c - 100, "samples": 50}
                         for i, u, c in ((0, 91.0, 1980.0), (1, 88.0, 1755.0))], gpu_load_reason=None)
    run_id = save([row], "sweep")
    monkeypatch.setenv("WORKBENCH_DEFAULT_MODEL", "random:wav2vec2-tiny")
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["sweep_run"] = run_id
    at.run()
    at.switch_page("pages/serving.py").run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [t.value for t in at.dataframe]
    load = next(t for t in tables if "util_mean_pct" in t)
    assert list(load["gpu"]) == ["GPU 0", "GPU 1"] and list(load["util_mean_pct"]) == [91.0, 88.0]
    assert list(load["sm_clock_mean_mhz"]) == [1980.0, 1755.0] and list(load["sm_clock_min_mhz"]) == [1880.0, 1655.0]
