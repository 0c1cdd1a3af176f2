"""Load a CTC speech model with its processor: from the Hub, a local directory, the demo model,
or a named architecture with random weights (for speed work only)."""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelNotFoundError
from .paths import DEMO_MODEL_DIR

REFERENCE_MODEL = "ai4bharat/indicwav2vec-hindi"
DEMO = "demo"
RANDOM_PREFIX = "random:"

# Shapes for random-weight models. "wav2vec2-large" is indicwav2vec-hindi's shape.
_CONV = dict(conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2))
ARCHITECTURES = {
    "wav2vec2-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, conv_dim=(512,) * 7, num_conv_pos_embeddings=128,
                           num_conv_pos_embedding_groups=16, **_CONV),
    "wav2vec2-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=4, **_CONV),
}

# Devanagari characters of a Hindi CTC vocabulary (~70 symbols with the specials).
_RARE = set("\u090C\u090D\u090E\u0911\u0912\u0929\u0931\u0934\u0944\u0945\u0946\u0949\u094A")
DEVANAGARI = [chr(c) for c in range(0x0901, 0x094E) if chr(c) not in _RARE and c not in (0x0904, 0x093A, 0x093B)]


@dataclass
class LoadedModel:
    source: str          # what was asked for: "demo", "random:wav2vec2-tiny", a Hub id or a path
    kind: str            # "hub" | "local" | "demo" | "random"
    model: object        # transformers *ForCTC, eval mode, FP32, on the CPU
    processor: object    # transformers processor (feature extractor + CTC tokenizer)
    notice: str = ""     # why this model was chosen, e.g. a fallback from an unreachable Hub
    info: dict = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return self.kind == "random"

    @property
    def key(self) -> str:
        """A filesystem-safe name for this model's artifacts."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.source.strip("/")).strip("_") or "model"

    @property
    def label(self) -> str:
        if self.kind == "random":
            return f"{self.source[len(RANDOM_PREFIX):]} (random weights — WER meaningless)"
        if self.kind == "demo":
            return "demo-hindi-synth (synthetic-speech demo model, not a general Hindi recogniser)"
        return self.source

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def uses_attention_mask(self) -> bool:
        """Layer-norm feature extractors (wav2vec2-large, indicwav2vec) need the mask for padded batches."""
        return bool(getattr(self.processor.feature_extractor, "return_attention_mask", False))

    def describe(self) -> dict:
        params = sum(p.numel() for p in self.model.parameters())
        cfg = self.model.config
        return {"source": self.source, "label": self.label, "kind": self.kind,
                "random_weights": self.random_weights, "architecture": cfg.model_type,
                "parameters": params, "size_mb_fp32": round(params * 4 / 2**20, 1),
                "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                "vocab_size": cfg.vocab_size, "sample_rate": self.sample_rate,
                "attention_mask": self.uses_attention_mask, "notice": self.notice}


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(name_or_path: str, local_only: bool):
    from transformers import AutoModelForCTC, AutoProcessor
    processor = AutoProcessor.from_pretrained(name_or_path, local_files_only=local_only)
    model = AutoModelForCTC.from_pretrained(name_or_path, local_files_only=local_only,
                                            attn_implementation="sdpa")
    return model.float().eval(), processor


def devanagari_processor():
    """A Wav2Vec2Processor with a Devanagari character vocabulary (for random-weight models)."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(DEVANAGARI)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tok = Wav2Vec2CTCTokenizer(str(path), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|",
                                   bos_token=None, eos_token=None)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                  do_normalize=True, return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)


def build_random(arch: str, seed: int = 0):
    """A Wav2Vec2ForCTC of a named shape with random weights (stable layer norm, as indicwav2vec)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    if arch not in ARCHITECTURES:
        raise ModelNotFoundError(f"Unknown architecture '{arch}'.",
                                 f"Choose one of: {', '.join(ARCHITECTURES)}.")
    processor = devanagari_processor()
    cfg = Wav2Vec2Config(vocab_size=len(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id,
                         feat_extract_norm="layer", do_stable_layer_norm=True, ctc_loss_reduction="mean",
                         attn_implementation="sdpa", **ARCHITECTURES[arch])
    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(cfg).eval(), processor


def load_model(source: str | None = None) -> LoadedModel:
    """Load by source. None means the reference model, falling back to the offline demo model
    when the Hub cannot be reached; an explicit source that cannot be loaded is an error."""
    if source is None:
        try:
            return load_model(REFERENCE_MODEL)
        except ModelNotFoundError as err:
            loaded = load_model(DEMO)
            loaded.notice = f"{REFERENCE_MODEL} unavailable ({err.message.rstrip('.')}); using the offline demo model."
            return loaded
    if source.startswith(RANDOM_PREFIX):
        model, processor = build_random(source[len(RANDOM_PREFIX):])
        return LoadedModel(source, "random", model, processor)
    if source == DEMO:
        if not (DEMO_MODEL_DIR / "config.json").exists():
            raise ModelNotFoundError(f"The demo model is missing from {DEMO_MODEL_DIR}.",
                                     "Retrain it with `python -m core.demo.train` or restore the folder from git.")
        model, processor = _from_pretrained(str(DEMO_MODEL_DIR), local_only=True)
        return LoadedModel(DEMO, "demo", model, processor)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json, so it is not a saved Hugging Face model.",
                                     "Point at a folder written by save_pretrained().")
        try:
            model, processor = _from_pretrained(str(path), local_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ModelNotFoundError(f"Could not load the model in {path}: {err}",
                                     "It must be a CTC model saved with its processor (save_pretrained).") from err
        return LoadedModel(str(path), "local", model, processor)
    if source.count("/") > 1 or source.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"No model folder at {source}.", "Check the path, or give a Hugging Face id.")
    try:  # the local Hugging Face cache first: no network needed
        model, processor = _from_pretrained(source, local_only=True)
        return LoadedModel(source, "hub", model, processor)
    except (OSError, ValueError):
        pass
    if not _hub_reachable():
        raise ModelNotFoundError(f"'{source}' is not in the local Hugging Face cache and the Hub is unreachable.",
                                 "Use the demo model (--model demo), a local directory, or set HF_ENDPOINT to a mirror.")
    try:
        model, processor = _from_pretrained(source, local_only=False)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"Could not load '{source}' from the Hugging Face Hub: {err}",
                                 "Check the model id; it must be a CTC speech model with a processor.") from err
    return LoadedModel(source, "hub", model, processor)
