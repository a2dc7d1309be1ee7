"""Byte-level pre-processing shared by every GPT-2-style BPE: bytes as printable characters,
the GPT-2 pre-tokenisation pattern, special tokens, and word counting for the trainers.

A byte-level BPE never sees characters, only UTF-8 bytes, so no string is ever out of vocabulary.
To keep tokens readable (and to write them in a text file such as ``merges.txt``), GPT-2 shows
each of the 256 bytes as one printable Unicode character: printable Latin-1 bytes stand for
themselves and the rest (control bytes, the space, ...) are shifted to code points 256 and up,
which is why a leading space shows as ``Ġ`` and a newline as ``Ċ``.

Covered: the byte <-> character tables, the GPT-2 pre-tokenisation regex, splitting special
tokens out *before* pre-tokenisation, counting pre-tokenised words, the trainers' initial vocabulary,
and input checks with clear errors. Not covered: the merges themselves (:mod:`.tokenizer`,
:mod:`.naive_trainer`, :mod:`.fast_trainer`), normalisation (lower-casing, NFKC), which GPT-2 does not do.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import regex  # the third-party module: it knows \p{L} (any letter) and \p{N} (any digit)

__all__ = [
    "BYTE_TO_CHAR",
    "CHAR_TO_BYTE",
    "GPT2_SPLIT_PATTERN",
    "as_texts",
    "bytes_to_unicode",
    "validate_text",
    "count_words",
    "from_byte_chars",
    "initial_vocab",
    "pretokenize",
    "split_special",
    "to_byte_chars",
]

# GPT-2's pattern: common English contractions, then runs of letters, of digits, or of other
# symbols (each may carry one leading space), then whitespace. ``\s+(?!\S)`` leaves the last space
# of a run to start the next word, so " hello" stays one piece. "Letter" and "digit" follow the
# Unicode tables of the regex engine: the `regex` module knows newer Unicode versions than HF's
# Oniguruma, so on code points assigned only recently (unassigned in Unicode 14) the two may split
# differently. On all assigned characters they agree (tests/tokenization/test_tokenizer.py checks it).
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPLIT_REGEX = regex.compile(GPT2_SPLIT_PATTERN)


def bytes_to_unicode() -> dict[int, str]:
    """The 256-entry table from a byte to the printable character that stands for it.

    >>> table = bytes_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")], len(set(table.values()))
    ('a', 'Ġ', 'Ċ', 256)
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in table:  # control bytes, space, DEL, NBSP, soft hyphen: move them past 255
            table[byte] = chr(256 + shifted)
            shifted += 1
    return dict(sorted(table.items()))


BYTE_TO_CHAR: dict[int, str] = bytes_to_unicode()
CHAR_TO_BYTE: dict[str, int] = {char: byte for byte, char in BYTE_TO_CHAR.items()}
_ENCODE_TABLE = [BYTE_TO_CHAR[byte] for byte in range(256)]


def validate_text(text, what: str = "text") -> str:
    """Return ``text`` if it is a ``str`` that UTF-8 can encode; otherwise raise a helpful error."""
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"{what} holds a lone surrogate {text[error.start]!r} at index {error.start}, "
                             "which has no UTF-8 encoding; fix the string (e.g. it was decoded with "
                             "errors='surrogateescape')") from None
        return text
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}; decode it first, "
                        "e.g. data.decode('utf-8')")
    if text is None:
        raise TypeError(f"{what} must be a str, got None")
    if isinstance(text, int) or (isinstance(text, Sequence) and text and isinstance(text[0], int)):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}; "
                        "to turn token ids back into text use decode()")
    raise TypeError(f"{what} must be a str, got {type(text).__name__}")


def to_byte_chars(text: str) -> str:
    """A string's UTF-8 bytes written with the printable stand-ins.

    >>> to_byte_chars(" héllo\\n")
    'ĠhÃ©lloĊ'
    """
    return "".join(_ENCODE_TABLE[byte] for byte in text.encode("utf-8"))


def from_byte_chars(chars: str) -> bytes:
    """The inverse of :func:`to_byte_chars` (returns bytes: a token may hold half a character).

    >>> from_byte_chars("ĠhÃ©lloĊ").decode("utf-8")
    ' héllo\\n'
    """
    try:
        return bytes(CHAR_TO_BYTE[char] for char in chars)
    except KeyError as error:
        raise ValueError(f"{error.args[0]!r} is not one of the 256 byte-level characters") from None


def pretokenize(text: str) -> list[str]:
    """Split text into the pieces BPE merges within (merges never cross a piece boundary).

    >>> pretokenize("Hello world, it's 2024!\\n")
    ['Hello', ' world', ',', ' it', "'s", ' 2024', '!', '\\n']
    """
    return SPLIT_REGEX.findall(validate_text(text))


def _special_pattern(special_tokens: Iterable[str]):
    # Longest first, so that when one special token contains another the longer one wins.
    ordered = sorted(set(special_tokens), key=len, reverse=True)
    return regex.compile("|".join(regex.escape(token) for token in ordered)) if ordered else None


def split_special(text: str, special_tokens: Iterable[str]) -> list[tuple[str, bool]]:
    """Cut ``text`` at every special token, keeping them: ``[(piece, is_special), ...]``.

    Special tokens are matched in the raw text, before pre-tokenisation, so ``<|endoftext|>`` stays
    one token instead of becoming ``<|``, ``endoftext``, ``|>``.

    >>> split_special("a<|endoftext|>b", ["<|endoftext|>"])
    [('a', False), ('<|endoftext|>', True), ('b', False)]
    """
    validate_text(text)
    pattern = _special_pattern(special_tokens)
    if pattern is None:
        return [(text, False)] if text else []
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if match.start() > start:
            pieces.append((text[start:match.start()], False))
        pieces.append((match.group(), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


def as_texts(texts) -> Iterable[str]:
    """Accept one string or an iterable of strings; reject anything else with a clear error."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or texts is None or not isinstance(texts, Iterable):
        validate_text(texts, "texts")  # raises the helpful TypeError
    return (validate_text(text, "each training text") for text in texts)


def count_words(texts) -> Counter[str]:
    """How often each pre-tokenised word occurs, in byte-level characters.

    Each text is pre-tokenised on its own, exactly as HF ``tokenizers`` does with each item of
    ``train_from_iterator`` (and each line of a file given to ``train``). Special tokens in the
    training text are *not* split out: HF does not split them during training either.

    >>> count_words(["the cat", "the"])
    Counter({'the': 2, 'Ġcat': 1})
    """
    counts: Counter[str] = Counter()
    for text in as_texts(texts):
        counts.update(SPLIT_REGEX.findall(text))
    return Counter({to_byte_chars(word): count for word, count in counts.items()})


def initial_vocab(special_tokens: Iterable[str] = ()) -> list[str]:
    """The trainers' starting vocabulary, in id order: the special tokens, then all 256 byte
    characters sorted by *code point* (not by byte value), as HF's ``BpeTrainer`` orders them.

    >>> vocab = initial_vocab(["<s>"])
    >>> vocab[:3], vocab[-1], len(vocab)
    (['<s>', '!', '"'], 'Ń', 257)
    """
    tokens: list[str] = []
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise TypeError(f"special tokens must be non-empty strings, got {token!r}")
        if token not in tokens:
            tokens.append(token)
    tokens += [char for char in sorted(CHAR_TO_BYTE) if char not in tokens]
    return tokens
