"""The instructor's side of the course: the nbgrader labs and grading submissions safely.

* :mod:`.registry`: the labs, their assignment folders, notebooks and hidden checks.
* :mod:`.sandbox` (with :mod:`.sandbox_child` and :mod:`.protocol`): run untrusted student code in a
  fresh, isolated, limited process; exchange plain arrays with it, never pickles.
* :mod:`.autograder`: grade a folder of submissions part by part, sandboxed, into nbgrader's gradebook.
* :mod:`.feedback`: nbgrader's feedback notebooks, executed in the sandbox without the hidden tests.

Installed by ``./course setup`` (``pip install -e grader``), not by the students' Colab set-up cell:
students need only ``course_lib``, whose :mod:`course_lib.lab_checks` their kernels import.
Linux only (namespaces, rlimits). This module imports nothing, so the sandbox's zygote stays small.
"""
