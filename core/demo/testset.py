"""Write the demo model's held-out test set: ``python -m core.demo.testset`` -> ``data/demo_testset/``.

Sentences come from ``hindi_text.HELDOUT_TEMPLATES`` only (never used in training) and none equals a
training sentence; voices are the held-out espeak-ng variants (``synth.HELDOUT_VARIANTS``) at speeds in
the held-out band (``synth.HELDOUT_SPEED``), neither of which training uses. Clips are 16 kHz mono PCM16
WAV; ``manifest.tsv`` has the Common Voice-like header ``path<TAB>sentence``.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from . import hindi_text, synth

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / "data" / "demo_testset"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m core.demo.testset", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--exclude-corpus", type=int, default=20000,
                    help="drop sentences that occur among this many training sentences (seeds 0-4)")
    args = ap.parse_args(argv)

    exclude = set()
    for seed in range(5):
        exclude |= {hindi_text.normalize(s) for s in hindi_text.training_sentences(args.exclude_corpus, seed=seed)}
    sentences = hindi_text.heldout_sentences(args.n, seed=args.seed, exclude=exclude)
    rng = random.Random(args.seed)
    voices = [synth.heldout_voice(rng, synth.HELDOUT_VARIANTS[i % len(synth.HELDOUT_VARIANTS)])
              for i in range(len(sentences))]
    audio = synth.render_many(list(zip(sentences, voices)))
    clips = args.out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for old in clips.glob("*.wav"):
        old.unlink()
    rows = ["path\tsentence"]
    total = 0.0
    for i, (text, voice, x) in enumerate(zip(sentences, voices, audio), 1):
        if x is None:
            raise SystemExit(f"synthesis failed for {text!r}")
        rel = f"clips/heldout_{i:03d}.wav"
        synth.write_wav(args.out / rel, x)
        total += len(x) / synth.SAMPLE_RATE
        rows.append(f"{rel}\t{text}")
        print(f"{rel}  {voice.voice_name} -s {voice.speed} -p {voice.pitch}  {len(x) / synth.SAMPLE_RATE:.2f}s  {text}")
    (args.out / "manifest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{len(sentences)} clips, {total:.1f} s of audio, {size / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
