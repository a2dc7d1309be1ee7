"""Lab 07 (pretraining): what only its checks need; what every lab shares is in ``test_structure.py``.

The lab's references are ``course_lib.pretraining.masking`` (pinned to HF in tests/pretraining) in the
lab's signatures; the set-up's special ids are the checks'; the checks' inputs reach the edge cases
(special tokens and padding in every batch, probability 0 and 1, nothing and everything chosen, rows with
nothing chosen beside an all-chosen row, one-token rows); the statistical checks pass correct solutions
over many seeds (no false alarm from the draw order) and their tolerance is far from the rate mistakes;
each cell is fast (CI time); mistakes no fixture holds (a float result, a per-row mean, a shift the wrong
way or by two, an off-by-one random id range) get their own message. The known mistakes
(``tests/fixtures/labs/pretraining/``), the reference solution and the notebooks: ``test_structure.py``;
nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import re
import time

import pytest
import torch
import torch.nn.functional as F

from course_lib.lab_checks import pretraining as pretraining_checks
from course_lib.lab_checks.pretraining import losses, masking
from course_lib.lab_checks.toolkit import CheckFailed
from course_lib.pretraining import masking as library
from tests.labs.support import kernel as lab_kernel
from tests.labtools import lab_files


@pytest.fixture(scope="module")
def kernel() -> dict:
    """The set-up cell and the solution cells run in one namespace, as in a kernel."""
    return lab_kernel(lab_files("pretraining"))


def failure(grade_id: str, *functions) -> str:
    with pytest.raises(CheckFailed) as caught:
        pretraining_checks.RUBRIC.run(grade_id, *functions)
    return str(caught.value)


# --- the references and the inputs -----------------------------------------------------------------

def test_setup_cell_special_ids_are_the_checks(kernel):
    assert (kernel["N_SPECIAL"], kernel["MASK_ID"], kernel["PAD_ID"], kernel["IGNORE_INDEX"]) == (
        masking.N_SPECIAL, masking.MASK_ID, masking.PAD_ID, library.IGNORE_INDEX)


def test_references_are_the_library_in_the_labs_signatures():
    ids = torch.randint(0, 40, (16, 30), generator=torch.Generator().manual_seed(0))
    corrupted, labels = library.mask_tokens(ids, mask_id=4, vocab_size=40, special_ids=range(5),
                                            generator=torch.Generator().manual_seed(3))
    chosen = masking.reference_choose(ids, 5, 0.15, seed=3)
    assert torch.equal(labels != -100, chosen)  # mask_tokens = choose (one draw) then corrupt (same generator)
    logits = torch.randn(16, 30, 40)
    torch.testing.assert_close(losses.reference_mlm_loss(logits, ids, chosen), library.mlm_loss(logits, labels))
    attention = torch.ones_like(ids)
    torch.testing.assert_close(losses.reference_causal_lm_loss(logits, ids, attention),
                               F.cross_entropy(logits[:, :-1].reshape(-1, 40), ids[:, 1:].reshape(-1)))


def test_checks_inputs_hold_special_tokens_padding_and_the_edge_cases():
    cases = list(masking._choose_cases())
    assert [probability for _, probability, _, _ in cases] == [0.15, 0.3, 1.0, 0.0]
    for ids, *_ in cases:
        assert {0, 1, 2} <= set(ids.unique().tolist())  # <s>, <pad>, </s> in every batch
    corrupt_cases = list(masking._corrupt_cases())
    assert corrupt_cases[1][1].sum() == (corrupt_cases[1][0] >= masking.N_SPECIAL).sum()  # every ordinary chosen
    assert not corrupt_cases[-1][1].any()  # nothing chosen
    mlm = list(losses._mlm_cases())
    rows_chosen = mlm[-2][2].sum(dim=1).tolist()
    assert 0 in rows_chosen and mlm[-2][2].shape[1] in rows_chosen and not mlm[-1][2].any()
    shift = list(losses._shift_cases())
    assert shift[-1][0].shape[1] == 1 and any((attention == 0).any() for _, attention, _ in shift)


# --- statistics: no false alarm, and far from the mistakes -------------------------------------------

def test_correct_solutions_pass_the_statistical_checks_for_many_seeds(kernel, monkeypatch):
    """The checks' seeds are fixed; a student's draw is not. A correct solution must pass whatever it draws:
    shift its seed eight times and it still passes (the tolerance is 5 standard deviations)."""
    for offset in range(1, 9):
        def choose(ids, n_special, probability, seed, offset=offset):
            return kernel["choose_positions"](ids, n_special, probability, seed + 1000 * offset)

        def corrupt(ids, chosen, n_special, mask_id, vocab_size, seed, offset=offset):
            return kernel["corrupt"](ids, chosen, n_special, mask_id, vocab_size, seed + 1000 * offset)

        pretraining_checks.RUBRIC.run("test_choose", choose)
        pretraining_checks.RUBRIC.run("test_corrupt", corrupt)
        pretraining_checks.RUBRIC.run("test_corrupt_rates", corrupt)


def test_hf_style_corruption_passes_the_rates_and_fails_only_the_rule():
    """HF's collator draws random ids from the whole vocabulary: the rates hold, the rule (ordinary ids) does not."""
    def corrupt_like_hf(ids, chosen, n_special, mask_id, vocab_size, seed):
        return library.corrupt(ids, chosen, mask_id=mask_id, vocab_size=vocab_size, special_ids=range(n_special),
                               random_ids="vocabulary", generator=torch.Generator().manual_seed(seed))

    pretraining_checks.RUBRIC.run("test_corrupt_rates", corrupt_like_hf)
    assert "include special ids" in failure("test_corrupt", corrupt_like_hf)


def test_a_90_10_split_fails_the_rates():
    def corrupt_90_10(ids, chosen, n_special, mask_id, vocab_size, seed):
        return library.corrupt(ids, chosen, mask_id=mask_id, vocab_size=vocab_size, special_ids=range(n_special),
                               mask_fraction=0.9, random_fraction=0.1, generator=torch.Generator().manual_seed(seed))

    message = failure("test_corrupt_rates", corrupt_90_10)
    assert re.search(r"<mask> (89|90)\.\d% \(expected 80\.0%\)", message), message


# --- mistakes no fixture holds -------------------------------------------------------------------------

def test_float_chosen_and_float_ids_are_named():
    assert "boolean tensor" in failure("test_choose", lambda ids, n, p, seed: torch.full(ids.shape, 0.5))
    assert "integer tensor" in failure(
        "test_corrupt", lambda ids, chosen, n, mask_id, vocab_size, seed: ids.float())


def test_random_ids_missing_the_last_id_are_named():
    def off_by_one(ids, chosen, n_special, mask_id, vocab_size, seed):
        generator = torch.Generator().manual_seed(seed)
        u = torch.rand(ids.shape, generator=generator)
        random_ids = torch.randint(n_special, vocab_size - 1, ids.shape, generator=generator)
        corrupted = ids.masked_fill(chosen & (u < 0.8), mask_id)
        replace = chosen & (u >= 0.8) & (u < 0.9)
        corrupted[replace] = random_ids[replace]
        return corrupted

    assert "never use ids [11]" in failure("test_corrupt", off_by_one)


def test_per_row_mean_is_named():
    def per_row(logits, ids, chosen):
        losses_ = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
        rows = [losses_[r][chosen[r]].mean() for r in range(len(ids)) if chosen[r].any()]
        return torch.stack(rows).mean() if rows else logits.sum() * 0

    assert "each row's chosen positions, then the rows" in failure("test_mlm_loss", per_row)


@pytest.mark.parametrize(("shift", "phrase"), [
    (lambda ids, mask: torch.cat([torch.full_like(ids[:, :1], -100), ids.masked_fill(mask == 0, -100)[:, :-1]], 1),
     "the wrong way"),
    (lambda ids, mask: F.pad(ids.masked_fill(mask == 0, -100)[:, 2:], (0, 2), value=-100)[:, :ids.shape[1]],
     "by two positions"),
])
def test_other_shift_mistakes_are_named(shift, phrase):
    assert phrase in failure("test_shift", shift)


def test_causal_loss_ignoring_padding_and_unshifted_are_named():
    def with_padding(logits, ids, mask):
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def unshifted(logits, ids, mask):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.masked_fill(mask == 0, -100).reshape(-1))

    assert "counts padding as a target" in failure("test_causal_loss", with_padding)
    assert "not shifted" in failure("test_causal_loss", unshifted)


# --- CI time -------------------------------------------------------------------------------------------

def test_each_cell_is_fast(kernel):
    """CI time: every cell's hidden checks on the reference solution within 2 s on a shared 2-core machine."""
    for criterion in pretraining_checks.RUBRIC:
        start = time.perf_counter()
        pretraining_checks.RUBRIC.run(criterion.grade_id, *(kernel[name] for name in criterion.functions))
        assert time.perf_counter() - start < 2.0, criterion.grade_id
