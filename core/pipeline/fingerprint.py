"""What a model's artifacts depend on: the bytes of its weight, config and processor files, the Hub revision it
came from, or, for random weights, the architecture and the libraries that initialised it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..paths import DEMO_MODEL_DIR, artifacts_dir, write_json_atomic

MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model")


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a 1.2 GB checkpoint is read once."""
    path = Path(path).resolve()
    st = path.stat()
    cache_path = artifacts_dir() / ".hashes.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    if cache.get(str(path), {}).get("stamp") == stamp:
        return cache[str(path)]["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    cache[str(path)] = {"stamp": stamp, "sha256": h.hexdigest()}
    write_json_atomic(cache_path, cache)
    return h.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    return sorted({p for pattern in MODEL_FILES for p in Path(folder).glob(pattern) if p.is_file()})


def model_fingerprint(loaded) -> str:
    """A hash that changes whenever the model's weights, config or processor change."""
    revision = getattr(loaded.model.config, "_commit_hash", None) if loaded.kind == "hub" else None
    return source_fingerprint(loaded.source, loaded.kind, revision, loaded.model.config.to_json_string()
                              if loaded.kind == "hub" else None)


def source_fingerprint(source: str, kind: str, revision: str | None = None, config_json: str | None = None) -> str:
    """model_fingerprint without loading the model (for listings); a Hub model needs its revision."""
    import torch
    import transformers
    if kind == "random":
        parts = {"random": source, "torch": torch.__version__, "transformers": transformers.__version__}
    elif kind in ("demo", "local"):
        folder = DEMO_MODEL_DIR if kind == "demo" else Path(source).expanduser()
        parts = {f.name: file_sha256(f) for f in folder_files(folder)}
    else:  # the Hub: the revision's commit names every file of it
        parts = {"hub": source, "revision": revision} if revision else {"hub": source, "config": config_json}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def kind_of(source: str) -> str:
    from ..models import DEMO, RANDOM_PREFIX
    if source == DEMO:
        return "demo"
    if source.startswith(RANDOM_PREFIX):
        return "random"
    return "local" if Path(source).expanduser().exists() else "hub"
