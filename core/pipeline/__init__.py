"""The build pipeline: every artifact (ONNX export, precision variants, ...) is one Spec (what it is, its
content-addressed key) built by one Builder (produce files, measure gate figures) through store.build (lock,
temporary folder, gate, atomic commit). Backends only look artifacts up (Spec.require); they never build."""
from .store import (REJECTED, STALE, VERIFIED, Artifact, NotBuiltError, accept, clean_stale_temps, model_root,
                    read)

__all__ = ["REJECTED", "STALE", "VERIFIED", "Artifact", "NotBuiltError", "accept", "clean_stale_temps", "model_root",
           "read"]
