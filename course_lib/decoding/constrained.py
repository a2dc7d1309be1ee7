"""Constrained beam search: beam search whose outputs must contain given words (``force_words_ids``).

Plain beam search cannot be told "use the word *sword*": the word's first token may never rank
among the top continuations. Constrained beam search (Hokamp & Liu, 2017; Post & Vilar, 2018;
HF's ``force_words_ids``) changes two things at each step:

1. **Forced candidates.** Besides the best continuations over all beams, every beam also proposes
   the token that advances its constraints: the next token of the word it has started, or the first
   token of each word it has not used yet, whatever their scores.
2. **Banks.** Candidates are grouped by *progress*: how many constraint tokens they contain. The
   next beams are taken round-robin from the banks, most progress first (best of bank n, best of
   bank n-1, …, second best of bank n, …), so a beam that just made progress is not pushed out by
   higher-scoring beams that made none.

A sequence may finish (EOS or ``max_length``) only once every word is complete; finished sequences
are ranked by ``log p / length ** length_penalty`` as in :mod:`course_lib.decoding`. Each word is
a list of token ids and must appear as consecutive tokens. Covered: that simple case (HF's
``PhrasalConstraint``). Not covered: disjunctive constraints (any of several forms of a word),
HF's exact candidate bookkeeping (HF 5 moved constrained beam search out of the library to a Hub
repository, ``transformers-community/constrained-beam-search``, so it cannot be pinned offline),
batched scoring. Python loops over candidates: fine for a few beams, slow for many.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Progress", "constrained_beam_search"]


@dataclass(frozen=True)
class Progress:
    """Which words are complete and how far into the current one a beam is."""

    done: frozenset = frozenset()
    current: int | None = None  # index of the word being written, if any
    position: int = 0  # tokens of it written so far

    def tokens_forced(self, words):
        if self.current is not None:
            return [words[self.current][self.position]]
        return [word[0] for i, word in enumerate(words) if i not in self.done]

    def advance(self, token, words) -> "Progress":
        if self.current is not None and words[self.current][self.position] == token:
            position = self.position + 1
            if position == len(words[self.current]):
                return Progress(self.done | {self.current})
            return Progress(self.done, self.current, position)
        # Not continuing the current word (or none started): does the token start an unused one?
        for i, word in enumerate(words):
            if i not in self.done and word[0] == token:
                return Progress(self.done | {i}) if len(word) == 1 else Progress(self.done, i, 1)
        return Progress(self.done)

    def score(self, words) -> int:  # the bank: constraint tokens written
        return sum(len(words[i]) for i in self.done) + self.position

    def complete(self, words) -> bool:
        return len(self.done) == len(words)


def _validate_words(force_words_ids, vocab_size=None):
    if not isinstance(force_words_ids, (list, tuple)) or not force_words_ids:
        raise ValueError("force_words_ids must be a non-empty list of words, each a non-empty list of token ids")
    words = []
    for word in force_words_ids:
        if isinstance(word, int):
            word = [word]
        if not isinstance(word, (list, tuple)) or not word or not all(isinstance(t, int) and t >= 0 for t in word):
            raise ValueError(f"each forced word must be a non-empty list of token ids >= 0, got {word!r}")
        words.append(tuple(word))
    return words


def constrained_beam_search(stepper, ids, mask, max_new_tokens, num_beams, force_words_ids, eos_token_id=None,
                            pad_token_id=0, penalties=None, *, length_penalty=1.0, num_return_sequences=1):
    """Beam search whose returned sequences contain every word of ``force_words_ids``; ``(B*R, T + n)``."""
    words = _validate_words(force_words_ids)
    if sum(map(len, words)) > max_new_tokens:
        raise ValueError(f"the forced words need {sum(map(len, words))} tokens but max_new_tokens is {max_new_tokens}")
    batch, prompt_len = ids.shape
    penalties = penalties or (lambda s, _: s)
    scores = stepper.start(ids, mask, prompt_len + max_new_tokens)  # (B, V)
    stepper.expand(num_beams)
    scores = scores.repeat_interleave(num_beams, dim=0)  # (B*K, V)
    # Per batch item: K beams of (tokens, log p, progress); finished: (normalised score, tokens).
    beams = [[(ids[b].tolist(), 0.0 if k == 0 else -1e9, Progress()) for k in range(num_beams)] for b in range(batch)]
    finished = [[] for _ in range(batch)]
    for length in range(prompt_len, prompt_len + max_new_tokens):
        flat = [beam for item in beams for beam in item]
        history = torch.tensor([tokens for tokens, _, _ in flat], device=ids.device)  # (B*K, length)
        log_probs = penalties(F.log_softmax(scores, dim=-1), history)  # (B*K, V)
        vocab = log_probs.shape[-1]
        totals = log_probs + torch.tensor([s for _, s, _ in flat], device=ids.device)[:, None]
        parents, next_tokens = [], []
        for b in range(batch):
            rows = totals[b * num_beams:(b + 1) * num_beams]  # (K, V)
            top = torch.topk(rows.flatten(), 2 * num_beams).indices.tolist()
            proposals = {(i // vocab, i % vocab) for i in top}
            for k, (_, _, progress) in enumerate(beams[b]):
                proposals |= {(k, t) for t in progress.tokens_forced(words)}
            banks: dict[int, list] = {}
            last_step = length + 1 == prompt_len + max_new_tokens
            for k, token in proposals:
                tokens, _, progress = beams[b][k]
                score = float(rows[k, token])
                if score <= -1e8:  # the -1e9 start beams, or a token a processor removed
                    continue
                new = progress.advance(token, words)
                if token == eos_token_id or last_step:
                    if new.complete(words):  # only complete sequences may finish
                        finished[b].append((score / ((length + 1 - prompt_len) ** length_penalty), tokens + [token]))
                    continue
                banks.setdefault(new.score(words), []).append((score, k, tokens + [token], new))
            for bank in banks.values():
                bank.sort(key=lambda c: -c[0])
            order = sorted(banks, reverse=True)
            chosen = [banks[n][i] for i in range(max(map(len, banks.values()), default=0))
                      for n in order if i < len(banks[n])][:num_beams]
            while len(chosen) < num_beams:  # too few candidates: pad with dead beams
                chosen.append((-1e9, 0, beams[b][0][0] + [pad_token_id], Progress()))
            beams[b] = [(tokens, score, progress) for score, _, tokens, progress in chosen]
            parents += [b * num_beams + k for _, k, _, _ in chosen]
            next_tokens += [tokens[-1] for _, _, tokens, _ in chosen]
        if length + 1 == prompt_len + max_new_tokens:
            break
        stepper.reorder(torch.tensor(parents, device=ids.device))
        scores = stepper.step(torch.tensor(next_tokens, device=ids.device))

    fill = -1 if eos_token_id is None else (pad_token_id or eos_token_id)
    results = []
    for b in range(batch):
        ranked = sorted(finished[b], key=lambda f: -f[0])
        if len(ranked) < num_return_sequences:  # no complete sequence: return the best beams as they are
            ranked += [(s, t) for t, s, _ in sorted(beams[b], key=lambda x: -x[1])]
        results += [tokens for _, tokens in ranked[:num_return_sequences]]
    longest = max(map(len, results))
    return torch.tensor([tokens + [fill] * (longest - len(tokens)) for tokens in results], device=ids.device)
