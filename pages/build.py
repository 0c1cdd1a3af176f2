"""Build: ONNX export, precision variants, TensorRT engines, Triton repository — as background jobs
that survive reruns and reloads (core.jobs), with live logs and the finished artifacts' parity."""
from pathlib import Path

import pandas as pd
import streamlit as st

from core import jobs
from core.backends import availability, known
from core.cli import parser
from core.pipeline import accept, read
from core.pipeline.gates import Gate
from core.pipeline.listing import artifact_rows
from core.pipeline.onnx_specs import VARIANTS
from pages._shared import active_model, guarded, model_badge, optional

st.title("Build")
loaded = active_model()
model_badge(loaded)
st.caption("Every build runs as `python -m core …` in its own process: it keeps going if you leave this page or "
           "reload, and the same command is never run twice at once.")

try:  # which `python -m core` commands this build has (optional modules add theirs)
    COMMANDS = {name for action in parser()._subparsers._group_actions for name in action.choices}
except Exception as err:  # noqa: BLE001 — a broken optional module must not take the whole page down
    COMMANDS = set()
    st.warning(f"The command line does not load ({type(err).__name__}: {err}); background builds will fail "
               "until that is fixed.", icon=":material/warning:")


def start(args: list[str], label: str) -> None:
    job = jobs.start([*args, "--model", loaded.source], label=f"{label} · {loaded.source}")
    st.toast(f"Started: {label}" if job.status in jobs.ACTIVE else f"{label}: {job.status}",
             icon=":material/rocket_launch:")


def action(col, label: str, args: list[str], help_: str, enabled: bool = True, why: str = "",
           show_why: bool = True) -> None:
    """A build button; when it cannot run here, the reason is shown instead of a dead button."""
    with col:
        if enabled:
            if st.button(label, key="build-" + "-".join(args), help=help_, width="stretch"):
                start(args, label)
        else:
            st.button(label, key="build-" + "-".join(args), disabled=True, width="stretch", help=why)
            if show_why:
                st.caption(f":gray[{why}]")


with st.container(border=True):
    st.markdown("#### :material/deployed_code: ONNX export and precision variants (ONNX Runtime)")
    st.caption("Each is built once per content key (the model's files, its parent, the settings, the toolchain), "
               "checked by its gate against PyTorch FP32 on real speech and, on a trained model, by the WER delta "
               "on the demo set — and offered as a backend only if it passes (or you accept it below). **int8w** is "
               "weight-only INT8 (per output channel). **bf16** is for TensorRT-RTX and TensorRT engines: ONNX "
               "Runtime's CPU EP has no BF16 kernels, so its gate runs ONNX Runtime CPU on a BF16 emulation (FP32 "
               "compute, each BF16 tensor rounded where produced) — recorded as `verified_by` in its meta.json.")
    c = st.columns([1, 1, 2])   # the export on its own row: nine buttons in one row cut these two labels short
    action(c[0], "Export ONNX (FP32)", ["build", "onnx"], "python -m core build onnx")
    action(c[1], "Re-export (force)", ["build", "onnx", "--force"], "python -m core build onnx --force")
    c = st.columns(len(VARIANTS))
    for col, p in zip(c, VARIANTS):
        action(col, f"Build {p.upper()}", ["build", p], f"python -m core build {p}")
    st.caption("Gate defaults (`--max-rel-dlogit`, `--max-wer-delta` on the CLI): "
               + " · ".join(f"**{p}** |Δlogit| ≤ {g.max_rel_dlogit:g} of the logit scale, WER +{g.max_wer_delta_points:g}"
                            " points" for p in ("fp32", *VARIANTS) for g in [Gate.default(p)]))
    with guarded():
        mine = [r for r in artifact_rows(loaded.source) if r["stage"] == "onnx"]
        if mine:
            df = pd.DataFrame(mine)[["precision", "status", "why", "accepted", "max_abs_dlogit", "rel_dlogit", "wer",
                                     "wer_fp32", "wer_delta_points", "size_mb", "created", "key"]]
            colour = {"verified": "color: #166534", "rejected": "color: #b91c1c; font-weight: 600",
                      "stale": "color: #92400e", "damaged": "color: #b91c1c; font-weight: 600"}
            st.dataframe(df.style.map(lambda v: colour.get(v, ""), subset=["status"]), hide_index=True,
                         width="stretch")
            from core.check import latest_verdicts
            verdicts = latest_verdicts(loaded.source)
            for r in mine:   # the gate measures the labelled set; the conformance matrix every batch and length
                for spec, v in verdicts.items():
                    if spec.startswith(f"ort:{r['precision']}:") and v["passed"] < v["cells"]:
                        st.warning(f"**{r['precision']}** passed its gate, but `{spec}` fails {v['cells'] - v['passed']}"
                                   f" of {v['cells']} cells of the conformance matrix (run {v['run_id']}; first: "
                                   f"{v['first_failure']}). Check it again: `python -m core check --model "
                                   f"{loaded.source} --backend {spec}`.", icon=":material/rule:")
            for r in [r for r in mine if r["status"] == "damaged"]:
                st.error(f"**{r['precision']} damaged**: {r['why']}. It is refused until rebuilt "
                         f"(`python -m core build {r['precision'] if r['precision'] != 'fp32' else 'onnx'} --force`).",
                         icon=":material/broken_image:")
            for r in [r for r in mine if r["status"] == "rejected"]:
                st.error(f"**{r['precision']} rejected**: {r['why']}", icon=":material/block:")
                if st.checkbox(f"Use the rejected {r['precision']} artifact anyway (recorded in its meta.json)",
                               value=r["accepted"], key=f"accept-{r['key']}") and not r["accepted"]:
                    accept(read(Path(r["dir"])), note="accepted on the Build page")
                    st.rerun()
        else:
            st.caption("Nothing built for this model yet.")

with st.container(border=True):
    st.markdown("#### :material/bolt: TensorRT engines")
    trt = optional("core.tensorrt")
    if trt is None or "trt-build" not in COMMANDS:
        st.info("TensorRT engine builds are not in this build (core.tensorrt is missing).", icon=":material/info:")
    else:
        ok, why = availability("trt:fp16:cuda")
        st.markdown("**TensorRT** — for data-centre GPUs (and any GPU TensorRT 10 supports), built on the GPU that "
                    "runs it.")
        st.caption("Engines with optimisation profiles over batch × audio length and a persisted timing cache; an "
                   "engine only runs on the GPU and TensorRT version it was built with. TensorRT could not be "
                   "installed where this workbench was developed: this path has not been executed in its own runs.")
        precisions = getattr(trt, "PRECISIONS", ("fp32", "fp16", "mixed", "int8"))
        c = st.columns(len(precisions))
        for i, p in enumerate(precisions):
            refused = trt.flavor_refuses(p, "trt")   # e.g. int8w: TensorRT 10 has weight-only INT4 only
            action(c[i], f"Engine {p.upper()}", ["trt-build", "--precision", p],
                   f"python -m core trt-build --precision {p}", enabled=ok and not refused, why=refused or why,
                   show_why=False)
        if not ok:
            st.caption(f":material/block: Not on this machine: {why.rstrip('.')}.")
        st.markdown("**TensorRT for RTX** — built ahead of time (no GPU needed) for RTX-class GPUs of compute "
                    "capability 8.0, 8.6, 8.9 and 12.x, which JIT-compile its kernels on first use.")
        rtx_ok, rtx_why = trt.tensorrt_available("trtrtx")
        env = trt.runtime_env("trtrtx")
        if rtx_ok and not env["gpu"]:
            st.caption(":material/info: No GPU here: engines build, but cannot be verified on this machine, so they "
                       "are kept as rejected (unverified) until built again on an RTX GPU.")
        elif rtx_ok and not trt.rtx_runs_on(env["gpu_cc"], ()):
            st.caption(f":material/block: This GPU ({env['gpu']}, compute capability {env['gpu_cc']}) cannot run "
                       "TensorRT-RTX engines: build them here for an RTX machine, and use trt, ort or fast here.")
        else:
            run_ok, run_why = availability("trtrtx:fp16:cuda") if rtx_ok else (False, rtx_why)
            st.caption(f":material/{'check_circle' if run_ok else 'block'}: "
                       + ("Engines run on this GPU." if run_ok else f"Not on this machine: {run_why.rstrip('.')}."))
        ep_ok, ep_why = availability("ort:fp16:trtrtx")
        st.caption("ONNX Runtime's TensorRT-RTX EP plugin (`ort:…:trtrtx`, onnxruntime-ep-nv-tensorrt-rtx-cu13): "
                   + ("can run here." if ep_ok else f"not here — {ep_why.rstrip('.')}."))
        st.warning("TensorRT-RTX inference (`trtrtx:…:cuda` and `ort:…:trtrtx`) has never been executed in this "
                   "project's own runs: no RTX-class GPU was available. Engines build here and are checked as far as "
                   "a machine without that GPU allows; the lent H200 (compute capability 9.0) refuses them, as "
                   "tested.", icon=":material/warning:")
        rtx_precisions = ("fp32", "fp16", "bf16", "int4w", "int8w", "fp8")
        c = st.columns(len(rtx_precisions))
        for i, p in enumerate(rtx_precisions):
            fp8 = ["--targets", "8.9", "12.0", "12.1"] if p == "fp8" else []   # GPUs with FP8 tensor cores
            action(c[i], f"RTX engine {p.upper()}", ["build", "trtrtx", "--precision", p, *fp8],
                   " ".join(["python -m core build trtrtx --precision", p, *fp8]), enabled=rtx_ok, why=rtx_why,
                   show_why=False)
        with guarded():
            engines = [r for r in artifact_rows(loaded.source) if r["stage"] in ("trt", "trtrtx")]
            if engines:
                st.dataframe(pd.DataFrame(engines)[["stage", "precision", "status", "why", "max_abs_dlogit",
                                                    "rel_dlogit", "size_mb", "created", "key"]], hide_index=True,
                             width="stretch")

with st.container(border=True):
    st.markdown("#### :material/dns: Triton model repository")
    if optional("core.triton") is None or "triton-repo" not in COMMANDS:
        st.info("Triton serving is not in this build (core.triton is missing).", icon=":material/info:")
    else:
        st.caption("A model repository for the Triton container (config.pbtxt with dynamic batching + the model "
                   "file). Any ONNX Runtime or TensorRT backend; the instance kind follows its device.")
        specs = [s for s in known() if s.split(":")[0] in ("ort", "trt")]
        c = st.columns([2, 1, 1])
        spec = c[0].selectbox("Backend served", specs, index=specs.index("ort:fp32:cpu") if "ort:fp32:cpu" in specs else 0,
                              key="repo_backend")
        kind = "cpu" if spec.endswith(":cpu") else "gpu"
        action(c[1], "Write repository", ["triton-repo", "--backend", spec, "--kind", kind],
               f"python -m core triton-repo --backend {spec} --kind {kind}")

st.subheader("Jobs")


@st.fragment(run_every=1.5)
def job_list():
    all_jobs = jobs.list_jobs()
    active = {j["id"] for j in all_jobs if j.get("status") in jobs.ACTIVE}
    if st.session_state.get("active_jobs", set()) - active:  # one just finished: refresh the artifact list too
        st.session_state["active_jobs"] = active
        st.rerun()
    st.session_state["active_jobs"] = active
    if not all_jobs:
        st.caption("No jobs yet: press a build button above.")
        return
    for state in all_jobs[:8]:
        job = jobs.Job(jobs.jobs_dir() / state["id"])
        status = state.get("status", "unknown")
        icon = {"running": ":material/progress_activity:", "queued": ":material/schedule:",
                "done": ":material/check_circle:", "failed": ":material/error:",
                "cancelled": ":material/cancel:"}.get(status, ":material/help:")
        with st.expander(f"{icon} **{state.get('label')}** — {status}", expanded=status in jobs.ACTIVE):
            fraction, message = job.progress()
            if status in jobs.ACTIVE:
                if fraction is None:
                    st.progress(0, text=f"working … {message[-120:]}")  # no progress lines: indeterminate
                else:
                    st.progress(fraction, text=message[-120:])
                if st.button("Cancel", key=f"cancel-{state['id']}", icon=":material/stop:"):
                    job.cancel()
                    st.rerun(scope="fragment")
            elif status == "failed":
                st.error(f"exit code {state.get('exit_code')}" + (f": {state['error']}" if state.get("error") else ""))
            st.caption(f"`python -m core {' '.join(state.get('command', []))}` · started {state.get('started', '-')}"
                       f" · ended {state.get('ended', '-')}")
            st.code(job.log(6000)[-6000:] or "(no output yet)", language="text")


job_list()

st.subheader("Finished artifacts")
arts = jobs.finished_artifacts()
if arts:
    cols = ["artifact", "model", "stage", "precision", "status", "max_abs_dlogit", "wer_delta_points", "size_mb",
            "created"]
    df = pd.DataFrame(arts)
    st.dataframe(df[[c for c in cols if c in df]], hide_index=True, width="stretch",
                 column_config={"max_abs_dlogit": st.column_config.NumberColumn("max |Δlogit|", format="%.2e")})
    pick = st.selectbox("Metadata of", [a["artifact"] for a in arts])
    meta = read(Path(jobs.artifacts_dir()) / pick)
    st.json(meta.meta if meta else next(a for a in arts if a["artifact"] == pick), expanded=False)
else:
    st.caption("Nothing built yet.")
