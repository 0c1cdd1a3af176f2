"""Every artifact under the artifacts root as one row: what it is, its gate figures, and whether it is still
current (stale: built from weights, a parent, settings or a toolchain that have changed since)."""
from __future__ import annotations

from pathlib import Path

from ..paths import artifacts_dir
from .fingerprint import kind_of, source_fingerprint
from .onnx_specs import versions
from .store import DAMAGED, STALE, damage, digest, read, why_stale


def current_inputs(meta: dict, cache: dict) -> dict | None:
    """The inputs this artifact would be built from today, or None when that cannot be known without loading
    the model (a Hub model's revision)."""
    old = meta.get("inputs") or {}
    source = meta.get("source", "")
    kind = kind_of(source)
    if kind == "hub":
        return None
    if source not in cache:
        cache[source] = source_fingerprint(source, kind) if kind != "local" or Path(source).exists() else None
    if cache[source] is None:
        return None
    parent = old.get("parent")
    if meta.get("parent_dir"):
        parent_art = read(Path(meta["parent_dir"]))
        parent_now = current_inputs(parent_art.meta, cache) if parent_art else None
        parent = digest(parent_now) if parent_now else parent
    return dict(old, model=cache[source], parent=parent, toolchain=toolchain_now(old.get("toolchain", {})))


def toolchain_now(names) -> dict:
    """Today's versions of the named tools (TensorRT and the GPU's compute capability as the engines record them)."""
    from ..engine_meta import runtime_env
    env = runtime_env() if {"tensorrt", "gpu_cc"} & set(names) else {}
    if "tensorrt_rtx" in names:
        env["tensorrt_rtx"] = runtime_env("trtrtx")["tensorrt"]
    return {n: env[n] if n in ("tensorrt", "gpu_cc", "tensorrt_rtx") else versions(n)[n] for n in names}


def artifact_rows(source: str | None = None) -> list[dict]:
    cache: dict = {}
    rows = []
    for meta_path in sorted(artifacts_dir().glob("*/*/meta.json")):
        art = read(meta_path.parent)
        if art is None or "key" not in art.meta or (source and art.meta.get("source") != source):
            continue
        m, f = art.meta, art.meta.get("figures", {})
        now = current_inputs(m, cache)
        stale = now is not None and digest(now) != m["key"]
        damaged = damage(art, full=False)   # the size only: listing must not read every file
        rows.append({"key": m["key"][:10], "stage": m["stage"], "precision": m["precision"],
                     "status": DAMAGED if damaged else STALE if stale else m["status"], "built_as": m["status"],
                     "why": damaged or (why_stale(m.get("inputs", {}), now) if stale else
                                        "; ".join(m.get("reasons", []))),
                     "accepted": bool(m.get("accepted")), "model": m.get("source"),
                     "model_hash": m.get("inputs", {}).get("model"), "max_abs_dlogit": f.get("max_abs_dlogit"),
                     "rel_dlogit": f.get("rel_dlogit"), "wer": f.get("wer"), "wer_fp32": f.get("wer_fp32"),
                     "wer_delta_points": f.get("wer_delta_points"), "gate": m.get("gate"),
                     "size_mb": round(m.get("bytes", 0) / 2**20, 2), "created": m.get("created"),
                     "dir": str(art.dir)})
    return rows
