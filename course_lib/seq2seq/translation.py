"""Multi30k German→English end to end: subwords, length-bucketed batches, translation and BLEU.

::

    load_multi30k / multi30k_dataset  →  byte-level BPE ids  →  BucketedBatches (src, tgt)  →  train_seq2seq
    trained model + German sentences  →  translate (generate) →  English text  →  bleu (sacrebleu, test2016)

**Tokenization.** One byte-level BPE per language (:mod:`course_lib.tokenization`), trained on that
side of the training split only, with the four special tokens ``<pad> <bos> <eos> <unk>`` in front,
so they have the same ids 0-3 in both vocabularies (the training loop takes one ``pad_id``). A
byte-level vocabulary covers every byte, so ``<unk>`` is never produced; it is there for the
convention. Decoding ids gives back the exact text, so the output needs no detokenizer.

**Batches.** Sources end in ``<eos>``; targets are ``<bos> … <eos>`` (what teacher forcing reads).
:class:`BucketedBatches` sorts sentence pairs by length and cuts the sorted list into batches of
at most ``max_tokens`` padded tokens, so a batch wastes little on padding; each epoch reshuffles
pairs of equal length and the order of the batches.

**BLEU** is sacrebleu's corpus BLEU (its ``13a`` tokenization, cased) against the raw references.
Checkpoints (:func:`save_checkpoint`, :func:`load_translation_model`) store fp16 weights plus the
model's config; ``scripts/train_translation.py`` writes them. Decoding, greedy or beam search, is
:func:`course_lib.decoding.generate` with ``source=`` for all three models (its steppers tell the
Transformer from the RNNs). Not covered: sampling,
joint vocabularies and shared embeddings, other language pairs' checkpoints.
"""
from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..data.loader import multi30k_dataset
from ..decoding.generation import generate
from ..runtime import CHECKPOINT_DIR
from ..tokenization import ByteLevelBPE, train_bpe
from .rnn import RNNSeq2Seq
from .transformer import Transformer

__all__ = [
    "BOS_ID",
    "CHECKPOINT_DIR",
    "EOS_ID",
    "MODEL_NAMES",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TOKENIZER_DIR",
    "UNK_ID",
    "BucketedBatches",
    "bleu",
    "corpus_bleu",
    "encode_split",
    "generate_translations",
    "load_tokenizers",
    "load_translation_model",
    "pad_batch",
    "save_checkpoint",
    "save_tokenizers",
    "train_tokenizers",
    "translate",
]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
TOKENIZER_DIR = CHECKPOINT_DIR / "multi30k_bpe"
MODEL_NAMES = ("transformer", "rnn_attention", "rnn_plain")
_SPLITS = {"test2016": "test_2016_flickr", "test2017": "test_2017_flickr", "test2018": "test_2018_flickr"}

Tokenizers = dict[str, ByteLevelBPE]  # language code -> its BPE


# --- tokenization ----------------------------------------------------------------------------------

def train_tokenizers(vocab_sizes: dict[str, int], src: str = "de", tgt: str = "en") -> Tokenizers:
    """One BPE per language, learnt from the training split, e.g. ``{"de": 6000, "en": 5000}``."""
    train = multi30k_dataset("train", src, tgt)
    return {lang: train_bpe(train[lang], vocab_sizes[lang], special_tokens=SPECIAL_TOKENS) for lang in (src, tgt)}


def save_tokenizers(tokenizers: Tokenizers, directory: str | Path = TOKENIZER_DIR) -> None:
    """Write ``<lang>-vocab.json`` and ``<lang>-merges.txt`` for every language."""
    for lang, tokenizer in tokenizers.items():
        tokenizer.save(directory, prefix=lang)


@functools.lru_cache(maxsize=4)
def _load_tokenizers_cached(directory: str, langs: tuple[str, ...]) -> Tokenizers:
    folder = Path(directory)
    missing = [lang for lang in langs if not (folder / f"{lang}-vocab.json").is_file()]
    if missing:
        raise FileNotFoundError(f"no tokenizer for {missing} in {folder}; run scripts/train_translation.py")
    tokenizers = {lang: ByteLevelBPE.load(folder / f"{lang}-vocab.json", folder / f"{lang}-merges.txt",
                                          SPECIAL_TOKENS) for lang in langs}
    for lang, tokenizer in tokenizers.items():
        if [tokenizer.special_tokens[t] for t in SPECIAL_TOKENS] != [PAD_ID, BOS_ID, EOS_ID, UNK_ID]:
            raise ValueError(f"the {lang} tokenizer in {folder} does not put {SPECIAL_TOKENS} at ids 0-3")
    return tokenizers


def load_tokenizers(directory: str | Path = TOKENIZER_DIR, langs: Sequence[str] = ("de", "en")) -> Tokenizers:
    """The tokenizers :func:`save_tokenizers` wrote (cached: loading the same folder twice is free)."""
    return _load_tokenizers_cached(str(Path(directory).resolve()), tuple(langs))


def _source_ids(tokenizer: ByteLevelBPE, text: str) -> list[int]:
    # allow_special=False: a sentence that happens to contain "<eos>" is text, not a control token.
    return tokenizer.encode(text, allow_special=False) + [EOS_ID]


def _target_ids(tokenizer: ByteLevelBPE, text: str) -> list[int]:
    return [BOS_ID] + tokenizer.encode(text, allow_special=False) + [EOS_ID]


def encode_split(split: str, tokenizers: Tokenizers, src: str = "de", tgt: str = "en"):
    """A Multi30k split as a ``datasets.Dataset`` with the raw text plus ``src_ids`` (… EOS) and
    ``tgt_ids`` (BOS … EOS). ``split`` is a :mod:`course_lib.data` name or ``test2016``."""
    dataset = multi30k_dataset(_SPLITS.get(split, split), src, tgt)

    def encode(rows: dict) -> dict:
        return {"src_ids": [_source_ids(tokenizers[src], text) for text in rows[src]],
                "tgt_ids": [_target_ids(tokenizers[tgt], text) for text in rows[tgt]]}

    # The data sit in memory, so nothing is cached on disk; a fingerprint of our own spares
    # `datasets` from hashing the tokenizers (which takes longer than the encoding).
    fingerprint = hashlib.sha256(repr((dataset._fingerprint, src, tgt, [(len(tokenizers[lang]),
                                 tokenizers[lang].merges[-5:]) for lang in (src, tgt)])).encode()).hexdigest()[:32]
    return dataset.map(encode, batched=True, new_fingerprint=fingerprint)


# --- batches ---------------------------------------------------------------------------------------

def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """Id lists of different lengths → ``(B, T_max)`` long tensor, padded on the right."""
    if len(sequences) == 0:
        raise ValueError("pad_batch got no sequences")
    batch = torch.full((len(sequences), max(len(s) for s in sequences)), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        batch[row, :len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return batch


class BucketedBatches:
    """Padded ``(src (B, S), tgt (B, T))`` batches of pairs with similar lengths, re-cut every epoch.

    Each batch holds at most ``max_tokens`` tokens counting padding (``B · max(S, T)``) and at most
    ``max_sentences`` pairs. Every pair appears in exactly one batch per epoch.
    """

    def __init__(self, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], *,
                 max_tokens: int = 4096, max_sentences: int = 256, shuffle: bool = True, seed: int = 0):
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"{len(src_ids)} sources but {len(tgt_ids)} targets")
        if len(src_ids) == 0:
            raise ValueError("BucketedBatches got no sentence pairs")
        longest = max(max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids))
        if longest > max_tokens:
            raise ValueError(f"a pair of length {longest} does not fit in max_tokens={max_tokens}")
        self.src_ids, self.tgt_ids = list(src_ids), list(tgt_ids)
        self.max_tokens, self.max_sentences, self.shuffle = max_tokens, max_sentences, shuffle
        self._rng = random.Random(seed)
        self._layout = self._cut()

    def _cut(self) -> list[list[int]]:
        """Indices of each batch: sort by (source, target) length, then fill batches greedily."""
        order = list(range(len(self.src_ids)))
        if self.shuffle:
            self._rng.shuffle(order)  # the sort is stable: equal lengths stay shuffled
        order.sort(key=lambda i: (len(self.src_ids[i]), len(self.tgt_ids[i])))
        batches, current, width = [], [], 0
        for i in order:
            new_width = max(width, len(self.src_ids[i]), len(self.tgt_ids[i]))
            if current and (new_width * (len(current) + 1) > self.max_tokens or len(current) == self.max_sentences):
                batches.append(current)
                current, new_width = [], max(len(self.src_ids[i]), len(self.tgt_ids[i]))
            current.append(i)
            width = new_width
        batches.append(current)
        if self.shuffle:
            self._rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self._layout)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        layout = self._layout
        for indices in layout:
            yield (pad_batch([self.src_ids[i] for i in indices]), pad_batch([self.tgt_ids[i] for i in indices]))
        if self.shuffle:
            self._layout = self._cut()  # the next epoch sees new batches in a new order


# --- translation and BLEU --------------------------------------------------------------------------

def _strip(ids: list[int]) -> list[int]:
    """Generated ids up to (not including) the first EOS, without special tokens (an untrained
    model may emit ``<bos>``; ``<unk>`` has no text)."""
    ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
    return [i for i in ids if i >= len(SPECIAL_TOKENS)]


def generate_translations(model: nn.Module, src_batch: torch.Tensor, max_new_tokens: int, num_beams: int = 1,
                          length_penalty: float = 1.0) -> torch.Tensor:
    """Generated ids ``(B, L)`` for source ids ``(B, S)`` (padded with ``PAD_ID``): the tokens after ``<bos>``,
    ``<eos>`` included, then padding. Greedy, or beam search with ``num_beams > 1``, by
    :func:`course_lib.decoding.generate`, whose stepper suits the model (Transformer or RNN)."""
    device = next(model.parameters()).device
    src_batch = src_batch.to(device)
    start = torch.full((len(src_batch), 1), BOS_ID, device=device)  # the decoder prompt: <bos>
    beams = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=True) if num_beams > 1 else {}
    ids = generate(model, start, source=src_batch, source_mask=src_batch != PAD_ID, max_new_tokens=max_new_tokens,
                   eos_token_id=EOS_ID, pad_token_id=PAD_ID, **beams)
    return ids[:, 1:]


def translate(model: nn.Module, sentences: Sequence[str], tokenizers: Tokenizers | None = None, *,
              src: str = "de", tgt: str = "en", batch_size: int = 100, max_new_tokens: int | None = None,
              num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
    """Translations of ``sentences`` (a list of strings) by a :class:`Transformer` or :class:`RNNSeq2Seq`.

    Greedy by default; ``num_beams > 1`` runs beam search with ``length_penalty`` (both through
    :func:`generate_translations`). ``tokenizers`` defaults to the shipped Multi30k ones. Each output is at
    most ``max_new_tokens`` tokens (default: twice the source length plus 10, within the model's table).
    """
    if isinstance(sentences, str):
        raise TypeError("translate takes a list of sentences; wrap a single one as [sentence]")
    if len(sentences) == 0:
        raise ValueError("translate got no sentences")
    tokenizers = tokenizers or load_tokenizers(langs=(src, tgt))
    encoded = [_source_ids(tokenizers[src], sentence) for sentence in sentences]
    if any(len(ids) > model.max_len for ids in encoded):
        raise ValueError(f"a sentence is longer than the model's max_len of {model.max_len} tokens")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    outputs: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src_batch = pad_batch([encoded[i] for i in chunk])  # (B, S)
        limit = max_new_tokens or min(model.max_len - 1, 2 * src_batch.shape[1] + 10)
        generated = generate_translations(model, src_batch, limit, num_beams, length_penalty)  # (B, L)
        for i, ids in zip(chunk, generated.tolist()):
            outputs[i] = tokenizers[tgt].decode(_strip(ids)).strip()
    return outputs


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100, cased, ``13a`` tokenization) with one reference per sentence."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score


def bleu(model: nn.Module, split: str = "test2016", *, limit: int | None = None, tokenizers: Tokenizers | None = None,
         src: str = "de", tgt: str = "en", return_translations: bool = False, num_beams: int = 1):
    """BLEU of ``model``'s translations (greedy, or beam search with ``num_beams``) of a Multi30k split
    (the first ``limit`` pairs if given)."""
    dataset = multi30k_dataset(_SPLITS.get(split, split), src, tgt)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    hypotheses = translate(model, dataset[src], tokenizers, src=src, tgt=tgt, num_beams=num_beams)
    score = corpus_bleu(hypotheses, dataset[tgt])
    return (score, hypotheses) if return_translations else score


# --- checkpoints -----------------------------------------------------------------------------------

def save_checkpoint(model: nn.Module, path: str | Path, **extra) -> Path:
    """Save the config and fp16 weights (tied weights stay one tensor) plus any ``extra`` fields."""
    halves: dict[int, torch.Tensor] = {}  # storage address -> its fp16 copy, so a tied matrix is stored once
    state = {}
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            address = tensor.untyped_storage().data_ptr()
            if address not in halves:
                halves[address] = tensor.detach().cpu().half()
            state[key] = halves[address]
        else:
            state[key] = tensor.detach().cpu()
    kind = "transformer" if isinstance(model, Transformer) else "rnn"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "config": model.config, "state_dict": state, **extra}, path)
    return path


def load_translation_model(name: str, directory: str | Path = CHECKPOINT_DIR) -> nn.Module:
    """A shipped model, ``"transformer"``, ``"rnn_attention"`` or ``"rnn_plain"`` (or a ``.pt`` path),
    on the CPU in eval mode, weights back in fp32. Its training record is in ``model.checkpoint_info``."""
    path = Path(name) if str(name).endswith(".pt") else Path(directory) / f"multi30k_{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}; choose one of {MODEL_NAMES} or run scripts/train_translation.py")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model_class = {"transformer": Transformer, "rnn": RNNSeq2Seq}[checkpoint["kind"]]
    model = model_class(**checkpoint["config"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()})
    model.checkpoint_info = {k: v for k, v in checkpoint.items() if k not in ("state_dict",)}
    return model.eval()
