"""Tests of the instructor's grader, one file per module of ``course_grader``.

``CHECKOUT`` is this repository as the command lines see it: the labs folder and the private
folders that the tests hand to the grader's functions, which never guess them.
"""
from course_grader.cli import Checkout
from tests.paths import REPO

CHECKOUT = Checkout(REPO)
