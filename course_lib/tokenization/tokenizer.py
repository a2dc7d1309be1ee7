"""A trained byte-level BPE: encode text to ids with the merge ranks, decode ids back, and save or
load the Hugging Face / GPT-2 file pair ``vocab.json`` + ``merges.txt``.

Encoding one pre-tokenised word: start from its bytes, then repeatedly merge the adjacent pair
with the **lowest rank** (the merge learnt earliest), all its non-overlapping occurrences left to
right, until no adjacent pair has a merge. Merges never cross pre-token boundaries, and special
tokens are cut out of the text first, so they always map to their own single id.

Covered: :class:`ByteLevelBPE` (``encode``, ``decode``, ``tokens``, ``save``, ``load``).
Not covered: training (:mod:`.naive_trainer`, :mod:`.fast_trainer`), BPE dropout, offsets,
padding/truncation, and normalisation. ``merges.txt`` does not record which tokens are special,
so ``load`` takes them as an argument (GPT-2 has one: ``<|endoftext|>``, id 50256).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

from .byte_level import BYTE_TO_CHAR, CHAR_TO_BYTE, SPLIT_REGEX, from_byte_chars, split_special, validate_text

__all__ = ["ByteLevelBPE", "merge_pair"]


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair``, scanning left to right.

    >>> merge_pair([5, 5, 5, 5, 5], (5, 5), 9)
    [9, 9, 5]
    """
    first, second = pair
    out, i = [], 0
    while i < len(ids):
        if ids[i] == first and i + 1 < len(ids) and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _token_bytes(token: str, is_special: bool) -> bytes:
    """The bytes a token decodes to: special tokens (or any token outside the 256 byte
    characters) stand for their own UTF-8 text, all others for the bytes their characters encode."""
    if is_special or any(char not in CHAR_TO_BYTE for char in token):
        return token.encode("utf-8")
    return from_byte_chars(token)


class ByteLevelBPE:
    """A byte-level BPE tokenizer: a vocabulary, ranked merges and special tokens.

    ``vocab`` maps token strings (in byte-level characters, e.g. ``"Ġthe"``) to ids; ``merges``
    lists ``(left, right)`` token strings, earliest-learnt first; every merged string must be in
    ``vocab``. Special tokens missing from ``vocab`` are appended after the largest id, as HF does.

    >>> bpe = train_bpe(["low lower lowest"] * 3, vocab_size=262, min_frequency=2)
    >>> bpe.tokens("lowest"), bpe.decode(bpe.encode("lowest"))
    (['low', 'e', 'st'], 'lowest')
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                 special_tokens: Iterable[str] = ()):
        if not isinstance(vocab, dict):
            raise TypeError(f"vocab must be a dict token -> id, got {type(vocab).__name__}")
        if isinstance(special_tokens, str):
            raise TypeError(f"special_tokens must be a list of strings, got the single string {special_tokens!r}")
        special_tokens = list(special_tokens)
        self.vocab = dict(vocab)
        for token in special_tokens:
            validate_text(token, "a special token")
            if token not in self.vocab:
                self.vocab[token] = max(self.vocab.values(), default=-1) + 1
        self.special_tokens = {token: self.vocab[token] for token in special_tokens}
        self.merges = [tuple(merge) for merge in merges]
        self.id_to_token = {index: token for token, index in self.vocab.items()}
        if len(self.id_to_token) != len(self.vocab):
            raise ValueError("vocab maps two tokens to the same id")
        # (left id, right id) -> (rank, merged id): what encoding looks up for every adjacent pair.
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right) in enumerate(self.merges):
            missing = [token for token in (left, right, left + right) if token not in self.vocab]
            if missing:
                raise ValueError(f"merge #{rank} {left!r} + {right!r}: {missing[0]!r} is not in the vocabulary")
            self._ranks.setdefault((self.vocab[left], self.vocab[right]), (rank, self.vocab[left + right]))
        self._byte_ids = [self.vocab.get(BYTE_TO_CHAR[byte]) for byte in range(256)]
        self._id_bytes = {index: _token_bytes(token, token in self.special_tokens)
                          for index, token in self.id_to_token.items()}
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"ByteLevelBPE(vocab_size={len(self.vocab)}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    # --- encoding ---------------------------------------------------------------------------------

    def _encode_word(self, word: str) -> list[int]:
        """Ids for one pre-tokenised word: merge the lowest-rank pair until none applies."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        data = word.encode("utf-8")
        ids = [self._byte_ids[byte] for byte in data]
        if None in ids:
            byte = data[ids.index(None)]
            raise ValueError(f"byte {byte:#04x} ({BYTE_TO_CHAR[byte]!r}) is not in this vocabulary")
        ranks = self._ranks
        while len(ids) > 1:
            best = min(pairwise(ids), key=lambda pair: ranks.get(pair, (float("inf"),))[0])
            if best not in ranks:
                break  # no adjacent pair was ever merged
            ids = merge_pair(ids, best, ranks[best][1])
        if len(self._cache) < 200_000:  # words repeat a lot (Zipf): caching makes encoding ~10x faster
            self._cache[word] = ids
        return ids

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Text to token ids. With ``allow_special=False`` special tokens are encoded as plain text.

        >>> gpt2 = train_bpe(["hello hello"], vocab_size=300, special_tokens=["<|endoftext|>"])
        >>> gpt2.encode("hello<|endoftext|>")[-1] == gpt2.special_tokens["<|endoftext|>"]
        True
        """
        validate_text(text)
        specials = self.special_tokens if allow_special else ()
        ids: list[int] = []
        for piece, is_special in split_special(text, specials):
            if is_special:
                ids.append(self.special_tokens[piece])
            else:
                for word in SPLIT_REGEX.findall(piece):
                    ids.extend(self._encode_word(word))
        return ids

    def tokens(self, text: str) -> list[str]:
        """The token strings ``encode`` produces (byte-level characters: a space shows as ``Ġ``)."""
        return [self.id_to_token[index] for index in self.encode(text)]

    # --- decoding ---------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids to raw bytes (a slice of ids may end in the middle of a UTF-8 character)."""
        if isinstance(ids, (str, bytes, bytearray)) or ids is None:
            raise TypeError(f"decode needs a sequence of int token ids, got {type(ids).__name__}; "
                            "to turn text into ids use encode()")
        pieces = []
        for index in ids:
            if not isinstance(index, int) and hasattr(index, "item"):
                index = index.item()  # numpy / torch scalars
            if not isinstance(index, int) or isinstance(index, bool):
                raise TypeError(f"token ids must be ints, got {index!r} ({type(index).__name__})")
            if index not in self._id_bytes:
                raise ValueError(f"token id {index} is not in this vocabulary (size {len(self.vocab)})")
            pieces.append(self._id_bytes[index])
        return b"".join(pieces)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids to text. Bytes that do not form valid UTF-8 become U+FFFD, as in GPT-2's decoder."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # --- files ------------------------------------------------------------------------------------

    def save(self, directory: str | Path, prefix: str | None = None) -> tuple[Path, Path]:
        """Write ``[prefix-]vocab.json`` and ``[prefix-]merges.txt``, the files HF's
        ``ByteLevelBPETokenizer.from_file`` and GPT-2 use; return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{prefix}-" if prefix else ""
        vocab_path, merges_path = directory / f"{stem}vocab.json", directory / f"{stem}merges.txt"
        ordered = dict(sorted(self.vocab.items(), key=lambda item: item[1]))
        vocab_path.write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in self.merges]
        merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return vocab_path, merges_path

    @classmethod
    def load(cls, vocab_path: str | Path, merges_path: str | Path,
             special_tokens: Iterable[str] = ()) -> ByteLevelBPE:
        """Read a ``vocab.json`` + ``merges.txt`` pair (GPT-2's ``encoder.json`` + ``vocab.bpe`` too)."""
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        merges = []
        for number, line in enumerate(Path(merges_path).read_text(encoding="utf-8").split("\n"), 1):
            if not line or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_path}:{number}: expected 'left right', got {line!r}")
            merges.append((parts[0], parts[1]))
        return cls(vocab, merges, special_tokens)
