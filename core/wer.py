"""Labelled sets (manifests) and WER/CER with jiwer, after a documented text normalisation.

Normalisation, applied to references and hypotheses alike: Unicode NFC (so a nukta written as
one code point or two compares equal), lower case (Latin), every Unicode punctuation character
removed (the danda । and double danda ॥ included), runs of white space collapsed to one space.
"""
from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

from .errors import ManifestError

PATH_KEYS = ("path", "audio", "audio_filepath", "file", "filename", "wav")
TEXT_KEYS = ("sentence", "text", "transcript", "transcription", "reference")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def scores(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER and CER (jiwer) after normalisation; empty references are skipped by jiwer rules."""
    import jiwer
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        raise ManifestError("No non-empty reference texts to score.", "Check the manifest's text column.")
    refs, hyps = zip(*pairs)
    return {"wer": jiwer.wer(list(refs), list(hyps)), "cer": jiwer.cer(list(refs), list(hyps)), "n": len(refs)}


def _pick(row: dict, keys, what: str, path: Path) -> str:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return str(row[k])
    raise ManifestError(f"{path} has no {what} column (looked for {', '.join(keys)}).",
                        "Use a CSV/TSV with a header, or JSONL, with a path and a text field.")


def load_manifest(path) -> list[tuple[Path, str]]:
    """(audio path, reference text) pairs from CSV, TSV (Common Voice layout too) or JSONL.
    Relative audio paths resolve against the manifest's folder, then its clips/ folder (Common Voice)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}", "Give a CSV, TSV or JSONL file of audio paths and texts.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path} is not UTF-8 text (byte {err.start} cannot be read as UTF-8).",
                            "Save the manifest as UTF-8 (Devanagari needs it anyway).") from err
    if not text.strip():
        raise ManifestError(f"{path} is empty.", "Add a header and rows of audio path + text.")
    if path.suffix == ".jsonl":
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as err:
            raise ManifestError(f"{path} is not valid JSONL: {err}", "One JSON object per line.") from err
    else:
        delim = "\t" if path.suffix == ".tsv" or "\t" in text.splitlines()[0] else ","
        quoting = csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL
        try:  # strict: an unterminated quote is an error, not a row that swallows the rest of the file
            rows = list(csv.DictReader(text.splitlines(), delimiter=delim, quoting=quoting, strict=True))
        except csv.Error as err:
            raise ManifestError(f"{path} is not valid {'TSV' if delim == chr(9) else 'CSV'}: {err}.",
                                "Check the quotes on that line (a text with a comma needs \"quotes\" on both "
                                "sides).") from err
    if not rows:
        raise ManifestError(f"{path} lists no clips.", "Add rows of audio path + text.")
    items = []
    for row in rows:
        audio = Path(_pick(row, PATH_KEYS, "audio path", path))
        if not audio.is_absolute():
            audio = next((c for c in (path.parent / audio, path.parent / "clips" / audio) if c.exists()),
                         path.parent / audio)
        items.append((audio, _pick(row, TEXT_KEYS, "text", path)))
    return items


def evaluate(backend, loaded, manifest, limit: int | None = None, beam: bool = False) -> dict:
    """Transcribe every clip of a manifest with a loaded backend and score it."""
    from .audio import load_audio
    from .transcribe import transcribe
    from .errors import AudioError
    items = load_manifest(manifest)[:limit]
    refs, hyps, rows, skipped = [], [], [], []
    for audio_path, ref in items:  # a missing or broken clip is skipped and reported, the rest are scored
        try:
            t = transcribe(load_audio(audio_path, loaded.sample_rate), backend, loaded, beam=beam)
        except AudioError as err:
            skipped.append({"audio": str(audio_path), "error": err.message})
            continue
        refs.append(ref)
        hyps.append(t.text)
        rows.append({"audio": audio_path.name, "reference": ref, "hypothesis": t.text})
    if not refs:
        raise ManifestError(f"None of the {len(items)} clips of {manifest} could be read "
                            f"(first: {skipped[0]['error'] if skipped else 'none listed'}).",
                            "Check the audio paths (relative paths resolve against the manifest's folder).")
    result = scores(refs, hyps)
    result["utterances"] = rows
    result["skipped"] = skipped
    return result
