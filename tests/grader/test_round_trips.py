"""Every lab through the real nbgrader command line and gradebook, one batched grading run per lab.

For each lab of ``course_grader.registry.LABS`` (so a new lab is covered as soon as it is registered),
one test class: the solution scores full marks, the untouched student version 0, the correct variants
full marks, and a set of known mistakes from ``tests/fixtures/labs/<topic>/`` that fails every graded cell
at least once (:func:`round_trip_mistakes`) loses exactly the points of the cells their ``FAILS`` name;
grades.csv and the feedback carry them; the committed release equals a fresh generation;
``nbgrader validate`` passes the source and fails every test of the release.

Why a covering set and not every fixture: plain nbgrader runs each student in a fresh kernel (seconds
each), and what this file adds is the notebook's wiring (each test cell runs its check, the gradebook and
the feedback carry the scores), which one failure per cell proves. Every fixture is still graded by the
sandboxed grader, the one real submissions go through (tests/grader/test_autograder.py), and in process
against the checks (``tests/labs/test_<topic>.py``). One class per lab, so the test workers
(``--dist loadscope``) grade two labs at once.
"""
from __future__ import annotations

import csv
import html
import shutil
from pathlib import Path

import pytest

from course_grader import course
from course_grader.registry import LABS, lab as find_lab
from tests.grader import CHECKOUT
from tests.labtools import lab_files, mistake_fails

pytestmark = pytest.mark.slow

# One graded mistake per lab whose feedback must show its check's hint.
FEEDBACK_SAMPLES = {
    "attention": ("no_scaling", "you forgot to divide the scores by √d"),
    "tokenization": ("stale_counts", "recount the pairs of the *merged* ids"),
    "seq2seq": ("no_causal_mask", "position t reads the very token it must predict"),
    "decoding": ("cache_not_reordered", "beams are not reordered with their cache"),
    "reformer": ("stores_activations", "the layer saves no memory"),
    "pretraining": ("shift_applied_twice", "shift_labels does the shift"),
    "transfer": ("kl_wrong_direction", "the teacher's distribution is the target"),
    "long_range": ("two_mistakes", "multiply both by exp(old max − new max)"),  # also covers test_window: one kernel less
    "distributed": ("two_mistakes", "in the all-gather the chunks are already the full sums"),  # and test_average
}


def _points(lab: str) -> dict[str, float]:
    return lab_files(lab).points


def round_trip_mistakes(lab: str) -> list[Path]:
    """The lab's correct variants, its feedback sample, and for each graded cell the first mistake (by name)
    that fails it: every cell is seen failing through nbgrader, every variant passing."""
    files, topic = lab_files(lab), find_lab(lab).topic
    chosen = [m for m in files.mistakes if not mistake_fails(m) or m.stem == FEEDBACK_SAMPLES[topic][0]]
    for grade_id in files.points:
        if not any(grade_id in mistake_fails(m) for m in chosen):
            chosen += [next(m for m in files.mistakes if grade_id in mistake_fails(m))]
    return sorted(chosen)


class RoundTrip:
    """One lab's round trip; a subclass per lab below sets ``lab`` (an assignment name)."""

    lab: str

    @pytest.fixture(scope="class")
    @classmethod
    def graded(cls, tmp_path_factory):
        """One plain nbgrader grading run (`scripts/labs.py grade`: generate, autograde, feedback, export) over
        the solution, the stub and :func:`round_trip_mistakes`."""
        lab = cls.lab
        root = tmp_path_factory.mktemp(f"lab_{lab}")
        mistakes = round_trip_mistakes(lab)
        for mistake in mistakes:
            (root / "mistakes").mkdir(exist_ok=True)
            shutil.copy(mistake, root / "mistakes" / mistake.name)
        students = course.write_submissions(lab, root / "mistakes", root / "submissions", CHECKOUT.labs)
        scores = course.grade(root / "submissions", root / "out", [lab], labs_dir=CHECKOUT.labs)[lab]
        return {"lab": lab, "root": root, "students": students, "scores": scores, "mistakes": mistakes}

    def test_solution_scores_full_marks_and_stub_scores_zero(self, graded):
        points = _points(graded["lab"])
        assert graded["scores"]["solution"] == {grade_id: (p, p) for grade_id, p in points.items()}
        assert graded["scores"]["stub"] == {grade_id: (0.0, p) for grade_id, p in points.items()}

    def test_each_mistake_loses_exactly_the_points_of_its_cells(self, graded):
        points = _points(graded["lab"])
        failing = [m for m in graded["mistakes"] if mistake_fails(m)]
        assert failing, "a lab needs known-mistake fixtures"
        assert {g for m in failing for g in mistake_fails(m)} == set(points), "every cell is seen failing"
        assert len(graded["mistakes"]) - len(failing) >= 3, "the correct variants are graded too"
        for mistake in graded["mistakes"]:
            expected = set(mistake_fails(mistake))
            cells = graded["scores"][mistake.stem]
            failed = {grade_id for grade_id, (score, most) in cells.items() if score < most}
            assert set(cells) == set(points), mistake.stem
            assert failed == expected, mistake.stem
            assert all(cells[g][0] == 0 for g in expected), mistake.stem  # a failed cell scores 0, not partial credit
            assert sum(s for s, _ in cells.values()) == sum(points.values()) - sum(points[g] for g in expected)

    def test_grades_csv_and_feedback_carry_the_scores_and_hints(self, graded):
        lab, out = graded["lab"], graded["root"] / "out"
        with open(out / "grades.csv", newline="") as f:
            rows = {row["student_id"]: row for row in csv.DictReader(f)}
        assert set(rows) == set(graded["students"])
        for student, cells in graded["scores"].items():
            assert float(rows[student]["score"]) == sum(score for score, _ in cells.values())
            assert float(rows[student]["max_score"]) == sum(_points(lab).values())
        student, hint = FEEDBACK_SAMPLES[find_lab(lab).topic]
        page = out / "course" / "feedback" / student / lab / f"{find_lab(lab).notebook}.html"
        assert hint in html.unescape(page.read_text(encoding="utf-8"))

    def test_committed_release_equals_a_fresh_generation(self, graded):
        release = lab_files(graded["lab"]).release
        fresh = graded["root"] / "out" / "course" / "release" / graded["lab"]  # generated by the grading run
        assert course.compare_releases(release.parent, fresh) == []

    def test_nbgrader_validate_passes_the_source_and_fails_every_test_of_the_release(self, tmp_path):
        _, source, release = lab_files(self.lab)[:3]
        course_dir = course.scratch_course(tmp_path / "course", CHECKOUT.labs)
        assert "Success! Your notebook passes all the tests." in course.nbgrader(course_dir, "validate", str(source))
        out = course.nbgrader(course_dir, "validate", "--invert", str(release))
        assert "Success! The notebook does not pass any tests." in out


for _lab in LABS:  # one class per lab: a unit of work for the test workers
    _name = f"TestRoundTrip_{_lab.assignment}"
    globals()[_name] = type(_name, (RoundTrip,), {"lab": _lab.assignment, "__doc__": f"{_lab.assignment} round trip."})


def test_every_lab_has_a_feedback_sample():
    assert set(FEEDBACK_SAMPLES) == {lab.topic for lab in LABS}
