"""Hidden checks of lab 04, decoding: top-k and top-p filters, the sampling distribution, one beam search step.

One ``check_*`` function per graded cell of ``labs/source/04_decoding/decoding_lab.ipynb``; ``RUBRIC``
lists them with their points. The references are the library's: :func:`course_lib.decoding.processors.top_k_filter`
and :func:`~course_lib.decoding.processors.top_p_filter` (which equal HF's warpers), the order of
:func:`course_lib.decoding.sample` (temperature, top-k, top-p, softmax), and for beam search
:func:`reference_beam_step`, the selection step of :func:`course_lib.decoding.beam_search` without an
end token; :func:`check_beam_scores` also loops the student's step on the course's Shakespeare GPT
(:func:`run_beam_search`), which with the reference step gives ``course_lib.decoding.generate(num_beams=K)``'s
token ids (pinned by ``tests/test_lab_decoding.py``).

Each classic mistake costs only its own cell:

* :func:`check_top_k` has no ties, :func:`check_top_k_ties` only ties at the k-th score, where
  thresholds at the k-th and the (k+1)-th score agree: keeping k+1 tokens loses the first, keeping
  exactly k tokens of a tie the second;
* ``filtered_distribution`` is checked with the reference filters swapped into its namespace, so a
  wrong filter costs only its own cell; :func:`check_distribution_sums_to_one` checks the sums only,
  :func:`check_distribution_filters` the distribution up to a factor per row (a missing
  renormalisation passes it);
* the three outputs of a beam step are checked apart: scores and tokens (parents inferred from them
  in the end-to-end run), the source rows, and the cache against the student's *own* rows.

Trials are seeded (``checks.trials``) and run on :func:`course_lib.get_device`. Not covered: EOS
handling and the finished list (``course_lib.decoding.beam_search``), sampling itself.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..decoding.processors import top_k_filter, top_p_filter
from ..models.gpt import load_shakespeare_gpt
from ..models.kv_cache import reorder_cache
from .rubric import Criterion, Rubric
from .toolkit import CheckFailed, Trial, call_student, expect_close, expect_tensor, fail, is_close, trials

__all__ = [
    "check_top_k", "check_top_k_ties", "check_top_p", "check_distribution_sums_to_one",
    "check_distribution_filters", "check_beam_scores", "check_beam_rows", "check_beam_cache",
    "check_finished_score", "reference_distribution", "reference_beam_step", "reference_finished_score",
    "run_beam_search", "RUBRIC",
]

TRIALS = 8
NEG_INF = float("-inf")


# --- references ------------------------------------------------------------------------------------

def reference_distribution(logits, temperature=1.0, top_k=None, top_p=None, *, order=("t", "k", "p")):
    """Sampling probabilities as :func:`course_lib.decoding.sample` computes them (``order`` varies it
    for the checks' diagnoses: "t" temperature, "k" top-k, "p" top-p)."""
    scores = logits
    for step in order:
        if step == "t":
            scores = scores / temperature
        elif step == "k" and top_k is not None:
            scores = top_k_filter(scores, top_k)
        elif step == "p" and top_p is not None:
            scores = top_p_filter(scores, top_p)
    return scores.softmax(dim=-1)


def reference_beam_step(log_probs, beam_scores, cache, num_beams):
    """One step of :func:`course_lib.decoding.beam_search` without an end token.

    ``log_probs`` ``(B*K, V)``, ``beam_scores`` ``(B*K,)``; returns ``(scores, tokens, rows, cache)``,
    the K best continuations of each prompt, best first, ``rows`` indexing the old beams.
    """
    rows_in, vocab = log_probs.shape
    batch = rows_in // num_beams
    totals = (log_probs + beam_scores[:, None]).view(batch, num_beams * vocab)  # (B, K*V)
    scores, flat = torch.topk(totals, num_beams, dim=-1)  # (B, K), best first
    offset = torch.arange(batch, device=log_probs.device)[:, None] * num_beams
    rows = (flat // vocab + offset).flatten()
    return scores.flatten(), (flat % vocab).flatten(), rows, reorder_cache(cache, rows)


def reference_finished_score(sum_log_probs, sequence_length, prompt_length, length_penalty):
    """HF's (and :func:`course_lib.decoding.beam_search`'s) score of a finished hypothesis:
    ``sum log p / generated_length ** length_penalty``, EOS counted, the prompt not."""
    return sum_log_probs / (sequence_length - prompt_length) ** length_penalty


# --- helpers ---------------------------------------------------------------------------------------

def _kept(result, logits, name: str, context: str) -> torch.Tensor:
    """Boolean mask of the tokens ``result`` keeps; fail unless removed scores are -inf and kept ones unchanged."""
    expect_tensor(result, name=name, shape=tuple(logits.shape), context=context)
    result = result.detach().to(logits.device).float()
    if torch.isnan(result).any():
        fail(f"{name} contains NaN (on {context})", "removed tokens get -inf; no division or softmax is needed here.")
    if (result == float("inf")).any():
        fail(f"{name} contains +inf (on {context})", "a removed token's score is -inf (float('-inf')), not +inf.")
    kept = torch.isfinite(result)
    if is_close(result[kept], logits[kept]):
        return kept
    changed = ~torch.isclose(result, logits, atol=1e-5, rtol=1e-4)
    if bool((result[changed] == 0).all()):
        fail(f"{name} sets removed tokens to 0 instead of -inf (on {context})",
             "0 is an ordinary score (probability ∝ e⁰ = 1); only -inf gives a token probability 0 after softmax: "
             "logits.masked_fill(remove, float('-inf')).")
    if is_close(result.exp().sum(-1), torch.ones(len(result), device=result.device)) or \
            is_close(result.sum(-1), torch.ones(len(result), device=result.device)):
        fail(f"{name} returns probabilities, not scores (on {context})",
             "return the logits themselves, with -inf at the removed tokens: the softmax comes later.")
    fail(f"{name} changes the scores of the tokens it keeps (on {context})",
         "return a copy of the logits with -inf at the removed tokens and every other score unchanged.")


def _difference(kept: torch.Tensor, expected: torch.Tensor) -> str:
    """``'row 1 keeps tokens [0, 3], expected [0, 3, 4]'`` for the first row where the masks differ."""
    row = int((kept != expected).any(-1).nonzero()[0, 0])
    return (f"row {row} keeps tokens {kept[row].nonzero()[:, 0].tolist()}, "
            f"expected {expected[row].nonzero()[:, 0].tolist()}")


def _call_filter(function, logits, value, name: str, context: str) -> torch.Tensor:
    try:
        result = call_student(function, logits, value, name=name)
    except CheckFailed as error:
        if error.hint is None and value >= logits.shape[-1]:  # e.g. torch.topk with k > V
            fail(f"{error.problem} (on {context})", "k may exceed the vocabulary size V: then every token stays "
                 "(clamp it: k = min(k, logits.shape[-1])).")
        raise
    return _kept(result, logits, f"{name}(logits, {value})", context)


# --- top-k ------------------------------------------------------------------------------------------

def check_top_k(top_k: Callable) -> None:
    """``top_k_filter(logits, k)`` keeps the k largest scores of each row (no ties here), -inf elsewhere."""
    for trial in trials(TRIALS, seed=1100):
        rows, vocab = trial.randint(1, 4), trial.randint(5, 30)
        logits = trial.randn(rows, vocab) * 2
        k = trial.randint(2, vocab - 1) if trial.index < TRIALS - 2 else (vocab, vocab + 3)[trial.index % 2]
        context = f"logits {tuple(logits.shape)}, k={k}"
        kept = _call_filter(top_k, logits, k, "top_k_filter", context)
        expected = torch.isfinite(top_k_filter(logits, k))
        if torch.equal(kept, expected):
            continue
        counts = kept.sum(-1)
        if k >= vocab:
            fail(f"with k={k} ≥ V={vocab} every token must be kept: {_difference(kept, expected)} (on {context})",
                 "when k is at least the vocabulary size there is nothing to remove: clamp k to logits.shape[-1].")
        if bool((counts == k + 1).all()):
            fail(f"top_k_filter keeps k+1 tokens per row instead of k (on {context})",
                 "off by one: the k-th largest score is torch.topk(logits, k).values[..., -1] "
                 "(or sorted scores[..., k - 1], counting from 0); keep the scores >= it.")
        if bool((counts == k - 1).all()):
            fail(f"top_k_filter keeps k-1 tokens per row instead of k (on {context})",
                 "keep the scores >= the k-th largest one, the k-th itself included.")
        if torch.equal(kept, torch.isfinite(top_k_filter(-logits, k))):
            fail(f"top_k_filter keeps the k smallest scores instead of the k largest (on {context})",
                 "torch.topk returns the largest values by default; keep those.")
        fail(f"top_k_filter: {_difference(kept, expected)} (on {context})",
             "each row (one sequence) is filtered on its own, over the last axis: keep the k highest scores of the row.")


def _tied_logits(trial: Trial):
    """Integer-valued logits ``(N, V)`` and a k whose k-th and (k+1)-th largest scores tie in every row."""
    for _ in range(1000):
        rows, vocab = trial.randint(1, 3), trial.randint(6, 12)
        logits = torch.randint(0, 4, (rows, vocab), generator=trial.generator).float()
        k = trial.randint(1, vocab - 2)
        ranked = logits.sort(dim=-1, descending=True).values
        if bool((ranked[:, k - 1] == ranked[:, k]).all()):
            return logits.to(trial.device), k
    raise RuntimeError("could not draw tied logits")  # unreachable for these sizes


def check_top_k_ties(top_k: Callable) -> None:
    """Scores tied with the k-th largest stay, as in the library and HF: a row may keep more than k."""
    for trial in trials(TRIALS // 2, seed=1200):
        logits, k = _tied_logits(trial)
        context = f"logits {logits.cpu().tolist()}, k={k}"
        kept = _call_filter(top_k, logits, k, "top_k_filter", context)
        expected = torch.isfinite(top_k_filter(logits, k))
        if torch.equal(kept, expected):
            continue
        hint = ("keep every score >= the k-th largest (a threshold), not the k positions torch.topk returns: "
                "tokens tied with the k-th are all kept, as HF's TopKLogitsWarper does.")
        if bool((kept.sum(-1) == k).all()):
            fail(f"top_k_filter keeps exactly k tokens although several tie with the k-th largest score: "
                 f"{_difference(kept, expected)} (on {context})", hint)
        fail(f"top_k_filter: {_difference(kept, expected)} (on {context})", hint)


# --- top-p ------------------------------------------------------------------------------------------

def _nucleus_p(trial: Trial, probs: torch.Tensor) -> float:
    """A p at least 1e-3 away from every cumulative probability of every row (no rounding at the boundary)."""
    ranked_cumsum = probs.sort(dim=-1, descending=True).values.cumsum(-1).flatten().cpu()
    for _ in range(1000):
        p = 0.05 + 0.9 * float(torch.rand((), generator=trial.generator))
        if bool(((ranked_cumsum - p).abs() > 1e-3).all()):
            return round(p, 4)
    raise RuntimeError("could not draw p")  # unreachable for these sizes


def check_top_p(top_p: Callable) -> None:
    """``top_p_filter(logits, p)`` keeps the smallest set of most likely tokens whose probability reaches p."""
    for trial in trials(TRIALS, seed=1300):
        rows, vocab = trial.randint(1, 4), trial.randint(4, 30)
        logits = trial.randn(rows, vocab) * (1 + trial.index % 3)
        probs = logits.softmax(-1)
        if trial.index == TRIALS - 1:  # p below every row's largest probability: only the top token stays
            p = round(float(probs.max(-1).values.min()) / 2, 4)
        else:
            p = _nucleus_p(trial, probs)
        context = f"logits {tuple(logits.shape)}, p={p}"
        kept = _call_filter(top_p, logits, p, "top_p_filter", context)
        expected = torch.isfinite(top_p_filter(logits, p))
        if torch.equal(kept, expected):
            continue
        # The least likely token the reference keeps is the one that carries the total to p.
        crossing = probs.masked_fill(~expected, 2.0).argmin(-1)  # (N,)
        without_crossing = expected.scatter(-1, crossing[:, None], False)
        if torch.equal(kept, without_crossing):
            fail(f"top_p_filter dropped the token that crosses p: {_difference(kept, expected)} (on {context})",
                 "the kept set must reach p, so the token that carries the running total to p or beyond stays: "
                 "keep a token when the probability of the tokens *more* likely than it is below p "
                 "(cumulative sum minus the token's own probability < p). The most likely token always stays.")
        if not bool(kept.any(-1).all()):
            fail(f"top_p_filter removes every token of a row (on {context})",
                 "the most likely token must always stay, even when its probability alone exceeds p.")
        if torch.equal(kept, torch.isfinite(top_p_filter(-logits, p))):
            fail(f"top_p_filter keeps the least likely tokens (on {context})",
                 "sort the probabilities in descending order (most likely first) before the cumulative sum.")
        if bool((kept.sum(-1) == expected.sum(-1) + 1).all()) and bool((kept | expected).eq(kept).all()):
            fail(f"top_p_filter keeps one token too many per row: {_difference(kept, expected)} (on {context})",
                 "stop at the token whose probability carries the total to p: the next one is no longer needed.")
        fail(f"top_p_filter: {_difference(kept, expected)} (on {context})",
             "turn each row's scores into probabilities with softmax, sort them from most to least likely, and "
             "keep tokens while the probability of the tokens before them is below p.")


# --- the sampling distribution ----------------------------------------------------------------------

def _sampling_settings(trial: Trial, vocab: int):
    temperature = (0.5, 0.7, 1.5, 2.0)[trial.index % 4]
    top_k = None if trial.index % 3 == 2 else trial.randint(3, vocab - 1)
    top_p = None if trial.index % 4 == 3 else (0.6, 0.75, 0.9)[trial.index % 3]
    return temperature, top_k, top_p


def _call_distribution(distribution: Callable, trial: Trial):
    rows, vocab = trial.randint(1, 4), trial.randint(8, 30)
    logits = trial.randn(rows, vocab) * 2
    settings = _sampling_settings(trial, vocab)
    context = (f"logits {tuple(logits.shape)}, temperature={settings[0]}, top_k={settings[1]}, "
               f"top_p={settings[2]}")
    probs = call_student(distribution, logits, *settings, name="filtered_distribution")
    expect_tensor(probs, name="filtered_distribution(...)", shape=tuple(logits.shape), context=context)
    return logits, settings, probs.detach().to(logits.device).float(), context


def check_distribution_sums_to_one(distribution: Callable) -> None:
    """The returned probabilities are ≥ 0 and each row sums to 1 after filtering."""
    for trial in trials(TRIALS, seed=1400):
        logits, settings, probs, context = _call_distribution(distribution, trial)
        if torch.isnan(probs).any():
            fail(f"filtered_distribution returns NaN (on {context})",
                 "at least one token survives the filters; NaN comes from a softmax over a row of -inf "
                 "or from dividing by a zero sum.")
        if (probs < 0).any() or torch.isinf(probs).any():
            fail(f"filtered_distribution returns values < 0 or infinite: scores, not probabilities (on {context})",
                 "finish with a softmax over the last axis: removed tokens (-inf) then get probability 0.")
        sums = probs.sum(-1)
        if is_close(sums, torch.ones_like(sums)):
            continue
        reference = reference_distribution(logits, *settings)
        full = (logits / settings[0]).softmax(-1)
        if bool((sums <= 1 + 1e-5).all()) and is_close(probs, full * (reference > 0)):
            fail(f"the probabilities do not sum to 1 (row sums {[round(s, 4) for s in sums.tolist()]}): the kept "
                 f"tokens still have their probabilities before filtering (on {context})",
                 "you forgot to renormalize: after removing tokens the rest must be rescaled to sum to 1. Set the "
                 "removed scores to -inf and take the softmax once, at the end (or divide by the row sums).")
        fail(f"the probabilities do not sum to 1 (row sums {[round(s, 4) for s in sums.tolist()]}) (on {context})",
             "each row is a distribution over the next token: return torch.softmax(filtered_scores, dim=-1).")


def check_distribution_filters(distribution: Callable) -> None:
    """Up to renormalisation, the distribution is the library's: temperature, then top-k, then top-p."""
    for trial in trials(TRIALS, seed=1500):
        logits, settings, probs, context = _call_distribution(distribution, trial)
        if torch.isnan(probs).any() or (probs < 0).any() or not bool((probs.sum(-1) > 0).all()):
            fail(f"filtered_distribution does not return probabilities (on {context})",
                 "return torch.softmax(filtered_scores, dim=-1): non-negative, at least one token per row.")
        shape = probs / probs.sum(-1, keepdim=True)  # what this cell grades: which tokens, in which proportions
        reference = reference_distribution(logits, *settings)
        if is_close(shape, reference):
            continue
        temperature = settings[0]
        diagnoses = [
            (("k", "p", "t"), "the temperature is applied after the filters",
             ("divide the logits by the temperature first: top-p depends on the shape of the distribution, "
              "so the temperature changes which tokens it keeps (HF's order: temperature, top-k, top-p).")),
            (("t", "p", "k"), "top-p is applied before top-k",
             "apply top-k first, then top-p on what top-k left (the library's and HF's order)."),
            (("t", "k"), "top-p is not applied", "apply top_p_filter when top_p is not None."),
            (("t", "p"), "top-k is not applied", "apply top_k_filter when top_k is not None."),
            (("k", "p"), "the temperature is not applied", "divide the logits by the temperature before filtering."),
        ]
        for order, problem, hint in diagnoses:
            if is_close(shape, reference_distribution(logits, *settings, order=order)):
                fail(f"{problem} (on {context})", hint)
        if is_close(shape, reference_distribution(logits * temperature ** 2, *settings)):
            fail(f"the logits are multiplied by the temperature instead of divided (on {context})",
                 "logits / temperature: a temperature below 1 sharpens the distribution.")
        expect_close(shape, reference, name="filtered_distribution(...) / its row sums", context=context,
                     hint="temperature (logits / temperature), then top_k_filter, then top_p_filter, then softmax.")


# --- beam search: one step --------------------------------------------------------------------------

def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def _random_step(trial: Trial, *, equal_beam_scores: bool = False):
    """Inputs of one step: log_probs (B*K, V), beam_scores (B*K,), a cache of L layers, K; whose
    expected rows are not 0, 1, 2, ... (so a cache left as it was is caught). With
    ``equal_beam_scores`` all beams of a prompt score the same, so the choice does not depend on
    adding them (that is :func:`check_beam_scores`' business)."""
    batch = (1, 2, 3, 2)[trial.index % 4]
    beams, vocab, layers = trial.randint(2, 4), trial.randint(6, 15), trial.randint(1, 3)
    for _ in range(100):
        log_probs = torch.log_softmax(trial.randn(batch * beams, vocab) * 2, dim=-1)
        beam_scores = -(trial.randn(batch, beams).abs() * 3).sort(dim=-1).values.flatten()  # best first
        if equal_beam_scores:
            beam_scores = beam_scores.view(batch, beams)[:, :1].repeat_interleave(beams, dim=1).flatten()
        elif trial.index == 0:  # the first step: all beams are the prompt, only beam 0 may propose
            beam_scores = torch.tensor([0.0] + [-1e9] * (beams - 1), device=trial.device).repeat(batch)
        cache = tuple((trial.randn(batch * beams, 2, 3, 4), trial.randn(batch * beams, 2, 3, 4))
                      for _ in range(layers))
        expected = reference_beam_step(log_probs, beam_scores, cache, beams)
        if not torch.equal(expected[2].cpu(), torch.arange(batch * beams)):
            return (log_probs, beam_scores, cache, beams), expected
    raise RuntimeError("could not draw a beam step that reorders the beams")  # unreachable


def _step_context(log_probs, num_beams) -> str:
    return f"log_probs {tuple(log_probs.shape)}, num_beams={num_beams}, so {len(log_probs) // num_beams} prompt(s)"


def _call_step(step: Callable, inputs, context: str):
    log_probs, beam_scores, cache, num_beams = inputs
    result = call_student(step, log_probs, beam_scores, _clone(cache), num_beams, name="beam_search_step")
    if not isinstance(result, (tuple, list)) or len(result) != 4:
        fail(f"beam_search_step should return (scores, tokens, rows, cache), got {type(result).__name__} "
             f"(on {context})", "end the function with `return scores, tokens, rows, cache`.")
    return result


def _as_index(value, name: str, size: int, context: str) -> torch.Tensor:
    expect_tensor(value, name=name, shape=(size,), context=context)
    if value.dtype.is_floating_point or value.dtype == torch.bool:
        fail(f"{name} has dtype {value.dtype}, expected an integer dtype (on {context})",
             "token ids and row numbers are integers: use // and % on the topk indices (torch.long).")
    return value.detach().cpu().long()


def _step_scores(step: Callable, inputs, context: str):
    log_probs = inputs[0]
    scores, tokens = _call_step(step, inputs, context)[:2]
    size = len(log_probs)
    expect_tensor(scores, name="scores", shape=(size,), context=context)
    return scores.detach().to(log_probs.device).float(), _as_index(tokens, "tokens", size, context)


def check_beam_scores(step: Callable) -> None:
    """New beams: the K best continuations of each prompt over all its beams, best first, with their
    total log-probabilities; looped on the Shakespeare GPT they give the library's beams (:func:`run_beam_search`)."""
    for trial in trials(TRIALS, seed=1600):
        inputs, (exp_scores, exp_tokens, _, _) = _random_step(trial)
        log_probs, beam_scores, _, num_beams = inputs
        context = _step_context(log_probs, num_beams)
        scores, tokens = _step_scores(step, inputs, context)
        if is_close(scores, exp_scores) and torch.equal(tokens, exp_tokens.cpu()):
            continue
        batch = len(log_probs) // num_beams
        zero_scores = reference_beam_step(log_probs, torch.zeros_like(beam_scores), (), num_beams)
        if is_close(scores, zero_scores[0]):
            fail(f"the new scores ignore the beams' running scores (on {context})",
                 "a continuation's score is its beam's score plus the token's log-probability: "
                 "log_probs + beam_scores[:, None], before choosing.")
        per_beam = (log_probs + beam_scores[:, None]).max(-1)
        if is_close(scores, per_beam.values):
            fail(f"each beam took its own best token (on {context})",
                 "beams compete: choose the K best of all K × V continuations of a prompt "
                 "(view the totals as (B, K*V), then torch.topk), so a good beam may have several children.")
        totals = log_probs + beam_scores[:, None]
        if batch > 1 and is_close(scores, torch.topk(totals.flatten(), len(log_probs)).values):
            fail(f"the best continuations are chosen over all prompts together (on {context})",
                 "each prompt keeps its own K beams: view the totals as (B, K*V) and take the top K per row.")
        if is_close(scores.view(batch, -1).sort(-1, descending=True).values, exp_scores.view(batch, -1)):
            fail(f"the new beams are not ordered best first (on {context})",
                 "return each prompt's beams from best to worst (torch.topk sorts them for you).")
        if is_close(scores, exp_scores):
            fail(f"the scores are right but the tokens are not: got {tokens.tolist()}, expected "
                 f"{exp_tokens.tolist()} (on {context})",
                 "in the flattened (K*V) totals, index i is token i % V of beam i // V.")
        expect_close(scores, exp_scores, name="scores", context=context,
                     hint="score every continuation (beam score + log-probability) and keep the K best per prompt.")
    _check_against_beam_search(step)


@functools.lru_cache(maxsize=1)
def _shakespeare_model():
    return load_shakespeare_gpt()[0]


def run_beam_search(step: Callable, model, prompt: torch.Tensor, num_beams: int, max_new_tokens: int,
                    context: str = "") -> torch.Tensor:
    """Beam search without an end token around ``step`` (a student's or :func:`reference_beam_step`):
    ``(K, T + max_new_tokens)`` ids of the final beams, best first, for one prompt ``(1, T)``.

    Only the step's scores and tokens are used; each new beam's parent is the old beam whose score plus
    the token's log-probability gives the new score, and the cache is reordered here, so rows and
    cache mistakes (other cells) cannot change the result. With :func:`reference_beam_step` this gives
    ``generate(model, prompt, num_beams=K, num_return_sequences=K)``'s ids (``tests/test_lab_decoding.py``).
    """
    device = prompt.device
    sequences = prompt.repeat(num_beams, 1)  # (K, T)
    beam_scores = torch.tensor([0.0] + [-1e9] * (num_beams - 1), device=device)  # K copies of one prompt
    with torch.no_grad():
        logits, cache = model(prompt, use_cache=True)
        cache = reorder_cache(cache, torch.zeros(num_beams, dtype=torch.long, device=device))
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1).repeat(num_beams, 1)  # (K, V)
        for index in range(max_new_tokens):
            scores, tokens = _step_scores(step, (log_probs, beam_scores, tuple(map(tuple, cache)), num_beams), context)
            tokens = tokens.to(device)
            candidates = beam_scores[:, None] + log_probs[:, tokens]  # (K old, K new)
            parents = (candidates - scores[None, :]).abs().argmin(0)
            sequences = torch.cat([sequences[parents], tokens[:, None]], dim=1)
            beam_scores = scores
            if index + 1 < max_new_tokens:
                logits, cache = model(sequences[:, -1:], attention_mask=torch.ones_like(sequences),
                                      past_key_values=reorder_cache(cache, parents), use_cache=True)
                log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
    return sequences


def _check_against_beam_search(step: Callable) -> None:
    """The student's step, looped on the course's GPT, gives the reference step's (= generate's) beams."""
    for trial in trials(2, seed=1750):
        model = _shakespeare_model().to(trial.device)
        num_beams, new_tokens = (3, 4)[trial.index], (6, 5)[trial.index]
        prompt = torch.randint(1, model.config.vocab_size, (1, trial.randint(2, 5)), generator=trial.generator)
        prompt = prompt.to(trial.device)
        context = f"the Shakespeare GPT, prompt {prompt.cpu().tolist()}, num_beams={num_beams}"
        expected = run_beam_search(reference_beam_step, model, prompt, num_beams, new_tokens)
        got = run_beam_search(step, model, prompt, num_beams, new_tokens, context)
        if not torch.equal(got.cpu(), expected.cpu()):
            fail(f"looped on {context}, your beams are {got[:, prompt.shape[1]:].cpu().tolist()}, "
                 f"course_lib's beam search gives {expected[:, prompt.shape[1]:].cpu().tolist()}",
                 "choose the K best continuations over all beams at every step, each scored by its beam's score "
                 "plus the token's log-probability.")


def check_beam_rows(step: Callable) -> None:
    """``rows[i]`` is the index, in the input's B*K rows, of the beam that new beam i continues
    (on steps where all beams of a prompt have the same score)."""
    for trial in trials(TRIALS, seed=1650):
        inputs, (_, _, exp_rows, _) = _random_step(trial, equal_beam_scores=True)
        log_probs, _, _, num_beams = inputs
        context = _step_context(log_probs, num_beams)
        rows = _as_index(_call_step(step, inputs, context)[2], "rows", len(log_probs), context)
        exp_rows = exp_rows.cpu()
        if torch.equal(rows, exp_rows):
            continue
        if torch.equal(rows, exp_rows % num_beams):
            fail(f"rows {rows.tolist()} count the beams within each prompt, expected rows of the whole batch "
                 f"{exp_rows.tolist()} (on {context})",
                 "prompt b's beams are rows b*K ... b*K + K-1 of log_probs and of the cache: add b * num_beams "
                 "to the beam index (torch.arange(B)[:, None] * num_beams).")
        if torch.equal(rows, torch.arange(len(rows))):
            fail(f"rows is 0, 1, 2, ... but the new beams continue beams {exp_rows.tolist()} (on {context})",
                 "rows says which old beam each new beam extends: the topk index over the (K*V) totals "
                 "divided by V (integer division).")
        fail(f"rows is {rows.tolist()}, expected {exp_rows.tolist()} (on {context})",
             "new beam i extends old beam (index // V) of its prompt; in the batch that is row b*K + index // V.")


def check_beam_cache(step: Callable) -> None:
    """The returned cache holds, for each new beam, the keys and values of the old beam it continues
    (judged against the student's own ``rows`` when they are valid row numbers)."""
    for trial in trials(TRIALS, seed=1700):
        inputs, (_, _, exp_rows, _) = _random_step(trial)
        log_probs, _, cache, num_beams = inputs
        context = f"{_step_context(log_probs, num_beams)}, a cache of {len(cache)} layer(s)"
        result = _call_step(step, inputs, context)
        rows, new_cache = result[2], result[3]
        if isinstance(rows, torch.Tensor) and rows.shape == exp_rows.shape and not rows.dtype.is_floating_point \
                and bool(((rows >= 0) & (rows < len(log_probs))).all()):
            exp_rows = rows.to(log_probs.device).long()  # your rows: a wrong choice is another cell's business
        expected = reorder_cache(cache, exp_rows)
        if not isinstance(new_cache, (tuple, list)) or len(new_cache) != len(cache) or \
                not all(isinstance(layer, (tuple, list)) and len(layer) == 2 for layer in new_cache):
            fail(f"the returned cache should be a tuple of {len(cache)} (k, v) pairs like the input (on {context})",
                 "return the cache in the same layout: tuple((k[rows], v[rows]) for k, v in cache).")
        for layer, ((k, v), (exp_k, exp_v), (old_k, old_v)) in enumerate(zip(new_cache, expected, cache)):
            for name, got, want, old in (("k", k, exp_k, old_k), ("v", v, exp_v, old_v)):
                label = f"cache[{layer}] {name}"
                expect_tensor(got, name=label, shape=tuple(want.shape), context=context)
                if is_close(got, want):
                    continue
                if is_close(got, old):
                    fail(f"{label} was not reordered: it is the input cache, but the new beams continue rows "
                         f"{exp_rows.tolist()} (on {context})",
                         "beams are not reordered with their cache: each new beam must carry the keys and values "
                         "of the beam it extends, or its next token is computed from another beam's history: "
                         "tuple((k[rows], v[rows]) for k, v in cache).")
                fail(f"{label} does not hold rows {exp_rows.tolist()} of the input cache (on {context})",
                     "select along the first (batch) axis with the same rows you return: k.index_select(0, rows); "
                     "reorder both k and v of every layer.")


# --- finished hypotheses ----------------------------------------------------------------------------

def check_finished_score(finished_score: Callable) -> None:
    """``finished_score(sum_log_probs, sequence_length, prompt_length, length_penalty)`` =
    sum_log_probs / (sequence_length - prompt_length) ** length_penalty."""
    for trial, penalty in zip(trials(6, seed=1800), (1.0, 2.0, 0.5, 1.5, -0.5, 1.0)):
        count, prompt_length = trial.randint(2, 5), trial.randint(2, 6)
        generated = torch.randint(2, 12, (count,), generator=trial.generator).to(trial.device)
        sequence_length = prompt_length + generated
        sums = -(trial.randn(count).abs() * 4 + 0.5)
        context = (f"sum_log_probs {[round(s, 3) for s in sums.tolist()]}, sequence_length "
                   f"{sequence_length.tolist()}, prompt_length={prompt_length}, length_penalty={penalty}")
        got = call_student(finished_score, sums, sequence_length, prompt_length, penalty, name="finished_score")
        expect_tensor(got, name="finished_score(...)", shape=(count,), context=context)
        expected = reference_finished_score(sums, sequence_length, prompt_length, penalty)
        if is_close(got, expected):
            continue
        lengths = generated.float()
        diagnoses = [
            (sums, "the score is not length-normalized",
             ("divide by the generated length raised to length_penalty; without it, beam search prefers "
              "short hypotheses (every token adds a negative log-probability).")),
            (sums / sequence_length.float() ** penalty,
             "the score is divided by the whole sequence length, prompt included",
             ("the length counts generated tokens only (EOS included, the prompt not): "
              "sequence_length - prompt_length, as in HF.")),
            (sums / (lengths - 1) ** penalty, "the score is divided by the generated length without the EOS token",
             "the end token counts: generated length = sequence_length - prompt_length."),
            (sums / lengths, "length_penalty is ignored",
             ("raise the length to the power length_penalty: length ** length_penalty "
              "(1 = average log-probability per token, 0 = no normalization).")),
            (sums * lengths ** penalty, "the score is multiplied by the length instead of divided",
             "divide: sum_log_probs / length ** length_penalty."),
        ]
        for value, problem, hint in diagnoses:
            if is_close(got, value):
                fail(f"{problem} (on {context})", hint)
        expect_close(got, expected, name="finished_score(...)", context=context,
                     hint="sum_log_probs / (sequence_length - prompt_length) ** length_penalty.")


# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "top_k_filter": top_k_filter,
    "top_p_filter": top_p_filter,
    "filtered_distribution": reference_distribution,
    "beam_search_step": reference_beam_step,
    "finished_score": reference_finished_score,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_top_k", 2, check_top_k, ("top_k_filter",),
              "top-k: keep the k highest scores of each row, -inf elsewhere"),
    Criterion("test_top_k_ties", 1, check_top_k_ties, ("top_k_filter",),
              "top-k: scores tied with the k-th are kept"),
    Criterion("test_top_p", 3, check_top_p, ("top_p_filter",),
              "top-p: smallest set of most likely tokens reaching p, the crossing token included"),
    Criterion("test_distribution_sums_to_one", 1, check_distribution_sums_to_one, ("filtered_distribution",),
              "sampling distribution: renormalized, each row sums to 1"),
    Criterion("test_distribution_filters", 2, check_distribution_filters, ("filtered_distribution",),
              "sampling distribution: temperature, then top-k, then top-p"),
    Criterion("test_beam_scores", 3, check_beam_scores, ("beam_search_step",),
              "beam step: K best continuations per prompt over all beams, with their scores"),
    Criterion("test_beam_rows", 1, check_beam_rows, ("beam_search_step",),
              "beam step: source rows of the new beams in the whole batch"),
    Criterion("test_beam_cache", 2, check_beam_cache, ("beam_search_step",),
              "beam step: the cache reordered with the beams"),
    Criterion("test_finished_score", 2, check_finished_score, ("finished_score",),
              "finished hypotheses: sum log p / generated_length ** length_penalty"),
))
