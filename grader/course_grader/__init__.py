"""The instructor's side of the course: the nbgrader labs and grading submissions safely.

* :mod:`.registry`: the labs, their assignment folders, notebooks and hidden checks.
* :mod:`.workspace`: students' own copies of the labs in a checkout's git-ignored ``work/``
  (``./course start-lab NAME``), looked up through the registry.
* :mod:`.cells`: what nbgrader's metadata says of a notebook's cells (solution, test, locked), read once.
* :mod:`.course`: the labs' nbgrader course: scratch copies, releases, test submissions, plain
  (unsandboxed) nbgrader grading of trusted submissions.
* :mod:`.sandbox` (with :mod:`.sandbox_process`, :mod:`.sandbox_child`, :mod:`.sandbox_part`,
  :mod:`.protocol` and :mod:`.locks`): run untrusted student code in a fresh, isolated, limited
  process with uids of its own; exchange plain arrays with it, never pickles.
* :mod:`.reference_policy`: the lab's functions must be the student's own work (no course_lib
  implementation, no grading code), checked inside the sandbox.
* :mod:`.autograder`: grade a folder of submissions part by part, sandboxed, into nbgrader's gradebook.
* :mod:`.feedback` (with :mod:`.feedback_rebuild`): nbgrader's feedback notebooks, executed in the sandbox
  without the hidden tests, warm.
* :mod:`.bench`: the sandboxed grader's throughput.
* :mod:`.cli`: the command lines behind ``scripts/labs.py``, ``scripts/grade.py`` and
  ``scripts/bench_grading.py`` (also ``python -m course_grader labs|grade|bench``).

Nothing here knows where a checkout keeps its labs or tests: the package finds its own folder and
the hidden checks by import, and the front ends pass the checkout's folders.
Installed by ``./course setup`` (``pip install -e grader``), not by the students' Colab set-up cell:
students need only ``course_lib``, whose :mod:`course_lib.lab_checks` their kernels import.
Linux only (namespaces, rlimits). This module imports nothing, so the sandbox's zygote stays small.
"""
