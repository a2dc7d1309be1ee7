"""The Transformer chapter's translation explorer: type or pick a German sentence, see the English and its alignment.

* :func:`example_sentences` picks a few short German sentences of the Multi30k test set (test2016).
* :func:`translation_alignment` is the pure compute function: the shipped model's greedy translation
  of the text and the attention behind it, by :func:`course_lib.seq2seq.alignment.align`, with the
  widget's settings (``head="mean"`` averages the heads; the RNN ignores layer and head).
* :func:`plot_alignment` draws it: translation as the title, target tokens down, source tokens across.
* :func:`translation_explorer` is the widget: a menu of example sentences (choosing one copies it
  into the text box), a text box for your own German (redrawn on Enter), the model, the decoder
  layer and the head. Text the model cannot take (empty, too long) draws a message, not a traceback.

As in :mod:`course_lib.attention.widgets`, the figure is a plain image output, so a notebook executed headless
keeps a picture of the initial settings. Not covered: beam search, other language pairs.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import nn

from ..data.loader import load_multi30k
from ..viz import Explorer, message_figure
from .alignment import Alignment, align
from .transformer import Transformer
from .translation import Tokenizers, load_translation_model

__all__ = ["ALIGNED_MODELS", "example_sentences", "plot_alignment", "translation_alignment", "translation_explorer"]

ALIGNED_MODELS = ("transformer", "rnn_attention")  # the shipped models that have attention to show


def example_sentences(count: int = 6, max_chars: int = 60) -> list[str]:
    """The first ``count`` German sentences of Multi30k's test2016 split with at most ``max_chars`` characters."""
    short = [german for german, _ in load_multi30k("test_2016_flickr") if len(german) <= max_chars]
    if len(short) < count:
        raise ValueError(f"only {len(short)} test sentences have at most {max_chars} characters")
    return short[:count]


def translation_alignment(models: dict[str, nn.Module], model_name: str, text: str, layer: int = -1,
                          head: int | str = "mean", tokenizers: Tokenizers | None = None) -> Alignment:
    """:func:`~course_lib.seq2seq.alignment.align` of ``text`` by ``models[model_name]`` with the explorer's settings.

    ``head`` is a head index or ``"mean"`` (all heads averaged). For the RNN, ``layer`` and ``head``
    are ignored: it has one attention.
    """
    if model_name not in models:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(models)}")
    if head != "mean" and not isinstance(head, int):
        raise ValueError(f"head must be a head index or 'mean', got {head!r}")
    model = models[model_name]
    if not isinstance(model, Transformer):  # an RNN: one attention, no layers or heads
        return align(model, text, tokenizers)
    return align(model, text, tokenizers, layer=layer, head=None if head == "mean" else head)


def plot_alignment(alignment: Alignment, label: str = "", ax=None) -> Figure:
    """The alignment heatmap with the translation as its title; draws into ``ax`` or a new Figure."""
    if ax is None:
        width = min(0.45 * len(alignment.source_tokens) + 3.0, 14.0)
        height = min(0.32 * len(alignment.target_tokens) + 2.2, 11.0)
        ax = Figure(figsize=(width, height), layout="constrained").add_subplot()
    title = textwrap.fill(f"{label}{alignment.translation!r}", 80)
    alignment.plot(ax=ax, title=title, annotate=False)
    return ax.figure


def translation_explorer(models: dict[str, nn.Module] | None = None, sentences: Sequence[str] | None = None,
                         tokenizers: Tokenizers | None = None) -> Explorer:
    """Pick or type a German sentence, choose model, layer and head; see the translation and its alignment."""
    models = models if models is not None else {name: load_translation_model(name) for name in ALIGNED_MODELS}
    sentences = list(sentences) if sentences is not None else example_sentences()
    if not sentences:
        raise ValueError("give at least one example sentence")
    transformers = [m for m in models.values() if isinstance(m, Transformer)]
    num_layers = len(transformers[0].decoder.layers) if transformers else 1
    num_heads = transformers[0].config["num_heads"] if transformers else 1
    style = {"style": {"description_width": "110px"}, "layout": widgets.Layout(width="640px")}
    example = widgets.Dropdown(options=sentences, value=sentences[0], description="example", **style)
    controls = {
        "text": widgets.Text(value=sentences[0], description="German text", continuous_update=False,
                             placeholder="type a German sentence and press Enter", **style),
        "model_name": widgets.Dropdown(options=list(models), description="model", **style),
        "layer": widgets.IntSlider(num_layers - 1, min=0, max=num_layers - 1, description="decoder layer",
                                   continuous_update=False, **style),
        "head": widgets.Dropdown(options=[("mean of the heads", "mean")] + [(f"head {h}", h) for h in range(num_heads)],
                                 value="mean", description="head", **style),
    }

    def copy_example(change) -> None:
        controls["text"].value = change["new"]  # the text box's observer redraws

    def layer_and_head_apply(change=None) -> None:
        is_rnn = not isinstance(models[controls["model_name"].value], Transformer)
        controls["layer"].disabled = controls["head"].disabled = is_rnn

    example.observe(copy_example, names="value")
    controls["model_name"].observe(layer_and_head_apply, names="value")
    layer_and_head_apply()

    def draw(text: str, model_name: str, layer: int, head: int | str) -> Figure:
        try:
            result = translation_alignment(models, model_name, text, layer, head, tokenizers)
        except ValueError as error:
            return message_figure(f"Cannot translate this: {error}")
        is_rnn = not isinstance(models[model_name], Transformer)
        heads = "mean of heads" if head == "mean" else f"head {head}"
        which = "additive attention" if is_rnn else f"layer {layer}, {heads}"
        return plot_alignment(result, f"{model_name} ({which}): ")

    # the book cannot translate what a reader types: there the text box is a menu of the examples
    in_book = {"text": widgets.Dropdown(options=sentences, value=sentences[0], description="German text")}
    explorer = Explorer("Translate German and see what each English token attended to", controls, draw, in_book)
    title, *rest = explorer.widget.children
    explorer.widget.children = (title, example, *rest)  # the menu fills the text box; it is not a control itself
    explorer.example = example
    return explorer
