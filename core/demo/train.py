"""Train the offline Hindi demo model from scratch on espeak-ng speech: ``python -m core.demo.train``.

1. composes ``--corpus-size`` distinct Hindi sentences from the templates in ``core/demo/hindi_text.py``;
2. synthesises ``--renditions`` clips of each with random espeak-ng voices (variant, speed, pitch, word gap,
   stretch, noise, gain; the held-out voice variants and speed band excluded), in parallel processes;
3. builds a Devanagari character ``Wav2Vec2CTCTokenizer`` ([PAD]=0 is the CTC blank, [UNK], "|" between
   words) and a 16 kHz ``Wav2Vec2FeatureExtractor`` in one ``Wav2Vec2Processor``;
4. trains a small randomly initialised ``Wav2Vec2ForCTC`` with CTC loss (AdamW, warm-up then cosine decay,
   bf16 autocast on CUDA), until ``--steps`` or ``--minutes`` runs out;
5. scores greedy FP32 decoding (``processor.batch_decode``) on the held-out set ``data/demo_testset``
   (WER/CER with jiwer after NFC + punctuation/danda removal) and saves model + processor
   (``save_pretrained``, safetensors), ``training.json`` and a model card ``README.md`` into ``--out``.

CPU check (tiny, minutes):  python -m core.demo.train --device cpu --corpus-size 200 --steps 20 --out /tmp/demo
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import hindi_text, synth

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "models" / "demo-hindi-synth"
DEFAULT_TESTSET = REPO / "data" / "demo_testset" / "manifest.tsv"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------- processor and model

def build_processor(sentences, workdir: Path):
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2}
    for ch in hindi_text.charset(sentences):
        vocab[ch] = len(vocab)
    path = workdir / "vocab.json"
    path.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    tok = Wav2Vec2CTCTokenizer(str(path), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|",
                               bos_token=None, eos_token=None, do_lower_case=False)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=synth.SAMPLE_RATE, padding_value=0.0,
                                  do_normalize=True, return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)


def build_model(processor, hidden=256, layers=6, heads=4, ffn=768):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    config = Wav2Vec2Config(
        vocab_size=len(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=None,
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
        # small conv front end: 7 layers, total stride 320 (20 ms frames at 16 kHz), receptive field 25 ms
        conv_dim=(64, 128, 128, 128, 128, 256, 256), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), feat_extract_norm="layer", do_stable_layer_norm=True,
        conv_bias=True, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16,
        hidden_dropout=0.05, attention_dropout=0.05, activation_dropout=0.05, feat_proj_dropout=0.05,
        final_dropout=0.05, layerdrop=0.0,
        mask_time_prob=0.05, mask_time_length=5, mask_time_min_masks=1, mask_feature_prob=0.0,
        ctc_loss_reduction="mean", ctc_zero_infinity=True,
    )
    return Wav2Vec2ForCTC(config)


# ---------------------------------------------------------------- data

def make_corpus(args):
    sentences = hindi_text.training_sentences(args.corpus_size, seed=args.seed)
    rng = random.Random(args.seed + 1)
    items = [(s, synth.train_voice(rng)) for s in sentences for _ in range(args.renditions)]
    t0 = time.time()
    log(f"synthesising {len(items)} clips ({len(sentences)} sentences x {args.renditions}) "
        f"with {args.workers or os.cpu_count()} processes")
    audio = synth.render_many(items, workers=args.workers, log=log)
    keep = [i for i, a in enumerate(audio) if a is not None and len(a) > 1600]
    clips = [audio[i] for i in keep]
    texts = [hindi_text.normalize(items[i][0]) for i in keep]
    hours = sum(len(a) for a in clips) / synth.SAMPLE_RATE / 3600
    log(f"synthesised {len(clips)} clips, {hours:.2f} h of audio, in {time.time() - t0:.0f} s")
    return sentences, clips, texts, time.time() - t0, hours


def batches(lengths: np.ndarray, max_samples: int, rng: np.random.Generator, max_items: int):
    """Length-bucketed batches (padded size <= max_samples), in random order; jitter varies them per epoch."""
    order = np.argsort(lengths * rng.uniform(0.9, 1.1, size=len(lengths)))
    out, cur, longest = [], [], 0
    for i in order:
        n = max(longest, int(lengths[i]))
        if cur and (n * (len(cur) + 1) > max_samples or len(cur) >= max_items):
            out.append(cur)
            cur, n = [], int(lengths[i])
        cur.append(int(i))
        longest = n
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(idx, clips, label_ids, device):
    lens = torch.tensor([len(clips[i]) for i in idx])
    x = torch.zeros(len(idx), int(lens.max()))
    for row, i in enumerate(idx):
        x[row, : len(clips[i])] = torch.from_numpy(clips[i])
    mask = (torch.arange(x.shape[1])[None, :] < lens[:, None]).long()
    labels = torch.full((len(idx), max(len(label_ids[i]) for i in idx)), -100, dtype=torch.long)
    for row, i in enumerate(idx):
        labels[row, : len(label_ids[i])] = torch.tensor(label_ids[i])
    return x.to(device, non_blocking=True), mask.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def normalize_batch(x, mask):
    """Wav2Vec2FeatureExtractor's do_normalize on the GPU: zero mean, unit variance over each clip's samples."""
    m = mask.to(x.dtype)
    n = m.sum(1, keepdim=True)
    mean = (x * m).sum(1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + 1e-7) * m


# ---------------------------------------------------------------- scoring

def score(refs, hyps):
    refs = [hindi_text.normalize(r) for r in refs]
    hyps = [hindi_text.normalize(h) for h in hyps]
    try:
        import jiwer
        return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))
    except ImportError:  # same definitions (corpus edit distance / reference length), without jiwer
        def ed(a, b):
            prev = list(range(len(b) + 1))
            for i, ca in enumerate(a, 1):
                cur = [i]
                for j, cb in enumerate(b, 1):
                    cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
                prev = cur
            return prev[-1]
        w = sum(ed(r.split(), h.split()) for r, h in zip(refs, hyps)) / sum(len(r.split()) for r in refs)
        c = sum(ed(r, h) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)
        return w, c


@torch.no_grad()
def transcribe(model, processor, clips, device="cpu", batch_size=1):
    """Greedy CTC decoding, FP32, through the processor's own feature extraction and batch_decode."""
    model.eval()
    out = []
    for i in range(0, len(clips), batch_size):
        inputs = processor(clips[i: i + batch_size], sampling_rate=synth.SAMPLE_RATE, return_tensors="pt",
                           padding=True)
        logits = model(inputs.input_values.to(device), attention_mask=inputs.attention_mask.to(device)).logits
        out += processor.batch_decode(logits.argmax(-1).cpu())
    return out


def load_testset(manifest: Path):
    rows = manifest.read_text(encoding="utf-8").splitlines()
    header = rows[0].split("\t")
    pi, si = header.index("path"), header.index("sentence")
    clips, refs = [], []
    for line in rows[1:]:
        if not line.strip():
            continue
        cols = line.split("\t")
        audio, rate = synth.read_wav(manifest.parent / cols[pi])
        assert rate == synth.SAMPLE_RATE, f"{cols[pi]}: {rate} Hz"
        clips.append(audio)
        refs.append(cols[si])
    return clips, refs


# ---------------------------------------------------------------- training

def hardware(device: str) -> str:
    cpu = f"{os.cpu_count()} CPU cores"
    if device.startswith("cuda"):
        return f"1x {torch.cuda.get_device_name(0)}, {cpu}"
    return f"CPU only ({platform.processor() or platform.machine()}), {cpu}"


def lr_at(progress: float, peak: float, warmup: float) -> float:
    if progress < warmup:
        return peak * progress / warmup
    p = (progress - warmup) / max(1e-9, 1 - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m core.demo.train", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to save model + processor")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--steps", type=int, default=100000, help="max optimiser steps")
    ap.add_argument("--minutes", type=float, default=7.0, help="training wall-clock budget (LR schedule follows it)")
    ap.add_argument("--corpus-size", type=int, default=6000, help="distinct training sentences")
    ap.add_argument("--renditions", type=int, default=2, help="synthesised clips per sentence (different voices)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="synthesis processes (0: all cores)")
    ap.add_argument("--batch-seconds", type=float, default=240.0, help="padded audio seconds per batch")
    ap.add_argument("--max-batch", type=int, default=160, help="max clips per batch")
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=float, default=0.08, help="warm-up, as a fraction of the budget")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--testset", type=Path, default=DEFAULT_TESTSET, help="held-out manifest.tsv")
    ap.add_argument("--eval-every", type=float, default=40.0, help="seconds between validation checks")
    args = ap.parse_args(argv)
    command = " ".join(["python -m core.demo.train"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(f"device {device}: {hardware(device)}; torch {torch.__version__}")
    t_start = time.time()

    sentences, clips, texts, synth_s, hours = make_corpus(args)
    work = Path(tempfile.mkdtemp(prefix="demo-train-"))
    processor = build_processor(sentences, work)
    label_ids = [processor.tokenizer(t).input_ids for t in texts]
    assert all(processor.tokenizer.unk_token_id not in ids for ids in label_ids)

    # 2 % of the clips (whole sentences) for validation of the training distribution
    n_val = max(8, len(clips) // 50)
    val_idx = list(range(len(clips) - n_val, len(clips)))
    train_idx = np.arange(len(clips) - n_val)
    lengths = np.array([len(clips[i]) for i in train_idx])

    model = build_model(processor, args.hidden, args.layers, args.heads, args.ffn).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters, vocab {len(processor.tokenizer)}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "masked_spec_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "masked_spec_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8, fused=cuda)

    max_samples = int(args.batch_seconds * synth.SAMPLE_RATE)
    rng = np.random.default_rng(args.seed)
    budget = args.minutes * 60
    step, epoch, t0, last_eval = 0, 0, time.time(), time.time()
    history = []
    skipped, bad_run, lr_scale = 0, 0, 1.0
    best, best_state = {"step": 0, "val_cer": float("inf")}, None

    def validate():
        nonlocal best_state
        hyps = transcribe(model, processor, [clips[i] for i in val_idx[:200]], device, batch_size=32)
        w, c = score([texts[i] for i in val_idx[:200]], hyps)
        history.append({"step": step, "seconds": round(time.time() - t0, 1), "val_wer": round(w, 4),
                        "val_cer": round(c, 4)})
        if c < best["val_cer"]:
            best.update(step=step, val_cer=c, val_wer=w)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log(f"  validation (seen voices) WER {w:.3f} CER {c:.3f} (best CER {best['val_cer']:.3f} at step "
            f"{best['step']}) | {hyps[0]!r} <- {texts[val_idx[0]]!r}")
    done = False
    while not done:
        epoch += 1
        for b in batches(lengths, max_samples, rng, args.max_batch):
            progress = max(step / args.steps, (time.time() - t0) / budget)
            if progress >= 1.0:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_scale * lr_at(progress, args.lr, args.warmup)
            model.train()
            x, mask, labels = collate([int(train_idx[i]) for i in b], clips, label_ids, device)
            x = normalize_batch(x, mask)
            with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
                loss = model(x, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            step += 1
            if not (math.isfinite(loss.item()) and math.isfinite(float(gnorm))):
                skipped += 1
                bad_run += 1
                opt.zero_grad(set_to_none=True)
                if bad_run >= 10 and best_state is not None:  # diverged: back to the best weights, lower LR
                    model.load_state_dict(best_state)
                    opt.state.clear()
                    lr_scale *= 0.5
                    bad_run = 0
                    log(f"step {step}: diverged; restored step {best['step']} weights, LR scale {lr_scale}")
                continue
            bad_run = 0
            opt.step()
            if step % 50 == 0 or step <= 3:
                log(f"step {step} epoch {epoch} loss {loss.item():.3f} gnorm {float(gnorm):.2f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} batch {len(b)} t {time.time() - t0:.0f}s")
            if time.time() - last_eval > args.eval_every:
                validate()
                last_eval = time.time()
    train_s = time.time() - t0
    log(f"trained {step} steps ({epoch} epochs) in {train_s:.0f} s; {skipped} non-finite steps skipped")
    validate()
    if best_state is not None and best["step"] != step:
        model.load_state_dict(best_state)
        log(f"keeping the weights of step {best['step']} (best validation CER)")

    # ---- final evaluation in FP32, as the tests and the workbench run it
    model = model.float().to(device).eval()
    hyps = transcribe(model, processor, [clips[i] for i in val_idx], device, batch_size=32)
    val_wer, val_cer = score([texts[i] for i in val_idx], hyps)
    log(f"validation (seen voices, {len(val_idx)} clips): WER {val_wer:.4f} CER {val_cer:.4f}")
    heldout = {}
    if args.testset.is_file():
        test_clips, refs = load_testset(args.testset)
        hyps = transcribe(model, processor, test_clips, device, batch_size=1)
        wer, cer = score(refs, hyps)
        heldout = {"heldout_wer": round(wer, 4), "heldout_cer": round(cer, 4), "heldout_clips": len(refs)}
        log(f"HELD-OUT ({len(refs)} clips, unseen sentences + voices): WER {wer:.4f} CER {cer:.4f}")
        for r, h in zip(refs, hyps):
            if hindi_text.normalize(r) != hindi_text.normalize(h):
                log(f"  ref {hindi_text.normalize(r)!r}\n  hyp {h!r}")
    else:
        log(f"no held-out set at {args.testset}: run python -m core.demo.testset first")

    args.out.mkdir(parents=True, exist_ok=True)
    model.cpu().save_pretrained(args.out, safe_serialization=True)
    processor.save_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    info = {
        "model": "demo-hindi-synth", "architecture": "Wav2Vec2ForCTC (random init)",
        "params": n_params, "size_bytes_model_safetensors": (args.out / "model.safetensors").stat().st_size,
        "hardware": hardware(device), "device": device, "torch": torch.__version__,
        "transformers": __import__("transformers").__version__, "precision": "bf16 autocast" if cuda else "fp32",
        "train_seconds": round(train_s, 1), "synth_seconds": round(synth_s, 1), "kept_step": best["step"],
        "skipped_steps": skipped,
        "total_seconds": round(time.time() - t_start, 1), "steps": step, "epochs": epoch,
        "corpus_sentences": len(sentences), "corpus_clips": len(clips), "corpus_hours": round(hours, 2),
        "corpus_size": len(sentences), "vocab_size": len(processor.tokenizer), "seed": args.seed, "lr": args.lr,
        "val_wer": round(val_wer, 4), "val_cer": round(val_cer, 4), **heldout,
        "eval": "greedy CTC, PyTorch FP32, processor.batch_decode; jiwer WER/CER after NFC, punctuation+danda removed, whitespace collapsed",
        "command": command, "history": history,
    }
    (args.out / "training.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (args.out / "README.md").write_text(model_card(info), encoding="utf-8")
    log(f"saved to {args.out} ({size / 1e6:.1f} MB)")
    return info


def model_card(info: dict) -> str:
    wer = f"{info['heldout_wer'] * 100:.1f} %" if "heldout_wer" in info else "n/a"
    cer = f"{info['heldout_cer'] * 100:.1f} %" if "heldout_cer" in info else "n/a"
    return f"""# demo-hindi-synth

**Synthetic-speech demo model, trained on espeak-ng Hindi. It is NOT a general Hindi recogniser**: it
has only ever heard the espeak-ng synthesiser read sentences composed from a small vocabulary
(`core/demo/hindi_text.py`, about 400 words), and will do poorly on human speech.

It exists so that the workbench has a real, offline, small CTC model whose transcripts can be checked:
export, backend parity and WER computations can be exercised on it without downloading anything.

| | |
| --- | --- |
| architecture | `Wav2Vec2ForCTC`, randomly initialised and trained from scratch (no pre-training) |
| parameters | {info['params']:,} ({info['params'] / 1e6:.2f} M), {info['size_bytes_model_safetensors'] / 1e6:.1f} MB safetensors (FP32) |
| vocabulary | {info['vocab_size']} tokens: Devanagari characters (code points, NFC); `[PAD]` (id 0) is the CTC blank, `[UNK]`, `|` between words |
| input | 16 kHz mono, normalised by the processor's `Wav2Vec2FeatureExtractor` |
| training data | {info['corpus_sentences']:,} template sentences x voices = {info['corpus_clips']:,} espeak-ng clips ({info['corpus_hours']} h) |
| training | {info['steps']:,} steps, {info['train_seconds'] / 60:.1f} min on {info['hardware']} ({info['precision']}), plus {info['synth_seconds']:.0f} s of synthesis; weights kept from step {info.get('kept_step', info['steps']):,} (best CER on a 2 % validation split of the training voices; the held-out set plays no part in training or selection) |
| held-out WER / CER | **{wer} / {cer}** on `data/demo_testset` ({info.get('heldout_clips', 0)} clips; sentences from templates and a voice variant + speed band never used in training), greedy decoding, PyTorch FP32 |

Scores: jiwer WER/CER after Unicode NFC, removing punctuation (the danda । and ॥ included) and
collapsing whitespace.

Reproduce (espeak-ng, soxr, jiwer needed; a GPU makes it minutes):

```
python -m core.demo.testset          # the held-out set (already shipped in data/demo_testset)
{info['command']}
```

Use:

```python
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
processor = Wav2Vec2Processor.from_pretrained("models/demo-hindi-synth")
model = Wav2Vec2ForCTC.from_pretrained("models/demo-hindi-synth").eval()
inputs = processor(audio_16k, sampling_rate=16000, return_tensors="pt")
text = processor.batch_decode(model(**inputs).logits.argmax(-1))[0]
```
"""


if __name__ == "__main__":
    main()
