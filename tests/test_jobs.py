"""core.jobs: real background processes running real `python -m core` commands."""
import json
import os
import time

import pytest

from core import jobs


def test_job_runs_logs_and_finishes(artifacts):
    job = jobs.start(["results"], label="list runs")
    assert job.dir == artifacts / "jobs" / job.id
    state = job.wait(timeout=60)
    assert state["status"] == "done", job.log()
    assert state["exit_code"] == 0 and state["ended"] and state["command"] == ["results"]
    assert "$ python -m core results" in job.log()
    # state.json is complete JSON written atomically: no partial files left behind
    assert json.loads((job.dir / "state.json").read_text())["status"] == "done"
    assert not list(job.dir.glob("*.partial"))


def test_failed_command_is_failed_with_its_exit_code():
    job = jobs.start(["results", "--run", "not-a-number"])
    state = job.wait(timeout=60)
    assert state["status"] == "failed" and state["exit_code"] == 2
    assert "invalid int value" in job.log()


def test_same_command_twice_runs_once_and_cancel_kills_the_group():
    args = ["bench", "--model", "random:wav2vec2-tiny", "--seconds", "1", "--batch", "1", "--repeats", "100000",
            "--no-save"]
    first = jobs.start(args)
    second = jobs.start(args)
    assert second.id == first.id
    assert second.state()["pid"] == first.state()["pid"]
    assert first.active
    child = None
    deadline = time.monotonic() + 30
    while child is None and time.monotonic() < deadline:
        child = first.state().get("child_pid")
        time.sleep(0.1)
    first.cancel(grace_s=5)
    assert first.state()["status"] == "cancelled"
    time.sleep(0.3)
    with pytest.raises(ProcessLookupError):  # the command itself is gone, not only the supervisor
        os.kill(child, 0)
        if open(f"/proc/{child}/stat").read().split(") ")[-1][:1] == "Z":
            raise ProcessLookupError


def test_progress_lines_and_vanished_process(artifacts):
    d = artifacts / "jobs" / "fake-progress"
    d.mkdir(parents=True)
    (d / "log.txt").write_text("starting\nprogress: 0.25 exporting\nprogress: 0.75 parity check\n")
    # a pid that cannot be alive: the job must read as failed, not "running" forever
    (d / "state.json").write_text(json.dumps({"id": d.name, "status": "running", "pid": 2**22 + 12345,
                                              "command": ["export"]}))
    job = jobs.Job(d)
    assert job.progress() == (0.75, "parity check")
    state = job.state()
    assert state["status"] == "failed" and "disappeared" in state["error"]


def test_finished_artifacts_lists_pipeline_artifacts_with_gate_figures(tiny_onnx):
    rows = jobs.finished_artifacts()
    row = next(r for r in rows if r["key"] == tiny_onnx.key[:10])  # other tests build other models
    assert row["artifact"] == str(tiny_onnx.dir.relative_to(tiny_onnx.dir.parent.parent))
    assert row["model"] == "random:wav2vec2-tiny" and row["precision"] == "fp32" and row["status"] == "verified"
    assert row["max_abs_dlogit"] == tiny_onnx.meta["figures"]["max_abs_dlogit"] > 0


def test_jobs_queue_for_the_cores_one_at_a_time(artifacts):
    """Two builds started together on two cores: the second waits (queued) until the first is done."""
    assert jobs.slots() == 1 or os.environ.get("WORKBENCH_JOB_SLOTS")
    long = ["bench", "--model", "random:wav2vec2-tiny", "--seconds", "1", "--batch", "1", "--repeats", "100000",
            "--no-save"]
    first = jobs.start(long, label="long")
    deadline = time.monotonic() + 30
    while first.status != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    second = jobs.start(["results"], label="waits")
    time.sleep(2)
    assert second.status == "queued" and "queued: waiting" in second.log()
    first.cancel(grace_s=5)
    state = second.wait(timeout=60)
    assert state["status"] == "done" and state["started"] >= first.state()["ended"]
