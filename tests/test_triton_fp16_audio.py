"""FP16 audio on the wire (core.triton.repo.audio_dtype): a REAL Triton server whose input_values is FP16, through
PyTriton and through Triton's Python backend. The workbench's client sends what the server declares, and the
outputs are the in-process backend's on the same FP16-rounded audio."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

from core.backends import make_backend  # noqa: E402
from core.errors import ExportError  # noqa: E402
from core.transcribe import features  # noqa: E402
from core.triton import server  # noqa: E402
from core.triton.repo import audio_dtype  # noqa: E402

TINY = "random:wav2vec2-tiny"


def test_auto_is_fp16_only_where_the_backend_casts_the_audio_to_fp16_first():
    assert audio_dtype("auto", "fast:fp16:cuda") == "FP16" and audio_dtype("auto", "torch:fp16:cuda") == "FP16"
    for backend in ("fast:bf16:cuda", "fast:fp32:cuda", "torch:fp32:cpu", "ort:fp16:cuda", "trt:fp16:cuda"):
        assert audio_dtype("auto", backend) == "FP32", backend
    assert audio_dtype("fp16", "torch:fp32:cpu") == "FP16" and audio_dtype("fp32", "fast:fp16:cuda") == "FP32"
    with pytest.raises(ExportError, match="Unknown input type 'int16'"):
        audio_dtype("int16", "torch:fp32:cpu")


def test_the_clients_fp16_cast_rounds_as_numpy_does():
    """The client casts with torch (numpy 1.26's float16 cast has no SIMD): ties to even, overflow to inf and
    subnormals must come out as numpy's cast gives them, or served FP16 audio would differ from the model's own."""
    from core.backends.triton_backend import half
    rng = np.random.default_rng(0)
    ties = np.array([1 + 2 ** -11, 1 + 3 * 2 ** -11, -(2 + 2 ** -10), 65520.0, 70000.0, -1e6, 3e-8, 6.1e-5, 0.0, -0.0],
                    np.float32)
    x = np.concatenate([ties, (3 * rng.standard_normal(100_000)).astype(np.float32)]).reshape(2, -1)
    got = half(x)
    assert got.dtype == np.float16 and got.shape == x.shape
    with np.errstate(over="ignore"):   # 70000 and -1e6 overflow to inf on purpose
        want = x.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_served_fp16_rows_reach_the_backend_as_fp16(tiny):
    """make_infer pads FP16 requests into an FP16 buffer for torch and fast backends (numpy's float16 -> float32
    cast costs ~10x a copy) and the backend widens them itself: the results are those of the rounded audio."""
    from core.triton.serve import make_infer
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((3, 16000))).astype(np.float16)
    with make_backend("torch:fp32:cpu", tiny) as backend:
        seen, prepare = [], backend.prepare
        backend.prepare = lambda v, m=None: (seen.append(v.dtype), prepare(v, m))[1]
        infer = make_infer(backend, tiny)
        out = infer([{"input_values": x[:1]}, {"input_values": x[1:, :12000]}])
        assert seen and set(seen) == {np.dtype(np.float16)}
        np.testing.assert_allclose(out[0]["logits"][0], backend.logits(x[:1].astype(np.float32))[0], atol=1e-5)
        np.testing.assert_allclose(out[1]["logits"], backend.logits(x[1:, :12000].astype(np.float32)), atol=1e-5)
        mixed = infer([{"input_values": x[:1]}, {"input_values": x[1:2].astype(np.float32)}])   # one FP32 row: FP32
        assert seen[-1] == np.float32 and mixed[0]["logits"].shape == out[0]["logits"].shape


def test_a_bad_input_type_fails_before_a_server_starts(tiny):
    with pytest.raises(ExportError, match="Unknown input type"):
        server.start(TINY, "torch:fp32:cpu", name="fp16-bad", input_dtype="fp64")
    assert server.read_state("fp16-bad") is None


@pytest.fixture(scope="module", params=["pytriton", "python-backend"])
def fp16_served(request, tiny):
    info = server.start(TINY, "torch:fp32:cpu", name=f"fp16-{request.param}", max_batch=8, max_queue_delay_us=2000,
                        instances=1, warmup_s=1.0, timeout_s=180, python_backend=request.param == "python-backend",
                        input_dtype="fp16")
    yield info
    server.stop(info)
    assert not server.alive(info)


def test_the_server_declares_fp16_audio(fp16_served):
    import tritonclient.http as http
    client = http.InferenceServerClient(fp16_served.url("http"))
    inputs = {i["name"]: i["datatype"] for i in client.get_model_metadata("asr")["inputs"]}
    assert inputs["input_values"] == "FP16"
    assert server.read_state(fp16_served.name).audio == "FP16"   # what the Serving page and `serve --status` show


def test_serve_status_names_the_audio_type(fp16_served, capsys):
    from core.cli import main
    assert main(["serve", "--status", "--name", fp16_served.name]) == 0
    assert f"({fp16_served.backend}, FP16 audio)" in capsys.readouterr().out


def test_served_fp16_audio_gives_the_in_process_outputs_on_the_same_audio(fp16_served, tiny, hindi_wav):
    from core.audio import load_audio
    speech = load_audio(hindi_wav, tiny.sample_rate).samples
    values, mask = features(tiny.processor, [speech, speech[: len(speech) // 2]], tiny.sample_rate)
    rounded = values.astype(np.float16).astype(np.float32)
    assert not np.array_equal(rounded, values)   # so FP32 audio would give other logits than `want`
    with make_backend("triton:fp16:grpc", tiny, url=fp16_served.url("grpc")) as client:
        assert client.audio_dtype == "FP16"
        got = client.logits(values, mask)
    with make_backend("torch:fp32:cpu", tiny) as local:
        want = local.logits(rounded, mask)
        unrounded = local.logits(values, mask)
    assert np.abs(want - unrounded).max() > 1e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_fp32_audio_gets_the_servers_refusal(fp16_served):
    import tritonclient.http as http
    client = http.InferenceServerClient(fp16_served.url("http"))
    inp = http.InferInput("input_values", [1, 16000], "FP32")
    inp.set_data_from_numpy(np.full((1, 16000), 0.01, np.float32))
    with pytest.raises(Exception, match="FP16"):
        client.infer("asr", [inp])


def test_fp16_audio_passes_the_conformance_matrix(fp16_served, tiny):
    """Every batch size the server forms (requests of at most 8 rows, mixed lengths padded in the server from FP16
    rows) against in-process PyTorch FP32, at the FP16 tolerances the served audio's rounding calls for."""
    from core.check import lengths_for, run_check
    rows = run_check(tiny, ["triton:fp16:grpc"], reference="torch:fp32:cpu", lengths=lengths_for((0.5, 2.0)),
                     options={"triton:fp16:grpc": {"url": fp16_served.url("grpc")}})
    failed = [(r["cell"], r["reason"]) for r in rows if not r["passed"]]
    assert rows and not failed
    assert {r["batch"] for r in rows} >= {1, 9, 33}
