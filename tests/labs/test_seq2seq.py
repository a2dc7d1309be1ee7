"""Lab 04 (seq2seq): what only its checks need; what every lab shares is in ``test_structure.py``.

The lab's solution equals PyTorch's ``nn.TransformerDecoderLayer`` and ``course_lib``'s modules, its
set-up's attention is course_lib's, the residual rules the checks use to name a wrong order rebuild
the library's layer, code that spends its inputs fails naming them, mistakes no fixture holds get
their own message, the additive context is judged against the reference unless the weights are wrong,
and the checks reach a one-token source and padding in every sentence. The known mistakes (``tests/fixtures/labs/seq2seq/``), the reference
solution and the notebooks: ``test_structure.py``; nbgrader and the sandboxed grader: ``tests/grader/``.
"""
from __future__ import annotations

import re

import pytest
import torch

import course_lib
from course_lib.lab_checks.seq2seq import (
    additive as seq2seq_additive, decoder as seq2seq_decoder, layer as seq2seq_layer, references as seq2seq_references,
)
from course_lib.lab_checks.toolkit import CheckFailed, trials
from tests.labs.support import cell_source, kernel as lab_kernel
from tests.labtools import lab_files, notebook

FILES = lab_files("seq2seq")


@pytest.fixture(scope="module")
def kernel() -> dict:
    """The set-up cell and the solution cells run in one namespace, as in a student's kernel."""
    return lab_kernel(FILES)


# --- the solution is the library's and PyTorch's ------------------------------------------------

def test_setup_attention_is_course_lib_multi_head_attention(kernel):
    torch.manual_seed(0)
    mha = course_lib.MultiHeadAttention(12, 3)
    x, memory = torch.randn(2, 4, 12), torch.randn(2, 6, 12)
    keep = course_lib.padding_mask([6, 3])  # (B, S)
    with torch.no_grad():
        expected, _ = mha(x, memory, memory, key_padding_mask=keep)
    got = kernel["multi_head_attention"](x, memory, seq2seq_references.attention_params(mha), 3, keep[:, None, None, :])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_solution_decoder_layer_equals_torch_decoder_layer_with_padding(kernel, norm_first):
    torch.manual_seed(1)
    reference = torch.nn.TransformerDecoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True,
                                                 norm_first=norm_first).eval()
    with torch.no_grad():  # norms that are not the identity, so their place matters
        for norm in (reference.norm1, reference.norm2, reference.norm3):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.3)
    x, memory = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    tgt_keep, src_keep = course_lib.padding_mask([5, 2, 4]), course_lib.padding_mask([7, 7, 3])
    with torch.no_grad():  # torch's masks are the other way round: True = blocked
        expected = reference(x, memory, tgt_mask=~course_lib.causal_mask(5), tgt_key_padding_mask=~tgt_keep,
                             memory_key_padding_mask=~src_keep)
    params = seq2seq_references.decoder_params(course_lib.TransformerDecoderLayer.from_torch(reference))
    got = kernel["decoder_layer"](x, memory, params, 4, norm_first, tgt_keep, src_keep)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_solution_additive_attention_equals_course_lib(kernel):
    torch.manual_seed(2)
    module = course_lib.AdditiveAttention(query_dim=3, key_dim=5, attention_dim=7)
    query, keys, keep = torch.randn(2, 3), torch.randn(2, 4, 5), course_lib.padding_mask([4, 2])
    with torch.no_grad():
        expected = module(query, keys, keep)
    got = kernel["additive_attention"](query, keys, module.W_q.weight, module.W_k.weight, module.v.weight[0], keep)
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("norm_first, rule", [(False, "post"), (True, "pre")])
def test_the_checks_residual_rules_rebuild_the_library_layer(norm_first, rule):
    """The rules the placement checks use to name a wrong order are right for the right order."""
    trial = next(trials(1, seed=5))
    layer, params, heads, x, memory = seq2seq_references.random_layer(trial, norm_first)
    with torch.no_grad():
        expected = layer(x, memory, tgt_mask=course_lib.causal_mask(x.shape[1], device=x.device))
    torch.testing.assert_close(seq2seq_layer.layer_variant(x, memory, params, heads, (rule,) * 3), expected,
                               atol=1e-5, rtol=1e-4)


# --- mistakes the checks name ---------------------------------------------------------------------

@pytest.mark.parametrize(("spend", "named"), [
    (lambda x, params: x.zero_(), "x (shape"),
    (lambda x, params: params["norm2"]["weight"].mul_(2), "params['norm2']['weight'] (shape"),
])
def test_code_that_edits_its_inputs_in_place_fails_naming_the_input(kernel, spend, named):
    solution = kernel["decoder_layer"]

    def spends_its_inputs(x, memory, params, num_heads, norm_first=False, tgt_key_padding_mask=None,
                          memory_key_padding_mask=None):
        out = solution(x, memory, params, num_heads, norm_first, tgt_key_padding_mask, memory_key_padding_mask)
        spend(x, params)
        return out

    for check in (seq2seq_layer.check_post_norm, seq2seq_layer.check_decoder_padding):
        with pytest.raises(CheckFailed, match=f"decoder_layer modified its input {re.escape(named)}"):
            check(spends_its_inputs)


@pytest.mark.parametrize("attention", ["setup", "course_lib"])
def test_a_causal_mask_without_its_diagonal_is_named(kernel, attention):
    """torch's fused kernel gives NaN for a query that may attend to nothing, course_lib's gives 0: both are named."""
    attend = kernel["multi_head_attention"] if attention == "setup" else seq2seq_references.reference_attention

    def no_diagonal(x, p, num_heads, key_padding_mask=None):
        size = x.shape[1]
        return attend(x, x, p, num_heads, torch.ones(size, size, dtype=torch.bool, device=x.device).tril(-1))

    with pytest.raises(CheckFailed) as failure:
        seq2seq_decoder.check_causal_self_attention(no_diagonal)
    assert ".tril()" in failure.value.hint and "diagonal" in failure.value.hint


def test_swapped_padding_masks_are_reported_with_a_hint(kernel):
    solution = kernel["decoder_layer"]

    def swapped(x, memory, params, num_heads, norm_first=False, tgt_key_padding_mask=None,
                memory_key_padding_mask=None):
        return solution(x, memory, params, num_heads, norm_first, memory_key_padding_mask, tgt_key_padding_mask)

    with pytest.raises(CheckFailed) as failure:
        seq2seq_layer.check_decoder_padding(swapped)
    assert failure.value.hint


def _additive(weights_of, context_of=lambda weights, keys: (weights[:, :, None] * keys).sum(dim=1)):
    """A student's additive attention: the right scores, then weights_of(scores, mask), context_of(weights, keys)."""
    def additive_attention(query, keys, W_q, W_k, v, key_padding_mask=None):
        scores = torch.tanh(torch.nn.functional.linear(query, W_q)[:, None, :] +
                            torch.nn.functional.linear(keys, W_k)) @ v
        weights = weights_of(scores, key_padding_mask)
        return context_of(weights, keys), weights
    return additive_attention


def _masked_softmax(scores, mask, dim=-1):
    return torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), dim=dim)


def test_the_additive_context_is_judged_against_the_reference_unless_the_weights_are_wrong():
    seq2seq_additive.check_additive_context(_additive(lambda scores, mask: scores))  # weights cell's mistake only
    with pytest.raises(CheckFailed, match="the weights of some sentence are all 0"):
        seq2seq_additive.check_additive_context(_additive(lambda scores, mask: torch.zeros_like(scores)))
    with pytest.raises(CheckFailed, match=r"context has shape \(\d, \d\) = \(B, S\): the sum runs over the features"):
        seq2seq_additive.check_additive_context(_additive(_masked_softmax, lambda w, keys: (w[:, :, None] * keys).sum(-1)))


def test_padding_in_every_sentence_leaves_the_softmax_axis_to_the_weights_cell():
    """Over the batch axis a column of padding is NaN: the padding cell still accepts it."""
    seq2seq_additive.check_additive_padding(_additive(lambda scores, mask: _masked_softmax(scores, mask, dim=0)))


def test_the_checks_reach_a_one_token_source_and_padding_in_every_sentence():
    seen = []

    def spy(query, keys, W_q, W_k, v, key_padding_mask=None):
        seen.append((keys.shape[1], None if key_padding_mask is None else bool((~key_padding_mask).any(1).all())))
        return seq2seq_references.reference_additive_attention(query, keys, W_q, W_k, v, key_padding_mask)

    for check in (seq2seq_additive.check_additive_weights, seq2seq_additive.check_additive_context):
        seen.clear()
        check(spy)
        assert any(length == 1 for length, _ in seen), check.__name__
    seen.clear()
    seq2seq_additive.check_additive_padding(spy)
    assert any(every for _, every in seen)
    sources = []

    def cross(x, memory, p, num_heads, memory_key_padding_mask=None):
        sources.append(memory.shape[1])
        return seq2seq_references.reference_cross_attention(x, memory, p, num_heads, memory_key_padding_mask)

    seq2seq_decoder.check_cross_attention(cross)
    assert 1 in sources


# --- the notebooks ----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_students_layers_translate_like_the_shipped_model(kernel):
    """The notebook's last cell: the solution's decoder_layer inside the Multi30k Transformer changes nothing."""
    namespace = dict(kernel)
    code = next(cell_source(c) for c in notebook(FILES.source)["cells"] if c.get("id") == "try-it")
    code = code.replace("print(", "outputs.append((")  # collect both translations instead of printing
    code = code.replace("translate(model, sentences))", "translate(model, sentences)))")
    namespace["outputs"] = []
    exec(compile(code, f"{FILES.source}:try-it", "exec"), namespace)  # noqa: S102
    (_, library), (_, yours) = namespace["outputs"]
    assert yours == library and all(library)
