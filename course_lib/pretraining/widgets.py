"""The pretraining chapter's pictures: what each objective lets a position see and learn from, what dynamic
masking did to a sentence, and what EsperBERTo puts where a word is masked.

* :func:`plot_pretrain_adapt`: the two steps of sequential transfer learning as boxes and arrows.
* :func:`objective_targets` and :func:`plot_objectives`: the two objectives side by side. For a causal LM
  (GPT) every position sees itself and the positions before it (:func:`~course_lib.attention.causal_mask`)
  and is trained to produce the *next* token; for a masked LM (BERT, RoBERTa) every position sees the
  whole (corrupted) sentence and only the chosen positions are trained, to produce the original token.
* :func:`masking_outcome` reads what a masking step did, position by position, from its output alone
  (original ids, corrupted ids, labels): not chosen, or chosen and then replaced by the mask token,
  by a random token, or left unchanged. :func:`plot_masking` draws it; :func:`masking_explorer` is
  the widget: a sentence, the probability of choosing a token and the seed as controls, the masking
  itself done by :func:`course_lib.pretraining.masking.mask_tokens`, the library's rule.
* :func:`plot_fill_mask` draws a fill-mask answer (the top tokens and their probabilities, from
  :func:`course_lib.pretraining.esperberto.fill_mask`); :func:`fill_mask_explorer` is the widget: type a
  sentence with one ``<mask>`` (in the book: pick one of the demo sentences).

As in the other chapters' widgets, the explorers' figures are plain image outputs, so a notebook executed
headless keeps a picture of the initial settings. Not covered: training (``scripts/train_esperberto.py``),
whole-word masking, span corruption (T5) and other objectives.
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..attention.masks import causal_mask
from ..tokenization.widgets import readable_token
from ..viz import Explorer, message_figure
from ..viz.plots import draw_boxes
from .masking import IGNORE_INDEX, mask_tokens

__all__ = [
    "MASKING_KINDS", "fill_mask_explorer", "mask_sentence", "masking_explorer", "masking_outcome", "objective_targets",
    "plot_fill_mask", "plot_masking", "plot_objectives", "plot_pretrain_adapt",
]

# What happened at one position, in the order the figures list them.
MASKING_KINDS = ("not chosen", "→ <mask>", "→ random token", "chosen, unchanged")
KIND_COLOURS = {"not chosen": "white", "→ <mask>": "#4c72b0", "→ random token": "#dd8452",
                "chosen, unchanged": "#55a868"}


def plot_pretrain_adapt() -> Figure:
    """Pretraining (lots of unlabelled text, a language-model head) then adaptation (a little labelled data, the
    same body with a new task head): what is kept, what is replaced."""
    figure = Figure(figsize=(10, 3.0), layout="constrained")
    ax = figure.subplots()
    ax.set(xlim=(0, 10), ylim=(0, 3.2))
    ax.axis("off")
    boxes = [  # (x, y, width, height, text, colour)
        (0.1, 1.8, 2.4, 1.1, "unlabelled text\n(BERT: 3.3 billion words;\nhere: 1 MB)", "0.92"),
        (3.2, 1.8, 2.0, 1.1, "the body\n(embeddings + layers)", "#c6dbef"),
        (5.9, 1.8, 2.0, 1.1, "LM head:\nnext or masked token", "#fdd0a2"),
        (0.1, 0.2, 2.4, 1.1, "labelled task data\n(e.g. 151 sentences\ntagged with parts of speech)", "0.92"),
        (3.2, 0.2, 2.0, 1.1, "the same body,\npretrained weights", "#c6dbef"),
        (5.9, 0.2, 2.0, 1.1, "task head (new):\na tag per token", "#c7e9c0"),
    ]
    draw_boxes(ax, boxes, fontsize=8.5)
    arrow = {"arrowstyle": "->", "color": "0.3", "lw": 1.3}
    for y in (2.35, 0.75):
        ax.annotate("", (3.15, y), (2.55, y), arrowprops=arrow)
        ax.annotate("", (5.85, y), (5.25, y), arrowprops=arrow)
    ax.annotate("", (4.2, 1.35), (4.2, 1.75), arrowprops=arrow)
    ax.text(4.3, 1.55, "keep", fontsize=8, va="center")
    ax.text(6.9, 1.55, "replace", fontsize=8, va="center", ha="center", color="firebrick")
    ax.text(8.1, 2.35, "1. pretraining:\nself-supervised,\nlong and costly", fontsize=8.5, va="center")
    ax.text(8.1, 0.75, "2. adaptation:\nsupervised,\nshort and cheap", fontsize=8.5, va="center")
    return figure


def objective_targets(tokens: Sequence[str], chosen: Sequence[int]) -> dict[str, list[str | None]]:
    """What each position is trained to produce: ``{"causal": [...], "masked": [...]}`` (``None``: no loss).

    Causal LM: position ``t`` predicts token ``t + 1``; the last position has nothing left to predict in
    this window. Masked LM: a chosen position predicts its own original token; the others give no loss.
    """
    tokens = list(tokens)
    if not tokens:
        raise ValueError("give at least one token")
    bad = [i for i in chosen if not 0 <= i < len(tokens)]
    if bad:
        raise ValueError(f"chosen positions {bad} are outside the {len(tokens)} tokens")
    causal = [*tokens[1:], None]
    masked = [token if i in set(chosen) else None for i, token in enumerate(tokens)]
    return {"causal": causal, "masked": masked}


def plot_objectives(tokens: Sequence[str], chosen: Sequence[int], mask_token: str = "<mask>") -> Figure:
    """Causal LM (left) and masked LM (right) on the same tokens: who sees whom, and which positions give a loss.

    Each panel is a grid of query positions (rows) by the positions they may attend to (columns),
    shaded where attention is allowed; beside each row, the token it is trained to produce, or
    "no loss". The masked-LM input shows ``mask_token`` at the ``chosen`` positions (as 80 % of them
    are, in training).
    """
    targets = objective_targets(tokens, chosen)
    size = len(tokens)
    masked_input = [mask_token if i in set(chosen) else token for i, token in enumerate(tokens)]
    panels = [("causal LM (GPT): sees the past, predicts the next token", list(tokens), causal_mask(size),
               targets["causal"]),
              ("masked LM (BERT): sees everything, predicts the masked tokens", masked_input,
               torch.ones(size, size, dtype=torch.bool), targets["masked"])]
    width = max(4.0, 0.42 * size + 2.2)
    figure = Figure(figsize=(2 * width, 0.36 * size + 2.2), layout="constrained")
    for ax, (title, shown, allowed, wanted) in zip(figure.subplots(1, 2), panels):
        ax.imshow(allowed.float().numpy(), cmap="Blues", vmin=0, vmax=1.6)
        ax.set_xticks([i - 0.5 for i in range(1, size)], minor=True)  # white lines between the cells
        ax.set_yticks([i - 0.5 for i in range(1, size)], minor=True)
        ax.grid(which="minor", color="white", lw=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_xticks(range(size), shown, rotation=90, fontsize=8)
        ax.set_yticks(range(size), shown, fontsize=8)
        ax.set_xlabel("positions it may attend to", fontsize=8)
        ax.set_ylabel("position (its input token)", fontsize=8)
        ax.set_title(title, fontsize=9)
        for row, target in enumerate(wanted):
            label, colour = (f"→ {target}", "darkgreen") if target is not None else ("no loss", "0.6")
            ax.text(size - 0.3, row, label, fontsize=8, va="center", ha="left", color=colour, clip_on=False)
        ax.set_xlim(-0.5, size - 0.5)
    return figure


def masking_outcome(original_ids: torch.Tensor, corrupted_ids: torch.Tensor, labels: torch.Tensor,
                    mask_token_id: int) -> list[str]:
    """One of :data:`MASKING_KINDS` per position of a 1-D sequence, read from a masking step's output.

    A position was chosen where its label is not ``IGNORE_INDEX`` (the label is then the original id);
    what it became is read by comparing the corrupted id with the mask id and with the original.
    (A random replacement that happens to draw the original id reads as "chosen, unchanged", which is
    what the model sees.)
    """
    original_ids, corrupted_ids, labels = (torch.as_tensor(t) for t in (original_ids, corrupted_ids, labels))
    if not original_ids.ndim == 1 or original_ids.shape != corrupted_ids.shape or original_ids.shape != labels.shape:
        raise ValueError(f"need three 1-D tensors of one length, got shapes {tuple(original_ids.shape)}, "
                         f"{tuple(corrupted_ids.shape)}, {tuple(labels.shape)}")
    chosen = labels != IGNORE_INDEX
    if not torch.equal(labels[chosen], original_ids[chosen]):
        raise ValueError("at a chosen position the label must be the original token id")
    kinds = []
    for is_chosen, before, after in zip(chosen.tolist(), original_ids.tolist(), corrupted_ids.tolist()):
        if not is_chosen:
            if before != after:
                raise ValueError("a position that was not chosen must keep its token")
            kinds.append("not chosen")
        elif after == mask_token_id:
            kinds.append("→ <mask>")
        elif after != before:
            kinds.append("→ random token")
        else:
            kinds.append("chosen, unchanged")
    return kinds


def plot_masking(tokens: Sequence[str], shown: Sequence[str], kinds: Sequence[str], title: str = "") -> Figure:
    """Two rows of boxes: the sentence's tokens, and what the model gets to see, coloured by what masking did."""
    if not len(tokens) == len(shown) == len(kinds):
        raise ValueError("tokens, shown and kinds must have one entry per position")
    counts = {kind: list(kinds).count(kind) for kind in MASKING_KINDS}
    chosen = len(kinds) - counts["not chosen"]
    places, x, line, width = [], 0.0, 0, 90.0  # where each position's pair of boxes goes, wrapped into lines
    for before, after in zip(tokens, shown):
        size = max(len(before), len(after), 1) + 1.5
        if x + size > width and x > 0:
            x, line = 0.0, line + 1
        places.append((x, -line * 3.2))
        x += size
    figure = Figure(figsize=(11, 1.5 + 0.9 * (line + 1)), layout="constrained")
    ax = figure.subplots()
    for (x, y), before, after, kind in zip(places, tokens, shown, kinds):
        ax.text(x, y, before, family="monospace", fontsize=9, va="center", ha="left",
                bbox={"boxstyle": "round,pad=0.25", "facecolor": "0.93", "edgecolor": "0.7"})
        ax.text(x, y - 1.3, after, family="monospace", fontsize=9, va="center", ha="left",
                bbox={"boxstyle": "round,pad=0.25", "facecolor": KIND_COLOURS[kind], "edgecolor": "0.4",
                      "alpha": 0.55 if kind != "not chosen" else 1.0})
    ax.set(xlim=(-0.5, width + 0.5), ylim=(-line * 3.2 - 2.0, 0.8))
    ax.axis("off")
    handles = [ax.scatter([], [], marker="s", s=80, color=KIND_COLOURS[kind], edgecolors="0.4") for kind in MASKING_KINDS]
    figure.legend(handles, [f"{kind}: {counts[kind]}" for kind in MASKING_KINDS], ncol=4, loc="outside lower center",
                  fontsize=8, frameon=False)
    ax.set_title(title or f"{chosen} of {len(kinds)} tokens chosen (top: the text; below: what the model sees)",
                 fontsize=10)
    return figure


def mask_sentence(tokenizer, text: str, *, mask_id: int, special_ids: Sequence[int], bos_id: int, eos_id: int,
                  mlm_probability: float = 0.15, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Encode ``<s> text </s>``, mask it with the library's :func:`~.masking.mask_tokens` (seeded), and return
    ``(tokens, what the model sees, kinds)``, one entry per position, ready for :func:`plot_masking`."""
    ids = torch.tensor([[bos_id, *tokenizer.encode(text, allow_special=False), eos_id]])  # (1, T)
    corrupted, labels = mask_tokens(ids, mask_id=mask_id, vocab_size=len(tokenizer), special_ids=special_ids,
                                    mlm_probability=mlm_probability, generator=torch.Generator().manual_seed(seed))
    kinds = masking_outcome(ids[0], corrupted[0], labels[0], mask_id)

    def readable(index: int) -> str:  # a random replacement may be a control byte: show it escaped, as \x1f
        token = readable_token(tokenizer.id_to_token[index], tokenizer)
        return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in token)

    return [readable(i) for i in ids[0].tolist()], [readable(i) for i in corrupted[0].tolist()], kinds


def masking_explorer(tokenizer, sentences: Sequence[str], *, mask_id: int, special_ids: Sequence[int], bos_id: int,
                     eos_id: int) -> Explorer:
    """A sentence (typed, or in the book one of ``sentences``), the probability of choosing a token and the seed."""
    sentences = list(sentences)
    if not sentences:
        raise ValueError("give at least one example sentence")
    style = {"style": {"description_width": "150px"}, "layout": widgets.Layout(width="640px")}
    controls = {
        "text": widgets.Text(sentences[0], description="sentence", continuous_update=False,
                             placeholder="type a sentence and press Enter", **style),
        "mlm_probability": widgets.FloatSlider(0.15, min=0.05, max=1.0, step=0.05, description="P(chosen)",
                                               continuous_update=False, **style),
        "seed": widgets.IntSlider(0, min=0, max=20, description="seed", continuous_update=False, **style),
    }

    def draw(text: str, mlm_probability: float, seed: int) -> Figure:
        if not text.strip():
            return message_figure("Type a sentence to mask.", width=9, columns=90)
        tokens, shown, kinds = mask_sentence(tokenizer, text, mask_id=mask_id, special_ids=special_ids,
                                             bos_id=bos_id, eos_id=eos_id, mlm_probability=mlm_probability, seed=seed)
        return plot_masking(tokens, shown, kinds)

    in_book = {"text": widgets.Dropdown(options=sentences, value=sentences[0], description="sentence")}
    return Explorer("Dynamic masking: which tokens are chosen, and what each becomes", controls, draw, in_book)


def plot_fill_mask(text: str, predictions: Sequence) -> Figure:
    """Horizontal bars: each predicted token (``.token``) and its probability (``.probability``), most probable on top."""
    figure = Figure(figsize=(7.5, 0.32 * len(predictions) + 1.3), layout="constrained")
    ax = figure.subplots()
    labels = [repr(p.token) for p in predictions][::-1]
    values = [p.probability for p in predictions][::-1]
    ax.barh(range(len(values)), values, color="#4c72b0")
    ax.set_yticks(range(len(values)), labels, family="monospace", fontsize=9)
    for row, value in enumerate(values):
        ax.text(value, row, f" {value:.1%}", va="center", fontsize=8)
    ax.set_xlim(0, max(values + [0.01]) * 1.25)
    ax.set_xlabel("probability at the <mask> position")
    ax.set_title(textwrap.fill(text, 80), fontsize=10)
    return figure


def fill_mask_explorer(model, tokenizer, sentences: Sequence[str], fill: Callable | None = None,
                       top_k: int = 8) -> Explorer:
    """Type a sentence with one ``<mask>`` (in the book: pick one of ``sentences``); see the ``top_k`` tokens.

    ``fill(model, tokenizer, text, top_k)`` defaults to :func:`course_lib.pretraining.esperberto.fill_mask`.
    Text it refuses (no mask, two masks, too long) draws its message instead of a traceback.
    """
    if fill is None:
        from .esperberto import fill_mask as fill
    sentences = list(sentences)
    if not sentences:
        raise ValueError("give at least one example sentence")
    style = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="640px")}
    controls = {"text": widgets.Text(sentences[0], description="sentence", continuous_update=False,
                                     placeholder="a sentence with one <mask>; press Enter", **style)}

    def draw(text: str) -> Figure:
        try:
            predictions = fill(model, tokenizer, text, top_k)
        except ValueError as error:
            return message_figure(str(error), width=9, columns=90)
        return plot_fill_mask(text, predictions)

    in_book = {"text": widgets.Dropdown(options=sentences, value=sentences[0], description="sentence")}
    return Explorer("Fill-mask: what the model puts in the <mask>", controls, draw, in_book)
