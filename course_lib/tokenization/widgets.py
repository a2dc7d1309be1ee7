"""The tokenization chapter's explorer: step through a BPE's merges and watch a sentence's tokens change.

* :func:`merge_steps` replays the encoding of one text merge by merge: every distinct
  tokenization, from raw bytes to the tokenizer's final answer, with the merge that produced it.
* :func:`tokens_after` reads off the tokens when only the first ``k`` merges are allowed.
* :func:`readable_token` shows a token as text (``␣`` for a space, ``\\xc4`` for a lone byte).
* :func:`merge_stepper` is the widget: a slider over the number of merges and a text box. The slider is
  logarithmic (:func:`merge_counts`): a tokenizer has thousands of merges, but a sentence changes most
  in the first hundred.

Why replaying works: encoding a word merges, again and again, the adjacent pair whose merge was
learnt earliest. A merge can only involve tokens that existed when it was learnt, so the ranks
applied to a text only go up; a tokenizer restricted to its first ``k`` merges therefore makes
exactly the same moves and stops at the first rank ``>= k``. ``tests/tokenization/test_widgets.py``
checks this against :class:`~course_lib.tokenization.ByteLevelBPE` built with ``merges[:k]``
for every ``k``. (It holds for tokenizers trained by BPE, such as GPT-2's and ours; a hand-edited
merge list could break it.)

As in :mod:`course_lib.attention.widgets`, the figure is a plain image output, so a notebook executed
headless keeps a picture of the initial state. Not covered: training (the chapter trains the
tokenizer) and other tokenizers (WordPiece, Unigram).
"""
from __future__ import annotations

import bisect
from itertools import pairwise
from typing import NamedTuple

import ipywidgets as widgets
from matplotlib.figure import Figure

from ..viz import Explorer
from .byte_level import SPLIT_REGEX, from_byte_chars, split_special, validate_text
from .tokenizer import ByteLevelBPE, merge_pair

__all__ = ["MergeStep", "merge_counts", "merge_steps", "tokens_after", "readable_token", "merge_stepper"]


class MergeStep(NamedTuple):
    """One tokenization of the text: it holds once ``num_merges`` merges are allowed, until the next step's."""

    num_merges: int  # the smallest number of allowed merges giving these tokens
    merge: tuple[str, str] | None  # the merge (rank num_merges - 1) that produced them; None for raw bytes
    tokens: list[str]  # byte-level token strings, as ByteLevelBPE.tokens returns them


def _validate_bpe(bpe) -> ByteLevelBPE:
    if not isinstance(bpe, ByteLevelBPE):
        raise TypeError(f"bpe must be a course_lib.tokenization.ByteLevelBPE, got {type(bpe).__name__}")
    return bpe


def merge_steps(bpe: ByteLevelBPE, text: str) -> list[MergeStep]:
    """Every distinct tokenization of ``text`` as ``bpe``'s merges are allowed one by one.

    The first step is the raw bytes (0 merges, plus special tokens whole); the last equals
    ``bpe.tokens(text)``. Each later step applies the earliest-learnt merge found anywhere in
    the text, to every word at once (words never interact, so the order across words is free).

    >>> bpe = train_bpe(["aaabdaaabac"], vocab_size=259, min_frequency=1)
    >>> [("".join(step.merge) if step.merge else None, step.tokens) for step in merge_steps(bpe, "aaabdaaabac")]
    [(None, ['a', 'a', 'a', 'b', 'd', 'a', 'a', 'a', 'b', 'a', 'c']), ('aa', ['aa', 'a', 'b', 'd', 'aa', 'a', 'b', 'a', 'c']), ('ab', ['aa', 'ab', 'd', 'aa', 'ab', 'a', 'c']), ('aaab', ['aaab', 'd', 'aaab', 'a', 'c'])]
    """
    _validate_bpe(bpe)
    validate_text(text)
    words: list[list[int]] = []  # one list of ids per pre-tokenised word; special tokens are 1-id words
    for piece, is_special in split_special(text, bpe.special_tokens):
        if is_special:
            words.append([bpe.special_tokens[piece]])
            continue
        for word in SPLIT_REGEX.findall(piece):
            words.append([bpe._byte_ids[byte] for byte in word.encode("utf-8")])
    if any(None in word for word in words):
        raise ValueError("this text holds a byte that is not in the tokenizer's vocabulary")

    def tokens() -> list[str]:
        return [bpe.id_to_token[index] for word in words for index in word]

    steps = [MergeStep(0, None, tokens())]
    ranks = bpe._ranks  # (left id, right id) -> (rank, merged id)
    while True:
        present = [(ranks[pair], pair) for word in words for pair in pairwise(word) if pair in ranks]
        if not present:
            return steps
        (rank, new_id), pair = min(present)
        words = [merge_pair(word, pair, new_id) for word in words]
        steps.append(MergeStep(rank + 1, bpe.merges[rank], tokens()))


def tokens_after(steps: list[MergeStep], num_merges: int) -> tuple[list[str], MergeStep]:
    """The tokens when only the first ``num_merges`` merges are allowed, and the step they come from."""
    if num_merges < 0:
        raise ValueError(f"num_merges must be >= 0, got {num_merges}")
    index = bisect.bisect_right([step.num_merges for step in steps], num_merges) - 1
    return steps[index].tokens, steps[index]


def readable_token(token: str, bpe: ByteLevelBPE | None = None) -> str:
    """A byte-level token as a reader would write it: spaces as ``␣``, newlines as ``↵``, and
    bytes that are only part of a UTF-8 character in ``\\xNN`` form.

    >>> from course_lib.tokenization.byte_level import to_byte_chars
    >>> to_byte_chars(" ĉu"), readable_token(to_byte_chars(" ĉu")), readable_token(to_byte_chars(" ĉ")[:2])
    ('ĠÄīu', '␣ĉu', '␣\\\\xc4')
    """
    if bpe is not None and token in bpe.special_tokens:
        return token
    data = from_byte_chars(token)
    text = data.decode("utf-8", errors="backslashreplace")
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def _draw_tokens(ax, labels: list[str], width: float = 100.0) -> None:
    """Token boxes in reading order, wrapped into lines of about ``width`` characters."""
    x, line = 0.0, 0
    for i, label in enumerate(labels):
        size = max(len(label), 1) + 1.2
        if x + size > width and x > 0:
            x, line = 0.0, line + 1
        ax.text(x, -line * 1.6, label, family="monospace", fontsize=10, va="center", ha="left",
                bbox={"boxstyle": "round,pad=0.25", "facecolor": f"C{i % 10}", "alpha": 0.3, "edgecolor": "0.4"})
        x += size
    ax.set(xlim=(-0.5, width + 0.5), ylim=(-line * 1.6 - 1.0, 1.0))
    ax.axis("off")


NICE_STEPS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)  # ten stops per factor of ten


def merge_counts(max_merges: int, every_up_to: int = 20, include: int | None = None) -> list[int]:
    """The slider's stops: every count up to ``every_up_to``, then ten round numbers per factor of ten, then all.

    >>> merge_counts(13_531)[18:32]
    [18, 19, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250]
    >>> merge_counts(13_531)[-3:], len(merge_counts(13_531))
    ([10000, 12000, 13531], 50)
    """
    if max_merges < 0:
        raise ValueError(f"max_merges must be >= 0, got {max_merges}")
    counts = set(range(min(every_up_to, max_merges) + 1)) | {max_merges}
    scale = 10
    while scale <= max_merges:
        counts |= {round(step * scale) for step in NICE_STEPS if every_up_to < step * scale < max_merges}
        scale *= 10
    if include is not None:
        counts.add(min(max(include, 0), max_merges))
    return sorted(counts)


def merge_stepper(bpe: ByteLevelBPE, text: str = "La suno brilas super la ĝardeno.", max_merges: int | None = None,
                  num_merges: int | None = None) -> Explorer:
    """A slider over the number of merges allowed (0 = raw bytes; stops from :func:`merge_counts`) and a box for the sentence."""
    _validate_bpe(bpe)
    max_merges = len(bpe.merges) if max_merges is None else min(max_merges, len(bpe.merges))
    counts = merge_counts(max_merges, include=num_merges)
    start = counts[len(counts) // 2] if num_merges is None else min(max(num_merges, 0), max_merges)
    controls = {
        "num_merges": widgets.SelectionSlider(options=counts, value=start, description="merges allowed",
                                              continuous_update=False, style={"description_width": "110px"},
                                              layout=widgets.Layout(width="620px")),
        "text": widgets.Text(text, description="sentence", continuous_update=False,
                             style={"description_width": "110px"}, layout=widgets.Layout(width="620px")),
    }

    def draw(num_merges: int, text: str) -> Figure:
        steps = merge_steps(bpe, text)
        tokens, step = tokens_after(steps, num_merges)
        figure = Figure(figsize=(10, 4.2), layout="constrained")
        boxes, curve = figure.subplots(2, 1, height_ratios=[1, 1.4])
        _draw_tokens(boxes, [readable_token(token, bpe) for token in tokens])
        latest = "none yet: raw bytes" if step.merge is None else \
            f"merge #{step.num_merges - 1}: '{readable_token(step.merge[0])}' + '{readable_token(step.merge[1])}'"
        boxes.set_title(f"{len(tokens)} tokens with the first {num_merges} merges  (last one used here: {latest})",
                        fontsize=10)
        xs = [s.num_merges for s in steps] + [max(max_merges, steps[-1].num_merges)]
        ys = [len(s.tokens) for s in steps] + [len(steps[-1].tokens)]
        curve.step(xs, ys, where="post", color="C0")
        curve.plot([num_merges], [len(tokens)], "o", color="crimson", ms=8)
        curve.set_xscale("symlog", linthresh=10)  # most of the action is in the first few hundred merges
        curve.set(xlabel="number of merges allowed (log scale)", ylabel="tokens", xlim=(0, max(xs)),
                  title=f"{len(steps) - 1} merges change this sentence; "
                        f"{len(steps[0].tokens)} bytes -> {len(steps[-1].tokens)} tokens in the end")
        curve.title.set_fontsize(10)
        return figure

    # the book draws a few stops in advance: roughly doubling, since most of the action is in the first merges
    stops = sorted({0, max_merges, start} | {n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                                            if n < max_merges})
    in_book = {"num_merges": widgets.SelectionSlider(options=stops, value=start, description="merges allowed")}
    return Explorer("Step through the merges", controls, draw, in_book)
