"""The build pipeline (core.pipeline): gates that reject, content-addressed keys that go stale when weights
change, one build per artifact across processes, interrupted builds that leave nothing behind, and folders that
stay inside the artifacts root whatever the model source string."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import WorkbenchError
from core.paths import REPO_ROOT, artifacts_dir
from core.pipeline import NotBuiltError, accept, model_root
from core.pipeline.gates import Gate
from core.pipeline.listing import artifact_rows
from core.pipeline.onnx_build import build_onnx
from core.pipeline.onnx_specs import OnnxExport

QUIET = dict(log=lambda *_: None)


@pytest.fixture()
def local_model(tiny, tmp_path):
    """The tiny model saved to its own folder: a local model whose weights a test may change."""
    from core.models import load_model
    folder = tmp_path / "tiny-local"
    tiny.model.save_pretrained(folder)
    tiny.processor.save_pretrained(folder)
    return load_model(str(folder))


def test_gate_rejects_and_rejected_is_not_offered_until_accepted(local_model):
    from core.backends import make_backend
    strict = Gate(max_rel_dlogit=0.0, max_wer_delta_points=0.5)   # no real export is bit-exact
    art = build_onnx(local_model, gate=strict, **QUIET)
    assert art.status == "rejected" and "of the logit scale > 0" in art.meta["reasons"][0]
    assert art.meta["figures"]["max_abs_dlogit"] > 0 and (art.dir / "model.onnx").exists()  # kept with figures
    with pytest.raises(NotBuiltError, match="rejected by its gate"):
        make_backend("ort:fp32:cpu", local_model)
    accepted = accept(art, note="test")
    assert accepted.meta["accepted"] and accepted.usable
    with make_backend("ort:fp32:cpu", local_model) as backend:
        assert backend.onnx_path == art.path
    # the default gate judges the same files again (no rebuild): verified
    again = build_onnx(local_model, **QUIET)
    assert again.dir == art.dir and again.status == "verified" and again.meta["gate"]["max_rel_dlogit"] == 1e-3


def test_changed_weight_makes_artifacts_stale_and_rebuilds(local_model, tmp_path):
    import torch
    from core.models import load_model
    first = build_onnx(local_model, **QUIET)
    assert first.status == "verified"
    row = next(r for r in artifact_rows(local_model.source) if r["key"] == first.key[:10])
    assert row["status"] == "verified" and row["model_hash"]
    with torch.no_grad():                      # retrain in place: one weight changes
        local_model.model.lm_head.bias[0] += 1.0
    local_model.model.save_pretrained(local_model.source)
    changed = load_model(local_model.source)
    row = next(r for r in artifact_rows(local_model.source) if r["key"] == first.key[:10])
    assert row["status"] == "stale" and "weights changed since build" in row["why"]
    with pytest.raises(NotBuiltError, match="not built yet.*stale: weights changed since build"):
        OnnxExport(changed).require("python -m core build onnx")
    rebuilt = build_onnx(changed, **QUIET)
    assert rebuilt.key != first.key and rebuilt.status == "verified"
    assert rebuilt.meta["inputs"]["model"] != first.meta["inputs"]["model"]


def _builder(source: str, delay_s: float = 0.0) -> subprocess.Popen:
    """`build_onnx` in its own process (optionally sleeping inside the build, to be killed there)."""
    code = ("import sys, time; from core.models import load_model; from core.pipeline import onnx_build as b\n"
            f"if {delay_s}:\n"
            "    produce = b.ExportBuilder.produce\n"
            f"    b.ExportBuilder.produce = lambda *a: (produce(*a), print('IN BUILD', flush=True), time.sleep({delay_s}))[0]\n"
            f"art = b.build_onnx(load_model({source!r}))\nprint('RESULT', art.dir, art.status, flush=True)\n")
    env = dict(os.environ, WORKBENCH_ARTIFACTS=str(artifacts_dir()), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_processes_build_once_and_both_get_it(local_model):
    procs = [_builder(local_model.source) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = {line for out in outs for line in out.splitlines() if line.startswith("RESULT")}
    assert len(results) == 1 and results.pop().endswith("verified")       # the same artifact for both
    assert sum(out.count("exporting") for out in outs) == 1, outs         # built by one of them only
    assert any("built meanwhile" in out or "cached at" in out for out in outs)


def test_killed_build_leaves_no_artifact_and_no_temp_folder(local_model):
    proc = _builder(local_model.source, delay_s=60)
    root = model_root(local_model.source)
    for line in proc.stdout:                    # wait until it is inside the build, files half written
        if "IN BUILD" in line:
            break
    temps = list(root.glob(".tmp-*"))
    assert temps and (temps[0] / "model.onnx").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not list(root.glob("onnx-fp32-*/meta.json"))          # nothing that looks finished
    spec = OnnxExport(local_model)
    assert spec.lookup() is None
    art = build_onnx(local_model, **QUIET)                       # the next start cleans up and builds
    assert art.status == "verified" and not list(root.glob(".tmp-*"))


@pytest.mark.parametrize("source", ["..", "../../etc", "/", ".hidden", "foo/bar", "foo_bar", "a/../../b", "~",
                                    "C:\\models\\x", "x" * 300, "नमस्ते/मॉडल", ""])
def test_odd_sources_stay_inside_the_artifacts_root(source):
    root = artifacts_dir().resolve()
    path = model_root(source)
    assert path.parent == root and not path.name.startswith(".") and len(path.name) < 60
    assert model_root("foo/bar") != model_root("foo_bar")


def test_not_built_is_a_clear_message_not_a_build(local_model):
    from core.backends import make_backend
    with pytest.raises(NotBuiltError) as err:
        make_backend("ort:mixed:cpu", local_model)
    assert "not built yet" in err.value.message and "python -m core build mixed" in err.value.hint
    assert isinstance(err.value, WorkbenchError)
    assert not list(model_root(local_model.source).glob("onnx-*"))     # asking built nothing, not even FP32


def test_cli_build_and_artifacts(local_model, capsys):
    import json
    from core.cli import main
    model = ["--model", local_model.source]
    assert main(["build", "onnx", *model, "--max-rel-dlogit", "0"]) == 1      # rejected: exit 1, said why
    out = capsys.readouterr()
    assert json.loads(out.out[out.out.index("{"):])["status"] == "rejected" and "rejected by its gate" in out.err
    assert main(["build", "onnx", *model, "--max-rel-dlogit", "0", "--accept-rejected"]) == 0
    capsys.readouterr()
    assert main(["artifacts", *model, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["stage"] == "onnx")
    for key in ("key", "stage", "precision", "status", "model_hash", "max_abs_dlogit", "wer_delta_points",
                "size_mb", "created"):
        assert key in row, key
    assert row["status"] == "rejected" and row["accepted"] is True and row["size_mb"] > 0
    from core.engine_meta import tensorrt_available
    if not tensorrt_available()[0]:
        assert main(["build", "trt", *model, "--precision", "fp16"]) == 2        # `build trt` is trt-build
        assert "TensorRT not installed" in capsys.readouterr().err


def test_damaged_file_is_refused_listed_and_rebuilt(local_model):
    from core.pipeline.store import ArtifactDamagedError, damage
    art = build_onnx(local_model, **QUIET)
    assert art.meta["file_bytes"] == art.path.stat().st_size and len(art.meta["file_sha256"]) == 64
    data = art.path.read_bytes()
    art.path.write_bytes(data[: len(data) // 2])                     # an interrupted copy
    row = next(r for r in artifact_rows(local_model.source) if r["key"] == art.key[:10])
    assert row["status"] == "damaged" and "truncated or replaced" in row["why"]
    with pytest.raises(ArtifactDamagedError, match="was built as"):
        OnnxExport(local_model).require("python -m core build onnx")
    art.path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])   # same size, one byte flipped
    with pytest.raises(ArtifactDamagedError, match="has changed since it was built"):
        OnnxExport(local_model).require("python -m core build onnx")
    said = []
    again = build_onnx(local_model, log=said.append)                # the next build makes it again
    assert any("building it again" in s for s in said)
    assert again.dir == art.dir and damage(again) == "" and again.status == "verified"
