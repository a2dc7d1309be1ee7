"""EsperBERTo, ours: a small RoBERTa-like masked language model trained from scratch on Esperanto.

The blog "How to train a new language model from scratch" trains a byte-level BPE and a RoBERTa on
Esperanto; we do the same at the course's scale (``scripts/train_esperberto.py`` trains it on the CPU):

* **Data** (:func:`esperanto_corpus`): Zamenhof's *Fundamenta Krestomatio* and *Ekzercaro* (0.95 MB),
  cut into paragraphs (blocks between blank lines, whitespace collapsed). Every 20th paragraph
  (``index % 20 == 10``, counting through both files in registry order) is held out; a held-out
  paragraph that repeats training text (found whole in it, like the headings, or sharing a sentence
  with it: the Krestomatio reprints the Ekzercaro's exercises) is dropped from both sets. Out of
  domain: Tatoeba's 1,000 Esperanto sentences (any found verbatim in the training text dropped: none is).
* **Tokenizer**: the chapter-2 byte-level BPE trained on the training paragraphs only, with RoBERTa's
  special tokens at RoBERTa's ids: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4.
* **Sequences** (:func:`pack`): RoBERTa's "full sentences": the texts' tokens run on, one ``</s>``
  between texts, cut into blocks of 126 tokens, each wrapped as ``<s> … </s>`` (128 positions).
* **Model**: :class:`~course_lib.pretraining.encoder.EncoderForMaskedLM` in RoBERTa's layout; the
  checkpoint stores float16 weights (the tied output matrix once), :func:`load_esperberto` gives float32.

:func:`fill_mask` fills one ``<mask>`` like HF's fill-mask pipeline. Not covered: training
(:mod:`.training`), fine-tuning (``course_lib.pretraining.tagging``), batching of several masks.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..data import load_tatoeba, read_text
from ..runtime import CHECKPOINT_DIR

__all__ = [
    "BOS", "CHECKPOINT", "CORPUS_FILES", "DEMO_SENTENCES", "EOS", "EsperantoCorpus", "MASK", "MaskPrediction",
    "PAD", "RECORD", "SPECIAL_TOKENS", "UNK", "esperanto_corpus", "fill_mask", "load_checkpoint",
    "load_esperberto", "load_tokenizer", "pack", "paragraphs", "save_checkpoint", "sentences",
]

NAME = "esperberto"
CHECKPOINT = CHECKPOINT_DIR / f"{NAME}.pt"  # float16 weights + config; written by scripts/train_esperberto.py
RECORD = CHECKPOINT_DIR / f"{NAME}.json"  # the training record: data, split, config, losses, held-out figures
CORPUS_FILES = ("esperanto/fundamenta_krestomatio.txt", "esperanto/fundamento_ekzercaro.txt")
HELD_OUT_EVERY, HELD_OUT_AT = 20, 10
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BOS, PAD, EOS, UNK, MASK = range(5)  # RoBERTa's ids for them
SPLIT_RULE = (f"paragraphs (blank-line blocks, whitespace collapsed) of {' then '.join(CORPUS_FILES)}; paragraph "
              f"i is held out when i % {HELD_OUT_EVERY} == {HELD_OUT_AT}, except that a held-out paragraph found whole "
              "in the training paragraphs or sharing a sentence of >= 25 characters with them is dropped from "
              "both sets; "
              "out of domain: the 1,000 Tatoeba epo sentences minus any found verbatim in the training text")

# Sentences for the fill-mask demo, written for the course (a test checks that none is in the training
# text): each with the word we would expect, to see what the model does with grammar and meaning.
DEMO_SENTENCES = (
    ("Mia fratino loĝas en granda <mask> apud la maro.", " urbo"),
    ("La infanoj ludas en la <mask> post la lernejo.", " ĝardeno"),
    ("Hieraŭ mi <mask> longan leteron al mia amiko.", " skribis"),
    ("Ĉu vi volas trinki tason da <mask>?", " teo"),
    ("La hundo kuris tra la <mask> kaj kaptis la pilkon.", " kampo"),
    ("Ni devas <mask> la pordon antaŭ la nokto.", " fermi"),
)


class EsperantoCorpus(NamedTuple):
    train: list[str]  # paragraphs the tokenizer and the model learn from
    held_out: list[str]  # in-domain held-out paragraphs
    tatoeba: list[str]  # out-of-domain held-out sentences
    dropped: list[str]  # held-out candidates that repeat training text (in neither set)


def paragraphs(text: str) -> list[str]:
    """Blocks between blank lines, each on one line with its whitespace collapsed (the files wrap at ~70)."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def sentences(paragraph: str, min_chars: int = 25) -> list[str]:
    """The paragraph's sentences of at least ``min_chars`` characters (cut at . ! ? and the texts' dashes)."""
    pieces = re.split(r"(?<=[.!?])\s+|--|―|—", paragraph)
    return [piece.strip() for piece in pieces if len(piece.strip()) >= min_chars]


@functools.lru_cache(maxsize=1)
def esperanto_corpus() -> EsperantoCorpus:
    """The deterministic split described in the module docstring (read-only; same lists on every call)."""
    every = [paragraph for name in CORPUS_FILES for paragraph in paragraphs(read_text(name))]
    train = [p for i, p in enumerate(every) if i % HELD_OUT_EVERY != HELD_OUT_AT]
    candidates = [p for i, p in enumerate(every) if i % HELD_OUT_EVERY == HELD_OUT_AT]
    training_text = "\n".join(train)
    held_out, dropped = [], []
    for paragraph in candidates:
        repeats = paragraph in training_text or any(sentence in training_text for sentence in sentences(paragraph))
        (dropped if repeats else held_out).append(paragraph)
    tatoeba = [sentence for sentence, _ in load_tatoeba("epo") if sentence not in training_text]
    return EsperantoCorpus(train, held_out, tatoeba, dropped)


def pack(tokenizer, texts: list[str], length: int = 128) -> torch.Tensor:
    """RoBERTa's full-sentence blocks ``(N, length)``: texts run on with ``</s>`` between them, cut every
    ``length - 2`` tokens, each block ``<s> … </s>``; only the last block is padded (with ``<pad>``)."""
    if length < 3:
        raise ValueError(f"blocks need room for <s>, </s> and a token: length={length}")
    stream: list[int] = []
    for text in texts:
        if stream:
            stream.append(EOS)
        stream.extend(tokenizer.encode(text, allow_special=False))  # text that reads "<mask>" stays text
    body = length - 2
    blocks = []
    for start in range(0, len(stream), body):
        chunk = [BOS] + stream[start:start + body] + [EOS]
        blocks.append(chunk + [PAD] * (length - len(chunk)))
    return torch.tensor(blocks, dtype=torch.long).reshape(-1, length)


# --- the checkpoint -------------------------------------------------------------------------------

def save_checkpoint(model, path: str | Path, **extra) -> None:
    """Float16 weights and the config; a tied matrix (the MLM head's = the word embeddings) is stored once."""
    state, seen, tied = {}, {}, {}
    for key, tensor in model.state_dict().items():
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if storage in seen:
            tied[key] = seen[storage]
            continue
        seen[storage] = key
        state[key] = tensor.detach().to(torch.float16)
    torch.save({"config": model.config.to_dict(), "state_dict": state, "tied": tied, **extra}, path)


def load_checkpoint(path: str | Path = CHECKPOINT):
    """``(model, checkpoint dict)``: an :class:`EncoderForMaskedLM` in float32, eval mode, on the CPU."""
    from .encoder import EncoderConfig, EncoderForMaskedLM

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = EncoderForMaskedLM(EncoderConfig.from_dict(checkpoint["config"]))
    state = {key: tensor.float() for key, tensor in checkpoint["state_dict"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != set(checkpoint["tied"]):
        raise ValueError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval(), checkpoint


def load_tokenizer(directory: str | Path = CHECKPOINT_DIR):
    """EsperBERTo's byte-level BPE (``esperberto-vocab.json`` + ``esperberto-merges.txt``)."""
    from ..tokenization import ByteLevelBPE

    directory = Path(directory)
    return ByteLevelBPE.load(directory / f"{NAME}-vocab.json", directory / f"{NAME}-merges.txt",
                             special_tokens=SPECIAL_TOKENS)


def load_esperberto():
    """The course's EsperBERTo and its tokenizer: ``(model, tokenizer)``, float32, eval mode, CPU."""
    model, _ = load_checkpoint(CHECKPOINT)
    return model, load_tokenizer()


# --- fill-mask ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaskPrediction:
    token: str  # the predicted token as text (a leading space marks a word start)
    token_id: int
    probability: float
    sequence: str  # the text with the mask filled in


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[MaskPrediction]:
    """The ``top_k`` most probable tokens for the single ``<mask>`` in ``text``, most probable first.

    The text is encoded as RoBERTa does, ``<s> text </s>``, the mask taking the space before it (so a
    predicted word token brings its own); the probabilities are the softmax over the whole vocabulary
    at the mask's position. ``sequence`` is the text with the prediction in place of the mask.
    """
    if not isinstance(text, str):
        raise TypeError(f"fill_mask needs a string with one <mask>, got {type(text).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(tokenizer):
        raise ValueError(f"top_k must be an int from 1 to the vocabulary size {len(tokenizer)}, got {top_k!r}")
    mask_token = SPECIAL_TOKENS[MASK]
    count = text.count(mask_token)
    if count != 1:
        raise ValueError(f"fill_mask fills exactly one {mask_token}; the text has {count}: {text!r}")
    before, after = text.split(mask_token)
    # In training a masked word's token carries its leading space (" urbo"), so "la <mask>" must not leave
    # a lone space token before the mask: the mask takes the space, as RoBERTa's <mask> (lstrip) does.
    before = before[:-1] if before.endswith(" ") else before
    ids = [BOS] + tokenizer.encode(before) + [MASK] + tokenizer.encode(after) + [EOS]
    if len(ids) > model.config.max_length:
        raise ValueError(f"the text is {len(ids)} tokens with <s> and </s>; the model's position table holds "
                         f"{model.config.max_length}: shorten it")
    position = ids.index(MASK)
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device))[0, position]  # (V,)
    probabilities = logits.float().softmax(-1)
    top = probabilities.topk(top_k)
    predictions = []
    for probability, token_id in zip(top.values.tolist(), top.indices.tolist()):
        filled = ids[1:position] + [token_id] + ids[position + 1:-1]
        token = tokenizer.decode([token_id])
        predictions.append(MaskPrediction(token, token_id, probability, tokenizer.decode(filled)))
    return predictions
