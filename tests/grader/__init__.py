"""Tests of the instructor's grader, one file per module of ``course_grader``.

``CHECKOUT`` is this repository as the command lines see it: the labs folder and the private
folders that the tests hand to the grader's functions, which never guess them.
"""
import shutil
from pathlib import Path

from course_grader.cli import Checkout
from tests.paths import REPO

CHECKOUT = Checkout(REPO)


def copy_of_labs(dest: Path) -> Path:
    """A copy of the checkout's labs folder (configuration, sources, releases), without grading outputs,
    for the tests that write into it."""
    return shutil.copytree(CHECKOUT.labs, dest, ignore=shutil.ignore_patterns("gradebook.db", "submitted",
                                                                               "autograded", "feedback"))
