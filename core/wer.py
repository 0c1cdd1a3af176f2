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

WINDOW_S = 20.0   # transcribe()'s window: longer clips are windowed one by one
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


def evaluate(backend, loaded, manifest, limit: int | None = None, beam: bool = False, batch_size: int = 1,
             warmup_batches: int = 1) -> dict:
    """Transcribe every clip of a manifest with a loaded backend and score it, timing RTFx the way the Open ASR
    Leaderboard does: clips decoded first (file reading is not timed), sorted by duration and cut into batches of
    `batch_size` (similar lengths pad little), `warmup_batches` run once untimed, then every batch timed end to end
    (audio -> features -> forward -> text); rtfx = total audio seconds / total transcription seconds."""
    import time
    from .audio import load_audio
    from .transcribe import transcribe, transcribe_batch
    from .errors import AudioError
    items = load_manifest(manifest)[:limit]
    clips, skipped = [], []
    for audio_path, ref in items:  # a missing or broken clip is skipped and reported, the rest are scored
        try:
            clips.append((audio_path, ref, load_audio(audio_path, loaded.sample_rate)))
        except AudioError as err:
            skipped.append({"audio": str(audio_path), "error": err.message})
    order = sorted(range(len(clips)), key=lambda i: clips[i][2].duration)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def run(batch: list[int]) -> list[str | None]:
        audios = [clips[i][2] for i in batch]
        # one padded batch when every clip fits one model window; else (and for beam search) clip by clip, windowed
        if len(batch) > 1 and not beam and max(a.duration for a in audios) <= WINDOW_S:
            return transcribe_batch([a.samples for a in audios], backend, loaded)
        texts = []
        for a in audios:
            try:
                texts.append(transcribe(a, backend, loaded, beam=beam, window_s=WINDOW_S).text)
            except AudioError as err:   # too short for one frame: reported, not scored
                skipped.append({"audio": a.name, "error": err.message})
                texts.append(None)
        return texts

    unreadable = len(skipped)
    for batch in batches[:warmup_batches]:
        run(batch)
    del skipped[unreadable:]   # the timed pass below reports the warm-up's too-short clips again
    hyps: dict[int, str | None] = {}
    seconds = 0.0
    for batch in batches:
        t = time.perf_counter()
        texts = run(batch)
        seconds += time.perf_counter() - t
        hyps.update(zip(batch, texts))
    scored = [i for i in range(len(clips)) if hyps.get(i) is not None]
    if not scored:
        raise ManifestError(f"None of the {len(items)} clips of {manifest} could be read "
                            f"(first: {skipped[0]['error'] if skipped else 'none listed'}).",
                            "Check the audio paths (relative paths resolve against the manifest's folder).")
    result = scores([clips[i][1] for i in scored], [hyps[i] for i in scored])
    audio_s = sum(clips[i][2].duration for i in scored)
    result.update(rtfx=audio_s / seconds if seconds > 0 else None, audio_s_total=audio_s, transcribe_s_total=seconds,
                  batch_size=batch_size, warmup_batches=min(warmup_batches, len(batches)))
    result["utterances"] = [{"audio": clips[i][0].name, "reference": clips[i][1], "hypothesis": hyps[i]}
                            for i in scored]
    result["skipped"] = skipped
    return result
