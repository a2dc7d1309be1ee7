"""The labs' registry (:mod:`course_grader.registry`): one entry per lab, and the checkout agrees with it.

The commands default to the registered labs, so every lab folder of the checkout must be registered
and every registered lab must have its source, release and hidden checks.
"""
from __future__ import annotations

import pytest

from course_grader.registry import LABS, lab as find_lab
from course_lib.lab_checks import attention as attention_checks
from tests.grader import CHECKOUT


def test_the_registry_finds_each_lab_by_assignment_or_topic():
    assert find_lab("01_attention").checks is attention_checks and find_lab("attention").assignment == "01_attention"
    with pytest.raises(KeyError, match="no lab '99_nothing'; the labs are 01_attention, "):
        find_lab("99_nothing")


def test_the_checkouts_lab_folders_are_exactly_the_registered_labs():
    registered = [lab.assignment for lab in LABS]
    for folder in ("source", "release"):
        assert sorted(p.name for p in (CHECKOUT.labs / folder).iterdir() if p.is_dir()) == sorted(registered)
    for lab in LABS:
        for folder in ("source", "release"):
            assert (CHECKOUT.labs / folder / lab.assignment / f"{lab.notebook}.ipynb").is_file()
        assert len(lab.checks.RUBRIC) > 0 and CHECKOUT.mistakes(lab).is_dir()
