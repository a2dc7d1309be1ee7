"""Grade lab submissions with the sandbox: one fresh sandboxed process per graded part, scores to the gradebook.

For each criterion of a lab's ``RUBRIC`` (:mod:`course_lib.lab_checks.rubric`) the grader sends a
:class:`~course_grader.sandbox.Sandbox` only the trusted set-up cell of the lab's *source*
notebook and the student's solution cells that define the criterion's functions (see
:func:`criterion_cells`); the sandbox defines the lab's references of the *other* functions
around them (helpers a student's function may call, so a mistake costs only its own cell). The
criterion then runs here, in the trusted process, through ``RUBRIC.run`` on stand-ins for those
functions, exactly as nbgrader runs it in the student's kernel. The
student's test cells are never used, so edited, deleted, duplicated or retyped test cells change
nothing, and no student code runs in this process. A part whose code uses course_lib's
implementation or the grading code scores 0 (:mod:`~course_grader.reference_policy`); a cell that
hangs or crashes while it loads is run once, and every part that needs it fails with its message.

:func:`grade_batch` grades a folder of submissions with ``workers`` processes (each with its own
sandbox zygote) and writes each student's scores to the nbgrader gradebook in one transaction. A
student whose scores are all recorded is skipped, so a batch killed midway can simply be rerun.

Not covered: the feedback notebooks (nbgrader's execution, sandboxed: :mod:`~course_grader.feedback`).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from . import cells
from .registry import lab as find_lab
from .sandbox import Limits, Sandbox, SandboxError

__all__ = [
    "NotebookResult", "criterion_cells", "grade_batch", "grade_notebook", "graded_students", "grading_device",
    "part_cells", "part_source", "paths_hidden_from_students", "record", "setup_source",
]


@dataclass
class NotebookResult:
    scores: dict[str, tuple[float, float]]  # grade_id -> (score, max score)
    messages: dict[str, str] = field(default_factory=dict)  # grade_id -> why it failed
    error: str | None = None  # the whole notebook could not be graded
    stopped: str | None = None  # a cell hung or crashed while it loaded: why (its parts failed without rerunning it)
    hung: str | None = None  # a graded call ran past its time limit: why (feedback does not run the notebook again)

    @property
    def total(self) -> float:
        return sum(score for score, _ in self.scores.values())


def setup_source(source_notebook: dict) -> str:
    """The locked code cells of the instructor's notebook that are not test cells (the imports)."""
    return "\n\n".join(cells.source(cell) for cell in source_notebook["cells"]
                       if cells.is_code(cell) and cells.is_locked(cell) and not cells.is_grade(cell))


def part_cells(notebook: dict, names: Iterable[str]) -> list[str]:
    """The student's solution cells that define any of ``names``, in notebook order."""
    names = list(names)
    return [cells.source(cell) for cell in notebook["cells"] if cells.is_code(cell)
            and cells.is_solution(cell) and cells.defines_any(cells.source(cell), names)]


def part_source(notebook: dict, names: Iterable[str]) -> str:
    """:func:`part_cells` as one source."""
    return "\n\n".join(part_cells(notebook, names))


def criterion_cells(source_notebook: dict, notebook: dict, functions: Iterable[str]) -> tuple[str, list[str]]:
    """What one graded part runs: the set-up (trusted: the reference policy allows what it uses) and the
    student's cells for ``functions`` (the sandbox defines the lab's references of the other functions
    around them: ``RUBRIC.helpers``)."""
    return setup_source(source_notebook), part_cells(notebook, functions)


def grade_notebook(sandbox: Sandbox, module, notebook_path: Path, source_notebook: dict,
                   device: str = "cpu") -> NotebookResult:
    """Score one submitted notebook against ``module.RUBRIC``, each criterion in its own sandboxed process.

    ``device``: where the student's functions compute (the checks' own inputs and reference run on
    :func:`course_lib.get_device`, in this process). A cell that hangs or crashes while it loads fails
    every part that needs it, but runs (and costs its time limit) once. A part whose code breaks the
    reference policy (:mod:`~course_grader.reference_policy`) scores 0 with the policy's message.
    """
    scores = {c.grade_id: (0.0, float(c.points)) for c in module.RUBRIC}
    try:
        notebook = cells.load_notebook(notebook_path)
    except cells.NotebookError as error:  # that student scores 0, the others are graded
        return NotebookResult(scores, error=str(error))
    messages: dict[str, str] = {}
    stopped: dict[str, str] = {}  # cell source -> why it stopped loading
    hung = None
    for criterion in module.RUBRIC:
        setup, student_cells = criterion_cells(source_notebook, notebook, criterion.functions)
        known = next((stopped[cell] for cell in student_cells if cell in stopped), None)
        if known is not None:
            messages[criterion.grade_id] = known
            continue
        helpers = module.RUBRIC.helpers(criterion.grade_id)
        passed = False
        with sandbox.run(student_cells, criterion.functions, device=device, helpers=helpers, setup=setup) as part:
            if part.stuck_cell is not None:
                stopped[student_cells[part.stuck_cell]] = str(part.load_error)
            try:
                if isinstance(part.load_error, SandboxError):  # a hang, a crash, sys.exit(): said as it is
                    raise part.load_error
                module.RUBRIC.run(criterion.grade_id, *(part.function(name) for name in criterion.functions))
                passed = True
            except (AssertionError, SandboxError) as failure:
                messages[criterion.grade_id] = str(failure)
            except Exception as failure:  # a check tripped on an odd but legal result: still that part only
                messages[criterion.grade_id] = f"{type(failure).__name__}: {failure}"
            violation = part.policy_violation()
            if part.timed_out and part.load_error is None and criterion.grade_id in messages:
                hung = hung or messages[criterion.grade_id]  # a graded call ran out of time
        if violation is not None:
            messages[criterion.grade_id] = violation
        elif passed:
            scores[criterion.grade_id] = (float(criterion.points), float(criterion.points))
    return NotebookResult(scores, messages, stopped=next(iter(stopped.values()), None), hung=hung)


# --- the gradebook ----------------------------------------------------------------------------

def graded_students(gradebook, lab: str, notebook: str, grade_ids: Iterable[str]) -> set[str]:
    """Students of ``lab`` whose every grade cell already has an automatic score."""
    grade_ids, done = set(grade_ids), set()
    for submission in gradebook.assignment_submissions(lab):
        for nb in submission.notebooks:
            if nb.name == notebook:
                scored = {g.cell.name for g in nb.grades if g.auto_score is not None}
                if grade_ids <= scored:
                    done.add(submission.student.id)
    return done


def record(gradebook, lab: str, notebook: str, student: str, result: NotebookResult) -> None:
    """Write one student's scores in one transaction (a crash before the commit records nothing)."""
    from nbgrader.api import MissingEntry

    gradebook.update_or_create_student(student)
    try:
        gradebook.find_submission(lab, student)
    except MissingEntry:
        gradebook.add_submission(lab, student)  # commits empty grades: not yet "graded", see graded_students
    try:
        for grade_id, (score, _) in result.scores.items():
            gradebook.find_grade(grade_id, notebook, lab, student).auto_score = score
        gradebook.db.commit()
    except BaseException:
        gradebook.db.rollback()
        raise


# --- batches ----------------------------------------------------------------------------------

def paths_hidden_from_students(*extra: Path, submissions: Iterable[Path] = ()) -> list[Path]:
    """What a sandboxed part must not see: this package and the hidden checks (both found by import),
    the caller's private folders ``extra`` (the checkout's lab sources and tests, the course, the
    outputs) and the folder of every submission, ``FOLDER/<student>/<lab>/<notebook>.ipynb``
    (everyone's work)."""
    import course_lib.lab_checks

    checks = Path(course_lib.lab_checks.__file__).resolve().parent
    folders = {Path(path).resolve().parents[2] for path in submissions}
    return [Path(__file__).resolve().parent, checks, *(Path(p).resolve() for p in extra), *sorted(folders)]


_worker: dict = {}


def _start_worker(limits: Limits, hidden: list[Path], lab: str, source: dict, device: str, gpu_lock: Path) -> None:
    module = find_lab(lab).checks
    _worker.update(sandbox=Sandbox(limits, hidden, gpu_lock=gpu_lock, rubric=module.__name__), module=module,
                   source=source, device=device)


def _grade_in_worker(student: str, path: str) -> tuple[str, NotebookResult, list[str]]:
    result = grade_notebook(_worker["sandbox"], _worker["module"], Path(path), _worker["source"], _worker["device"])
    return student, result, sorted(_worker["sandbox"].warnings)


def grading_device() -> str:
    """``"cuda"`` when the course runs on a GPU (:func:`course_lib.get_device`), else ``"cpu"``.

    Only this (trusted) process asks; the sandbox's zygote never touches CUDA, so its forked
    children can each start their own CUDA context.
    """
    from course_lib.runtime import get_device

    return "cuda" if get_device().type == "cuda" else "cpu"


def grade_batch(course_dir: Path, lab: str, submissions: dict[str, Path], *, workers: int = 2,
                limits: Limits | None = None, hidden_paths: Iterable[Path] = (), progress: bool = True,
                source_notebook: Path | None = None, device: str | None = None,
                warnings: set[str] | None = None) -> dict[str, NotebookResult]:
    """Grade ``{student: notebook path}`` into ``course_dir/gradebook.db``; return the results of this run.

    The lab must already be in the gradebook (``nbgrader generate_assignment``). Students already
    fully graded are skipped. ``hidden_paths``: the caller's folders that student code must not see,
    beyond :func:`paths_hidden_from_students`' own (the checkout's ``labs`` and ``tests``).
    ``workers=0`` grades in this process (with one sandbox), for tests.
    ``device`` (default :func:`grading_device`): on ``"cuda"``, student code runs on the GPU, one
    part at a time across all workers (a lock file in ``course_dir``). The sandboxes' warnings
    about weakened isolation are added to ``warnings``.
    """
    from nbgrader.api import Gradebook
    from tqdm import tqdm

    module, notebook = find_lab(lab).checks, find_lab(lab).notebook
    limits, device = limits or Limits(), device or grading_device()
    warnings = warnings if warnings is not None else set()
    course_dir = Path(course_dir).resolve()
    source_notebook = source_notebook or course_dir / "source" / lab / f"{notebook}.ipynb"
    source = cells.load_notebook(source_notebook)
    if os.geteuid() == 0:
        course_dir.chmod(0o700)  # the sandbox's uids must not read the gradebook even without mount namespaces
    hidden = paths_hidden_from_students(course_dir, *hidden_paths, submissions=submissions.values())
    grade_ids = [c.grade_id for c in module.RUBRIC]
    results: dict[str, NotebookResult] = {}
    gpu_lock = course_dir / ".gpu.lock"  # inside the course folder: hidden from every sandboxed part
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        done = graded_students(gradebook, lab, notebook, grade_ids)
        todo = {s: p for s, p in sorted(submissions.items()) if s not in done}
        bar = tqdm(total=len(todo), desc=f"grading {lab}", unit="student", disable=not progress, file=sys.stderr)

        def finish(student: str, result: NotebookResult) -> None:
            record(gradebook, lab, notebook, student, result)
            results[student] = result
            bar.update()

        if workers <= 0:
            with Sandbox(limits, hidden, gpu_lock=gpu_lock, rubric=module.__name__) as sandbox:
                for student, path in todo.items():
                    finish(student, grade_notebook(sandbox, module, path, source, device))
                    warnings.update(sandbox.warnings)
        elif todo:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                                     initargs=(limits, hidden, lab, source, device, gpu_lock)) as pool:
                futures = [pool.submit(_grade_in_worker, student, str(path)) for student, path in todo.items()]
                for future in as_completed(futures):
                    student, result, seen = future.result()
                    finish(student, result)
                    warnings.update(seen)
        bar.close()
    return results
