"""An RNN encoder-decoder, with and without additive (Bahdanau) attention.

The encoder, a bidirectional GRU, reads the source and leaves one state per position. The
decoder, a GRU, writes the target one token at a time. What it reads of the source is the
**context** vector ``c_t``:

* without attention (Cho et al., 2014; Sutskever et al., 2014): ``c_t = c`` for every step, the
  encoder's final states. The whole sentence must squeeze through one fixed vector, the
  *bottleneck*, and long sentences suffer.
* with attention (Bahdanau et al., 2015): ``c_t = Σ_s α_ts h_s``, a fresh average of all encoder
  states ``h_s`` at every step, with weights from an additive score::

      score(q, k) = vᵀ tanh(W_q q + W_k k),     α_t = softmax over real source positions

  where the query ``q`` is the decoder's previous hidden state.

Masks follow :mod:`course_lib.attention.masks`: ``src_key_padding_mask (B, S)`` is True at real tokens.
The models return logits ``(B, T, V)``; ``return_attention=True`` adds the weights
``(B, T, S)`` for alignment plots. Not covered: LSTMs, decoding (greedy and beam search run the
decoder's ``step`` through :class:`course_lib.decoding.RNNStepper`), multiplicative (Luong) attention,
input feeding.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .validation import validate_padding_mask, validate_token_ids

__all__ = ["AdditiveAttention", "RNNEncoder", "RNNDecoder", "RNNSeq2Seq"]


class AdditiveAttention(nn.Module):
    """``score(q, k) = vᵀ tanh(W_q q + W_k k)``, softmax over the unpadded keys, average of the values.

    ``forward(query (B, D_q), keys (B, S, D_k), key_padding_mask (B, S) | None)`` returns
    ``(context (B, D_k), weights (B, S))``. Pass ``projected_keys = attention.project_keys(keys)``
    to reuse ``W_k k`` across decoding steps (the keys do not change).
    """

    def __init__(self, query_dim: int, key_dim: int, attention_dim: int):
        super().__init__()
        self.W_q = nn.Linear(query_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(key_dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.W_k(keys)  # (B, S, A)

    def scores(self, query: torch.Tensor, projected_keys: torch.Tensor) -> torch.Tensor:
        # (B, 1, A) + (B, S, A) broadcasts: every key meets the same query.
        return self.v(torch.tanh(self.W_q(query)[:, None, :] + projected_keys)).squeeze(-1)  # (B, S)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                projected_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if query.ndim != 2 or keys.ndim != 3 or query.shape[0] != keys.shape[0]:
            raise ValueError(f"expected query (B, D_q) and keys (B, S, D_k), got {tuple(query.shape)} and {tuple(keys.shape)}")
        validate_padding_mask(key_padding_mask, keys.shape[0], keys.shape[1], "key_padding_mask")
        projected_keys = self.project_keys(keys) if projected_keys is None else projected_keys
        scores = self.scores(query, projected_keys)  # (B, S)
        if key_padding_mask is not None:
            scores = scores.masked_fill(~key_padding_mask, float("-inf"))  # padding gets weight exactly 0
        weights = torch.softmax(scores, dim=-1)  # (B, S), each row sums to 1
        context = (weights[:, :, None] * keys).sum(dim=1)  # (B, D_k)
        return context, weights


class RNNEncoder(nn.Module):
    """Bidirectional GRU: ids ``(B, S)`` → states ``(B, S, 2H)`` and a summary ``(B, 2H)``.

    The summary joins the forward GRU's state after the last *real* token with the backward
    GRU's state after the first token: the fixed context of the no-attention model.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)

    def forward(self, src: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None):
        x = self.dropout(self.embedding(src))  # (B, S, E)
        if src_key_padding_mask is None:
            states, final = self.rnn(x)
        else:
            # Packing makes each direction stop at the sequence's real end, not at the padding.
            lengths = src_key_padding_mask.sum(dim=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            states, final = self.rnn(packed)
            states, _ = pad_packed_sequence(states, batch_first=True, total_length=src.shape[1])
        summary = torch.cat([final[0], final[1]], dim=-1)  # (B, 2H): forward end, backward end
        return states, summary  # (B, S, 2H), (B, 2H)


class RNNDecoder(nn.Module):
    """GRU decoder; each step reads ``[embedding(y_{t-1}); c_t]`` and predicts ``y_t``."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, memory_dim: int,
                 use_attention: bool = True, dropout: float = 0.0):
        super().__init__()
        self.use_attention = use_attention
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.init_hidden = nn.Linear(memory_dim, hidden_dim)  # summary → first decoder state
        self.attention = AdditiveAttention(hidden_dim, memory_dim, hidden_dim) if use_attention else None
        self.cell = nn.GRUCell(embed_dim + memory_dim, hidden_dim)
        self.output = nn.Linear(hidden_dim + memory_dim + embed_dim, vocab_size)

    def start(self, memory: torch.Tensor, summary: torch.Tensor, memory_key_padding_mask: torch.Tensor | None):
        """The decoding state before the first step: hidden ``(B, H)`` plus what every step reuses."""
        projected = self.attention.project_keys(memory) if self.use_attention else None
        return {"hidden": torch.tanh(self.init_hidden(summary)), "memory": memory, "summary": summary,
                "mask": memory_key_padding_mask, "projected_keys": projected}

    def step(self, prev_tokens: torch.Tensor, state: dict):
        """One step: ``prev_tokens (B,)`` → ``logits (B, V)``, new state, attention ``(B, S)`` or None."""
        embedded = self.dropout(self.embedding(prev_tokens))  # (B, E)
        if self.use_attention:
            context, weights = self.attention(state["hidden"], state["memory"], state["mask"], state["projected_keys"])
        else:
            context, weights = state["summary"], None  # the same vector at every step: the bottleneck
        hidden = self.cell(torch.cat([embedded, context], dim=-1), state["hidden"])  # (B, H)
        logits = self.output(self.dropout(torch.cat([hidden, context, embedded], dim=-1)))  # (B, V)
        return logits, {**state, "hidden": hidden}, weights


class RNNSeq2Seq(nn.Module):
    """Encoder + decoder. ``forward(src (B, S), tgt (B, T), src_key_padding_mask=None)`` → logits ``(B, T, V)``.

    Teacher forcing: step ``t`` reads the true token ``tgt[:, t]`` and predicts ``tgt[:, t+1]``.
    ``tgt_key_padding_mask`` is accepted for the Transformer's calling convention and not
    needed: an RNN reading left to right never sees later positions, and the loss skips padding.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, embed_dim: int = 256, hidden_dim: int = 512,
                 use_attention: bool = True, dropout: float = 0.1, max_len: int = 512):
        super().__init__()
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, embed_dim=embed_dim,
                           hidden_dim=hidden_dim, use_attention=use_attention, dropout=dropout, max_len=max_len)
        self.max_len = max_len
        self.encoder = RNNEncoder(src_vocab_size, embed_dim, hidden_dim, dropout)
        self.decoder = RNNDecoder(tgt_vocab_size, embed_dim, hidden_dim, 2 * hidden_dim, use_attention, dropout)

    def encode(self, src: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> dict:
        """Source ids → the decoder's starting state."""
        validate_token_ids(src, self.encoder.embedding.num_embeddings, self.max_len, "source")
        validate_padding_mask(src_key_padding_mask, src.shape[0], src.shape[1], "src_key_padding_mask")
        memory, summary = self.encoder(src, src_key_padding_mask)  # (B, S, 2H), (B, 2H)
        return self.decoder.start(memory, summary, src_key_padding_mask)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None,
                tgt_key_padding_mask: torch.Tensor | None = None, return_attention: bool = False):
        validate_token_ids(tgt, self.decoder.embedding.num_embeddings, self.max_len, "target")
        if src.ndim == 2 and src.shape[0] != tgt.shape[0]:
            raise ValueError(f"source and target batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
        state = self.encode(src, src_key_padding_mask)
        all_logits, all_weights = [], []
        for t in range(tgt.shape[1]):
            logits, state, weights = self.decoder.step(tgt[:, t], state)
            all_logits.append(logits)
            all_weights.append(weights)
        logits = torch.stack(all_logits, dim=1)  # (B, T, V)
        if not return_attention:
            return logits
        return logits, (torch.stack(all_weights, dim=1) if self.decoder.use_attention else None)  # (B, T, S)
