"""Which source words a translation model reads while it writes each target word: alignment from attention.

::

    German sentence → source ids (… EOS) → greedy translation (the ids translate() produces)
                    → re-read the pair, recording attention → weights (T_tgt, S): row t = the
                      attention over the source while the model *produced* target token t

* :func:`translation_attention` (Transformer): every layer's encoder self-, decoder self- and
  cross-attention of the pair ``(source, <bos> + translation)``, in bertviz's contract (the dict of
  :func:`~course_lib.seq2seq.transformer.attention_maps`), with the token labels bertviz needs.
  Re-reading is exact: the decoder is causal, so position ``t`` sees the same prefix as it did
  at decoding step ``t``.
* :func:`align` (Transformer or :class:`~course_lib.seq2seq.rnn.RNNSeq2Seq` with attention): one
  ``(T_tgt, S)`` matrix. For the Transformer, one layer's cross-attention averaged over its heads
  (or one head); for the RNN, the additive attention that :class:`~course_lib.decoding.steppers.RNNStepper`
  records at each decoding step. Rows sum to 1.

Both decode with :func:`~course_lib.decoding.search.greedy_search` behind the model's stepper
(:func:`~course_lib.decoding.steppers.stepper_for`), exactly as :func:`~course_lib.seq2seq.translation.translate`
does through ``generate``.

Attention is a picture of what the model *reads*, not a word aligner's answer: averaged heads of
one layer often point at the right source word, but a head may just as well look at ``<eos>`` or
the neighbour. Not covered: beam search, forced (reference) targets, alignment error rates.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..decoding.search import greedy_search
from ..decoding.steppers import stepper_for
from .rnn import RNNSeq2Seq
from .transformer import Transformer, attention_maps
from .translation import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, Tokenizers, _source_ids, _strip, load_tokenizers

__all__ = ["Alignment", "TranslationAttention", "align", "token_labels", "translation_attention"]


class Alignment(NamedTuple):
    source_tokens: list[str]  # S subwords of the German sentence, the last one "<eos>"
    target_tokens: list[str]  # T_tgt generated subwords, "<eos>" last when the model stopped by itself
    translation: str  # the English text, exactly what translate() returns
    weights: torch.Tensor  # (T_tgt, S): row t = attention over the source while producing target token t

    def plot(self, ax=None, **kwargs):
        """Heatmap with target tokens down and source tokens across (:func:`course_lib.viz.plot_attention`)."""
        from ..viz.plots import plot_attention

        kwargs.setdefault("title", self.translation)
        return plot_attention(self.weights, self.target_tokens, self.source_tokens, ax=ax, xlabel="source (German)",
                              ylabel="target (English)", **kwargs)


class TranslationAttention(NamedTuple):
    source_tokens: list[str]  # S labels, bertviz's encoder_tokens
    decoder_tokens: list[str]  # "<bos>" + the T_tgt generated tokens: bertviz's decoder_tokens
    translation: str
    maps: dict[str, list[torch.Tensor]]  # encoder_attention (1, H, S, S), decoder_attention (1, H, T+1, T+1),
    #                                      cross_attention (1, H, T+1, S): one tensor per layer

    def cross_heads(self, layer: int = -1) -> torch.Tensor:
        """One layer's cross-attention per head, rows for the generated tokens: ``(H, T_tgt, S)``.

        The decoder's last position reads the final token and predicts nothing we kept, so it is dropped.
        """
        layers = self.maps["cross_attention"]
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"layer must be in [0, {len(layers) - 1}] (or negative from the end), got {layer}")
        return layers[layer][0, :, :-1]  # (H, T_tgt, S)


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Readable subword labels: the text of each id (``" Mann"``, with its leading space), special
    tokens by name, and a piece of a multi-byte character by its byte-level spelling."""
    labels = []
    for index in ids:
        if index < len(SPECIAL_TOKENS):
            labels.append(SPECIAL_TOKENS[index])
            continue
        try:
            labels.append(tokenizer.decode_bytes([index]).decode("utf-8"))
        except UnicodeDecodeError:  # half of "ü": show the byte-level token rather than U+FFFD
            labels.append(tokenizer.id_to_token[index])
    return labels


def _greedy(model: nn.Module, sentence: str, tokenizers: Tokenizers | None, src: str, tgt: str):
    """Source ids ``(S,)``, generated ids ``(T_tgt,)`` and their labels, decoded exactly as translate() does."""
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a string, got {type(sentence).__name__}")
    if not sentence.strip():
        raise ValueError("the sentence is empty: type a German sentence to translate")
    tokenizers = tokenizers or load_tokenizers(langs=(src, tgt))
    source = _source_ids(tokenizers[src], sentence)
    if len(source) > model.max_len:
        raise ValueError(f"the sentence has {len(source)} tokens; the model reads at most {model.max_len}")
    limit = min(model.max_len - 1, 2 * len(source) + 10)  # translate()'s default for a batch of one sentence
    device = next(model.parameters()).device
    source_batch, start = torch.tensor([source], device=device), torch.full((1, 1), BOS_ID, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            stepper = stepper_for(model, source_batch, source_batch != PAD_ID)  # encodes the source
            generated = greedy_search(stepper, start, torch.ones_like(start), limit, EOS_ID, PAD_ID)[0, 1:].cpu()
    finally:
        model.train(was_training)
    rnn_weights = getattr(stepper, "attention", None)  # the RNN's (1, T_tgt, S), one row per step
    translation = tokenizers[tgt].decode(_strip(generated.tolist())).strip()
    labels = (token_labels(tokenizers[src], source), token_labels(tokenizers[tgt], generated.tolist()))
    return torch.tensor(source), generated, labels, translation, rnn_weights


def translation_attention(model: Transformer, sentence: str, tokenizers: Tokenizers | None = None, *,
                          src: str = "de", tgt: str = "en") -> TranslationAttention:
    """Translate ``sentence`` greedily and record all of the Transformer's attention on the result."""
    if not isinstance(model, Transformer):
        raise TypeError(f"translation_attention needs a Transformer, got {type(model).__name__}; use align() for RNNs")
    source, generated, (source_tokens, target_tokens), translation, _ = _greedy(model, sentence, tokenizers, src, tgt)
    decoder_input = torch.cat([torch.tensor([BOS_ID]), generated])  # (T_tgt + 1,) <bos> + translation
    maps = attention_maps(model, source, decoder_input)
    return TranslationAttention(source_tokens, ["<bos>"] + target_tokens, translation, maps)


def align(model: nn.Module, sentence: str, tokenizers: Tokenizers | None = None, *, layer: int | None = None,
          head: int | None = None, src: str = "de", tgt: str = "en") -> Alignment:
    """Greedy translation of one German ``sentence`` and the attention behind it, ``weights (T_tgt, S)``.

    Transformer: cross-attention of decoder ``layer`` (default: the last), averaged over heads, or
    only ``head``. RNN with attention: its additive attention (it has no layers or heads).
    """
    if isinstance(model, RNNSeq2Seq):
        if not model.decoder.use_attention:
            raise ValueError("this RNN has no attention: its decoder reads one fixed summary vector, so there is "
                             "no alignment to show (use the rnn_attention or transformer model)")
        if layer is not None or head is not None:
            raise ValueError("the RNN has a single attention, no layers or heads: leave layer and head as None")
        _, _, (source_tokens, target_tokens), translation, weights = _greedy(model, sentence, tokenizers, src, tgt)
        return Alignment(source_tokens, target_tokens, translation, weights[0].cpu())  # (T_tgt, S)
    if not isinstance(model, Transformer):
        raise TypeError(f"align takes a Transformer or an RNNSeq2Seq, got {type(model).__name__}")
    num_layers, num_heads = len(model.decoder.layers), model.config["num_heads"]
    layer = num_layers - 1 if layer is None else layer
    if not -num_layers <= layer < num_layers:  # checked before the (slow) translation
        raise ValueError(f"layer must be in [0, {num_layers - 1}] (or negative from the end), got {layer}")
    if head is not None and not 0 <= head < num_heads:
        raise ValueError(f"head must be in [0, {num_heads - 1}] or None (the mean of the heads), got {head}")
    recorded = translation_attention(model, sentence, tokenizers, src=src, tgt=tgt)
    heads = recorded.cross_heads(layer)  # (H, T_tgt, S)
    # a mean of distributions is a distribution: rows still sum to 1
    weights = heads.mean(dim=0) if head is None else heads[head]
    return Alignment(recorded.source_tokens, recorded.decoder_tokens[1:], recorded.translation, weights)
