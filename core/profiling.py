"""Where the time goes: the PyTorch profiler's operator table for one forward pass, and the ONNX graph
before and after ONNX Runtime's graph optimisations (operator histograms show the fusions)."""
from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import pandas as pd


def torch_op_table(loaded, seconds: float = 2.0, device: str = "cpu", top: int = 25, warmup: int = 2) -> pd.DataFrame:
    """torch.profiler operator table for one forward pass over `seconds` of audio, sorted by self time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from .backends import BackendSpec
    from .backends.torch_backend import TorchBackend
    from .bench import speech_input
    values, mask = speech_input(loaded, seconds, 1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with TorchBackend(BackendSpec("torch", "fp32", device), loaded) as backend:
        x = torch.from_numpy(values).to(device)
        m = torch.from_numpy(mask).to(device)
        for _ in range(warmup):  # first calls allocate and pick kernels; keep them out of the table
            backend.forward(x, m)
        with profile(activities=activities) as prof:
            backend.forward(x, m)
            if device == "cuda":
                torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        rows.append({"operator": e.key, "calls": e.count,
                     "self_cpu_ms": e.self_cpu_time_total / 1e3, "total_cpu_ms": e.cpu_time_total / 1e3,
                     **({"self_cuda_ms": getattr(e, "self_device_time_total", 0) / 1e3,
                         "total_cuda_ms": getattr(e, "device_time_total", 0) / 1e3} if device == "cuda" else {})})
    df = pd.DataFrame(rows)
    key = "self_cuda_ms" if device == "cuda" else "self_cpu_ms"
    df = df[~df["operator"].str.startswith("ProfilerStep")]
    df["self_pct"] = 100 * df[key] / df[key].sum()
    return df.sort_values(key, ascending=False).head(top).reset_index(drop=True)


def op_counts(onnx_path: Path | str) -> collections.Counter:
    """Node count per op type (domain-qualified when not the default ONNX domain), weights not loaded."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    return collections.Counter(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                               for n in model.graph.node)


def optimized_graph(onnx_path: Path | str, level: str, out_dir: Path) -> Path:
    """Let ONNX Runtime (CPU) write the graph it actually runs at `level` ("basic" | "extended" | "all")."""
    import onnxruntime as ort
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    out = Path(out_dir) / f"optimized-{level}.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    # weights to a side file so models over 2 GB can be written (and we never need to read them back)
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + ".data")
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    return out


def onnx_op_histogram(onnx_path: Path | str) -> pd.DataFrame:
    """Op-type counts of the exported graph and of ORT's basic and all-optimisation graphs.
    `change` says which op types the optimiser fused away (gone) or introduced (new, e.g. fused kernels)."""
    with tempfile.TemporaryDirectory(prefix="ort-opt-") as tmp:
        counts = {"exported": op_counts(onnx_path)}
        for level in ("basic", "all"):
            counts[level] = op_counts(optimized_graph(onnx_path, level, Path(tmp)))
    ops = sorted(set().union(*counts.values()))
    df = pd.DataFrame({"op_type": ops, **{k: [c.get(o, 0) for o in ops] for k, c in counts.items()}})
    df["change"] = ["new (fused)" if e == 0 and a > 0 else "gone (fused away)" if e > 0 and a == 0
                    else "fewer" if a < e else "more" if a > e else "" for e, a in zip(df["exported"], df["all"])]
    return df.sort_values(["exported", "all"], ascending=False).reset_index(drop=True)


def fusion_summary(hist: pd.DataFrame) -> dict:
    return {"nodes_exported": int(hist["exported"].sum()), "nodes_basic": int(hist["basic"].sum()),
            "nodes_all": int(hist["all"].sum()),
            "new_ops": hist.loc[hist["change"] == "new (fused)", "op_type"].tolist(),
            "gone_ops": hist.loc[hist["change"] == "gone (fused away)", "op_type"].tolist()}
