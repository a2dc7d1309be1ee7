"""Train the course's Multi30k de→en models and ship them as small checkpoints.

Trains up to three models on the same BPE tokenizers, each for a wall-clock budget:

* ``transformer``: :class:`course_lib.seq2seq.transformer.Transformer`
* ``rnn_attention``: :class:`course_lib.seq2seq.rnn.RNNSeq2Seq` with additive attention
* ``rnn_plain``: the same RNN without attention (the fixed-context bottleneck)

and writes ``course_lib/checkpoints/multi30k_<name>.pt`` (fp16 weights), the tokenizer files in
``multi30k_bpe/`` and the results (BLEU on test2016, steps, time, hardware) in
``multi30k_results.json``. Uses the GPU when there is one. Examples::

    python scripts/train_translation.py --tokenizer-only
    python scripts/train_translation.py --models transformer --seconds 1500 --threads 1
    python scripts/train_translation.py --models rnn_attention rnn_plain --seconds 480 --threads 1
    python scripts/train_translation.py --models transformer --resume --ffn 512 --seconds 5400 --threads 1
    python scripts/train_translation.py --beam-only --beams 4   # add beam-search BLEU to the Transformer's record

The data come from ``COURSE_DATA_DIR`` (or a download), see :mod:`course_lib.data`.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from course_lib.runtime import get_device
from course_lib.seq2seq import translation as tr
from course_lib.seq2seq.rnn import RNNSeq2Seq
from course_lib.seq2seq.training import train_seq2seq
from course_lib.seq2seq.transformer import Transformer


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"CPU ({name}), {torch.get_num_threads()} thread(s)"


def build(name: str, args, src_vocab: int, tgt_vocab: int):
    if name == "transformer":
        return Transformer(src_vocab, tgt_vocab, dim=args.dim, num_heads=args.heads, num_encoder_layers=args.layers,
                           num_decoder_layers=args.layers, ffn_dim=args.ffn, dropout=args.dropout,
                           norm_first=True, max_len=args.max_len, tie_embeddings=True)
    return RNNSeq2Seq(src_vocab, tgt_vocab, embed_dim=args.rnn_embed, hidden_dim=args.rnn_hidden,
                      use_attention=name == "rnn_attention", dropout=args.dropout, max_len=args.max_len)


def update_results(path: Path, name: str, record: dict) -> None:
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[name] = record
    path.write_text(json.dumps(results, indent=2) + "\n")


def train_one(name: str, args, tokenizers, train, valid, out: Path) -> dict:
    torch.manual_seed(args.seed)
    device = get_device(args.device)
    model = build(name, args, len(tokenizers["de"]), len(tokenizers["en"]))
    params = sum(p.numel() for p in model.parameters())
    before = {"steps": 0, "train_seconds": 0.0}
    if args.resume and (out / f"multi30k_{name}.pt").is_file():
        # Continue from the shipped weights (same config); the optimizer's moments start afresh, the
        # learning-rate schedule carries on from the earlier step count.
        previous = tr.load_translation_model(name, out)
        if previous.config != model.config:
            raise ValueError(f"--resume: the checkpoint's config {previous.config} differs from {model.config}")
        model.load_state_dict(previous.state_dict())
        before = previous.checkpoint_info["results"]
        print(f"resuming {name} after {before['steps']} steps and {before['train_seconds']:.0f} s", flush=True)
    print(f"\n== {name}: {params / 1e6:.2f}M parameters, {args.seconds:.0f} s on {hardware(device)}", flush=True)
    train_batches = tr.BucketedBatches(train["src_ids"], train["tgt_ids"], max_tokens=args.max_tokens,
                                        seed=args.seed + before["steps"])  # a resumed run sees new batches
    valid_batches = list(tr.BucketedBatches(valid["src_ids"], valid["tgt_ids"], max_tokens=4096, shuffle=False))
    is_transformer = name == "transformer"
    history = train_seq2seq(model, train_batches, pad_id=tr.PAD_ID, valid_batches=valid_batches, epochs=1000,
                            lr=args.lr if is_transformer else args.rnn_lr, label_smoothing=0.1, clip_norm=1.0,
                            warmup_steps=args.warmup if is_transformer else 0, validate_every=args.validate_every,
                            max_steps=args.steps, max_seconds=args.seconds, device=device, progress=not args.no_progress,
                            start_step=before["steps"])  # a resumed run continues the learning-rate decay
    steps, seconds = before["steps"] + history["step"][-1], before["train_seconds"] + history["seconds"]
    epochs = steps / len(train_batches)
    print(f"{name}: {steps} steps ({epochs:.2f} epochs) in {seconds:.0f} s; "
          f"valid loss {history['valid_loss'][-1]:.3f}", flush=True)
    model.to("cpu").eval()
    start = time.perf_counter()
    score, hypotheses = tr.bleu(model, "test2016", tokenizers=tokenizers, return_translations=True)
    decode_seconds = time.perf_counter() - start
    print(f"{name}: BLEU test2016 = {score:.2f} (greedy, {decode_seconds:.0f} s to translate 1,000 sentences)")
    for line in hypotheses[:3]:
        print("   ", line)
    record = {
        "bleu_test2016": round(score, 2), "bleu_settings": "sacrebleu corpus BLEU, cased, 13a, greedy decoding",
        "parameters": params, "config": model.config, "steps": steps, "epochs": round(epochs, 2),
        "train_seconds": round(seconds, 1), "resumed_after_steps": before["steps"],
        "hardware": hardware(device), "device": history["device"],
        "max_tokens_per_batch": args.max_tokens,
        # a resumed run's validation history continues the earlier one
        "valid_loss": before.get("valid_loss", []) + [round(v, 4) for v in history["valid_loss"]],
        "valid_step": before.get("valid_step", []) + [before["steps"] + s for s in history["valid_step"]],
        "final_train_loss": round(history["train_loss"][-1], 4),
        "translate_seconds_test2016": round(decode_seconds, 1), "torch": str(torch.__version__),
    }
    every = max(1, len(history["train_loss"]) // 200)  # a thinned loss curve for the chapter's plot
    curve = {"step": [before["steps"] + s for s in history["step"][::every]],
             "train_loss": [round(v, 4) for v in history["train_loss"][::every]]}
    if before["steps"]:  # prepend the earlier run's curve
        earlier = previous.checkpoint_info.get("curve", {"step": [], "train_loss": []})
        curve = {key: earlier[key] + curve[key] for key in curve}
    if args.beams > 1 and is_transformer:
        record.update(beam_bleu(model, tokenizers, args.beams))
    path = tr.save_checkpoint(model, out / f"multi30k_{name}.pt", results=record, curve=curve)
    record["checkpoint_mb"] = round(path.stat().st_size / 2**20, 2)
    print(f"{name}: wrote {path} ({record['checkpoint_mb']} MB)", flush=True)
    update_results(out / "multi30k_results.json", name, record)
    return record


def beam_bleu(model, tokenizers, beams: int) -> dict:
    """BLEU on test2016 with beam search (length penalty 1), as extra fields of the model's record."""
    start = time.perf_counter()
    score = tr.bleu(model, "test2016", tokenizers=tokenizers, num_beams=beams)
    seconds = time.perf_counter() - start
    print(f"BLEU test2016 with beam search ({beams} beams) = {score:.2f} ({seconds:.0f} s)", flush=True)
    return {"bleu_test2016_beam": round(score, 2), "beam_settings": f"{beams} beams, length penalty 1.0",
            "translate_seconds_test2016_beam": round(seconds, 1)}


def add_beam_bleu(name: str, out: Path, tokenizers, beams: int) -> None:
    """--beam-only: score a saved Transformer with beam search and add it to its record (weights unchanged)."""
    path = out / f"multi30k_{name}.pt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = tr.load_translation_model(name, out)
    checkpoint["results"].update(beam_bleu(model, tokenizers, beams))
    torch.save(checkpoint, path)
    update_results(out / "multi30k_results.json", name, checkpoint["results"] | {
        "checkpoint_mb": round(path.stat().st_size / 2**20, 2)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(tr.MODEL_NAMES), choices=tr.MODEL_NAMES)
    parser.add_argument("--seconds", type=float, default=1500, help="wall-clock training budget per model")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (if before --seconds)")
    parser.add_argument("--out", type=Path, default=tr.CHECKPOINT_DIR)
    parser.add_argument("--tokenizer-only", action="store_true", help="train and save the tokenizers, then stop")
    parser.add_argument("--retrain-tokenizer", action="store_true", help="replace existing tokenizer files")
    parser.add_argument("--vocab-de", type=int, default=5000)
    parser.add_argument("--vocab-en", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--rnn-embed", type=int, default=128)
    parser.add_argument("--rnn-hidden", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=2048, help="padded tokens per training batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="Transformer peak learning rate")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rnn-lr", type=float, default=2e-3)
    parser.add_argument("--validate-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the model's checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--beams", type=int, default=0, help="also report the Transformer's BLEU with this many beams")
    parser.add_argument("--beam-only", action="store_true",
                        help="train nothing: add the saved Transformer's beam-search BLEU (--beams) to its record")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    bpe_dir = args.out / "multi30k_bpe"
    if args.retrain_tokenizer or not (bpe_dir / "en-vocab.json").is_file():
        start = time.perf_counter()
        tokenizers = tr.train_tokenizers({"de": args.vocab_de, "en": args.vocab_en})
        tr.save_tokenizers(tokenizers, bpe_dir)
        print(f"trained BPE (de {len(tokenizers['de'])}, en {len(tokenizers['en'])} tokens) "
              f"in {time.perf_counter() - start:.0f} s → {bpe_dir}")
    if args.tokenizer_only:
        return 0
    tokenizers = tr.load_tokenizers(bpe_dir)
    if args.beam_only:
        add_beam_bleu("transformer", args.out, tokenizers, args.beams or 4)
        return 0
    train, valid = tr.encode_split("train", tokenizers), tr.encode_split("val", tokenizers)
    for name in args.models:
        train_one(name, args, tokenizers, train, valid, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
