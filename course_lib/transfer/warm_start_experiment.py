"""Does warm-starting pay for translation? Multi30k German → English with MiniLM's WordPiece on both sides.

::

    pairs (German, English) ─ MiniLM's uncased WordPiece ─► source [CLS] … [SEP],  labels … [SEP]
    contender (warm-started / random / warm encoder + random decoder) ─ same batches, steps, schedule ─► trained
    test2016 German ─ greedy_generate ─► English ids ─ decode ─► lower-cased text ─ sacrebleu ─► BLEU

**One tokenizer for both languages.** MiniLM's vocabulary is English (uncased: it lower-cases and strips
accents); German goes through it too, so the source is split into more, shorter pieces and a few
characters become ``[UNK]`` — :func:`tokenizer_coverage` measures both. The decoder starts from
``[CLS]`` and stops at ``[SEP]`` (BERT has no BOS/EOS).

**BLEU against lower-cased references.** The model can only write lower-case text, so cased BLEU would
count every capital letter of the references as a miss that no translation could avoid; lower-casing
the references (:func:`lowercase_bleu`, through :func:`course_lib.seq2seq.translation.corpus_bleu`)
scores what the model can get right. The tokenizer's detokenised output (``a dog .`` → ``a dog.``) goes to
sacrebleu as is: its ``13a`` tokenization splits punctuation again.

**Equal footing.** Every contender sees the same pairs in the same length-bucketed batches
(:class:`course_lib.seq2seq.translation.BucketedBatches`, same seed), for the same number of steps, with
the same AdamW settings and learning-rate schedule (linear warm-up, linear decay:
:func:`course_lib.pretraining.training.learning_rate`). Not covered: beam search, tuning per contender,
a German vocabulary (the point is reusing the pretrained one).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..pretraining.training import learning_rate
from ..seq2seq.translation import BucketedBatches, corpus_bleu, pad_batch
from .warm_start import IGNORE_INDEX, BertEncoderDecoder, greedy_generate

__all__ = ["Seq2SeqSettings", "encode_pairs", "lowercase_bleu", "tokenizer_coverage", "train_translator",
           "translate_greedy"]


@dataclass
class Seq2SeqSettings:
    steps: int = 250
    max_sentences: int = 32  # pairs per batch (at most)
    max_tokens: int = 1600  # padded tokens per batch (at most): batch size × the longer side
    lr: float = 2e-4
    warmup: float = 0.1  # share of the steps
    weight_decay: float = 0.01
    max_length: int = 80  # WordPieces per side, special tokens included (test2016's longest German source: 67)

    def to_dict(self) -> dict:
        return asdict(self)


def tokenizer_coverage(tokenizer, sentences: Sequence[str]) -> dict:
    """How a WordPiece tokenizer splits ``sentences``: pieces per whitespace word, the share of pieces that
    are ``[UNK]``, and the share of words holding one (special tokens not counted)."""
    pieces = words = unknown_pieces = unknown_words = 0
    for sentence in sentences:
        for word in sentence.split():
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            unknown = sum(i == tokenizer.unk_token_id for i in ids)
            words, pieces = words + 1, pieces + len(ids)
            unknown_pieces, unknown_words = unknown_pieces + unknown, unknown_words + (unknown > 0)
    if not words:
        raise ValueError("tokenizer_coverage got no words")
    return {"sentences": len(sentences), "words": words, "pieces": pieces,
            "pieces_per_word": round(pieces / words, 3), "unk_piece_rate": round(unknown_pieces / pieces, 5),
            "unk_word_rate": round(unknown_words / words, 5)}


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int) -> tuple[list, list]:
    """``(sources, targets)``: source ids ``[CLS] … [SEP]`` and target ids ``… [SEP]`` (the decoder reads them
    behind ``[CLS]``), each cut to ``max_length`` pieces with the closing ``[SEP]`` kept."""
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS], a piece and [SEP]; got {max_length}")
    sources, targets = [], []
    for source, target in pairs:
        source_ids = tokenizer(source, add_special_tokens=False)["input_ids"][:max_length - 2]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:max_length - 1]
        sources.append([tokenizer.cls_token_id, *source_ids, tokenizer.sep_token_id])
        targets.append([*target_ids, tokenizer.sep_token_id])
    return sources, targets


def train_translator(model: BertEncoderDecoder, sources: list, targets: list, settings: Seq2SeqSettings, seed: int,
                     *, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train ``model`` in place; the batches depend on ``seed`` only, so every contender sees the same ones.
    Returns ``{"steps", "seconds", "loss_history": [[step, mean loss over the last 50 steps], …]}``."""
    pad = model.pad_token_id
    torch.manual_seed(seed)  # dropout
    batches = BucketedBatches(sources, targets, max_tokens=settings.max_tokens,
                              max_sentences=settings.max_sentences, seed=seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no weight decay on biases and norms
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr)
    model.train()
    history, recent, step, start = [], [], 0, time.perf_counter()
    while step < settings.steps:
        for source, target in batches:  # one epoch; the next is re-cut and reshuffled
            if step == settings.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step / settings.steps, settings.lr, settings.warmup)
            labels = target.masked_fill(target == pad, IGNORE_INDEX)  # (B, T) padding is not scored
            loss = model(source, attention_mask=source != pad, labels=labels,
                         decoder_attention_mask=None).loss
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}: lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            recent.append(loss.item())
            if step % 50 == 0 or step == settings.steps:
                history.append([step, round(sum(recent) / len(recent), 4)])
                recent.clear()
            if on_step:
                on_step(step, loss.item())
    model.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - start, 1), "loss_history": history}


def translate_greedy(model: BertEncoderDecoder, tokenizer, sentences: Sequence[str], *, batch_size: int = 50,
                     max_length: int = 80, max_new_tokens: int = 40) -> list[str]:
    """Greedy translations (lower-case text) of ``sentences``, batched by similar length, each at most
    ``max_new_tokens`` pieces (test2016's references: 14.5 pieces on average with ``[SEP]``, 35 at most)."""
    if isinstance(sentences, str):
        raise TypeError("translate_greedy takes a list of sentences; wrap a single one as [sentence]")
    sources, _ = encode_pairs(tokenizer, [(s, "") for s in sentences], max_length)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths share a batch
    outputs = [""] * len(sources)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin:begin + batch_size]
        source = pad_batch([sources[i] for i in chunk], model.pad_token_id)  # (b, S)
        generated = greedy_generate(model, source, source != model.pad_token_id, max_new_tokens)  # (b, 1 + L)
        for i, ids in zip(chunk, generated.tolist()):
            outputs[i] = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()
    return outputs


def lowercase_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, ``13a``) of lower-case hypotheses against the lower-cased references."""
    return corpus_bleu([h.lower() for h in hypotheses], [r.lower() for r in references])
