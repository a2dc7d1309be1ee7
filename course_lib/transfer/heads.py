"""Task heads on the library's encoder: pool the sentence, classify it.

* :func:`pool` — one vector per sentence from the encoder's last hidden states: the first position
  (``[CLS]``/``<s>``) or the mean over the real tokens only (padding excluded).
* :class:`EncoderForSequenceClassification` — the encoder, a pooled sentence vector, dropout and one linear
  layer: a score per class. Two poolings:

  - ``"cls"``: BERT's — the pooler (dense + tanh) on position 0, as HF ``BertForSequenceClassification``
    (to which the tests pin logits and loss);
  - ``"mean"``: the masked mean of the last hidden states, no pooler — how sentence-transformers trained
    all-MiniLM-L6-v2, so the vector the pretrained weights were shaped for.

* :func:`sequence_classification_loss` — mean cross-entropy over the sentences.

The token-classification head is the pretraining unit's
(:class:`course_lib.pretraining.tagging.EncoderForTokenClassification`). Not covered: regression heads
(one output, mean squared error), multi-label classification, sentence pairs beyond passing ``token_type_ids``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..pretraining.encoder import Encoder, EncoderConfig, config_from_hf, from_hf

__all__ = ["POOLINGS", "pool", "EncoderForSequenceClassification", "sequence_classification_loss"]

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str = "cls") -> torch.Tensor:
    """One vector per sentence, ``(B, D)``, from hidden states ``(B, T, D)`` and a 0/1 mask ``(B, T)``.

    ``"cls"``: the first position's vector (BERT's pooler then applies dense + tanh to it).
    ``"mean"``: the average over the positions where the mask is 1, so padding changes nothing.
    """
    if how not in POOLINGS:
        raise ValueError(f"how must be one of {POOLINGS}, got {how!r}")
    if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(f"hidden must be (B, T, D) and attention_mask (B, T); got {tuple(hidden.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    if how == "cls":
        return hidden[:, 0]  # (B, D)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    counts = weights.sum(dim=1)  # (B, 1)
    if (counts == 0).any():
        raise ValueError("a row of attention_mask has no real token: its mean is undefined")
    return (hidden * weights).sum(dim=1) / counts  # (B, D)


class EncoderForSequenceClassification(nn.Module):
    """``forward(input_ids (B, T), attention_mask=None, token_type_ids=None)`` → logits ``(B, num_labels)``.

    ``pooling="cls"`` keeps the encoder's pooler (dense + tanh on position 0); ``"mean"`` builds the encoder
    without one. ``classifier_dropout`` defaults to the encoder's dropout rate (HF's rule)."""

    def __init__(self, config: EncoderConfig, num_labels: int = 2, pooling: str = "cls",
                 classifier_dropout: float | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2 for classification, got {num_labels}")
        self.config, self.num_labels, self.pooling = config, num_labels, pooling
        self.encoder = Encoder(config, add_pooler=pooling == "cls")
        self.dropout = nn.Dropout(config.dropout if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(config.dim, num_labels)
        nn.init.normal_(self.classifier.weight, std=config.init_std)
        nn.init.zeros_(self.classifier.bias)

    def sentence_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled vectors ``(B, D)`` the classifier reads (before its dropout): feature extraction's features."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        output = self.encoder(input_ids, attention_mask, token_type_ids)
        if self.pooling == "cls":
            return output.pooler_output  # (B, D): tanh(dense(h[:, 0]))
        return pool(output.last_hidden_state, attention_mask, "mean")  # (B, D)

    def classify(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_labels)`` from pooled vectors ``(B, D)``: dropout, then the linear layer."""
        return self.classifier(self.dropout(vectors))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.sentence_vectors(input_ids, attention_mask, token_type_ids))  # (B, C)

    @classmethod
    def from_encoder(cls, encoder: Encoder, num_labels: int = 2, pooling: str = "cls",
                     classifier_dropout: float | None = None) -> EncoderForSequenceClassification:
        """A classifier starting from a (pretrained) encoder's weights, copied; a fresh classifier on top.
        ``"cls"`` needs the encoder's pooler (its trained dense layer); ``"mean"`` leaves it out."""
        if pooling == "cls" and encoder.pooler is None:
            raise ValueError("pooling='cls' uses the encoder's pooler, and this encoder has none "
                             "(built with add_pooler=False): use pooling='mean'")
        model = cls(encoder.config, num_labels, pooling, classifier_dropout)
        state = {k: v for k, v in encoder.state_dict().items() if pooling == "cls" or not k.startswith("pooler.")}
        model.encoder.load_state_dict(state)  # copies the values: the classifier shares no tensor with `encoder`
        return model

    @classmethod
    def from_hf(cls, hf_model) -> EncoderForSequenceClassification:
        """A copy of a ``transformers`` ``BertForSequenceClassification`` (single-label: ``"cls"`` pooling)."""
        problem = getattr(hf_model.config, "problem_type", None)
        if hf_model.num_labels < 2 or problem not in (None, "single_label_classification"):
            raise ValueError("only single-label classification with num_labels >= 2 is copied; got "
                             f"num_labels={hf_model.num_labels}, problem_type={problem!r}")
        base = getattr(hf_model, hf_model.config.model_type)
        if getattr(base, "pooler", None) is None:
            raise ValueError(f"{type(hf_model).__name__} has no pooler: expected BERT's [CLS] head")
        ours = cls(config_from_hf(hf_model.config), hf_model.num_labels, "cls", hf_model.dropout.p)
        ours.encoder.load_state_dict(from_hf(base).state_dict())
        ours.classifier.load_state_dict(hf_model.classifier.state_dict())
        return ours.to(next(hf_model.parameters()).device).train(hf_model.training)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the sentences: logits ``(B, C)``, labels ``(B,)`` of class indices."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (B, C) and labels (B,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise ValueError(f"labels must be class indices (an integer dtype), got {labels.dtype}")
    if ((labels < 0) | (labels >= logits.shape[1])).any():
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values {labels.unique().tolist()}")
    return F.cross_entropy(logits, labels)
