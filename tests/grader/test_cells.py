"""Notebook cells as the grader reads them (:mod:`course_grader.cells`).

The predicates agree with nbgrader's own (``nbgrader.utils``) on every cell of every lab, source and
release; on a submission's malformed cells they answer "no" instead of raising; unreadable
notebooks raise one clear error; and a cell's functions are found by parsing, with a broken cell
still counted when it looks like it defines the name (so the sandbox reports its error).
"""
from __future__ import annotations

import nbformat
import pytest
from nbgrader import utils as nbgrader_utils

from course_grader import cells
from course_grader.registry import LABS
from tests.labtools import lab_files


@pytest.mark.parametrize("lab", [lab.topic for lab in LABS])
def test_the_predicates_agree_with_nbgrader_on_every_cell_of_every_lab(lab):
    files = lab_files(lab)
    for path in (files.source, files.release):
        notebook = cells.load_notebook(path)
        node = nbformat.read(path, as_version=4)  # nbgrader's own reading: sources joined into one str
        for plain, cell in zip(notebook["cells"], node.cells):
            assert cells.is_solution(plain) == bool(nbgrader_utils.is_solution(cell)), cell.get("id")
            assert cells.is_grade(plain) == bool(nbgrader_utils.is_grade(cell)), cell.get("id")
            assert cells.is_locked(plain) == bool(nbgrader_utils.is_locked(cell)), cell.get("id")
            assert cells.source(plain) == cell.source
        assert set(cells.solution_cells(notebook)) == {cells.grade_id(c) for c in notebook["cells"]
                                                       if cells.is_solution(c)}


def test_locked_follows_nbgrader_solution_cells_are_never_locked_grade_cells_always_are():
    def cell(**nbgrader):
        return {"cell_type": "code", "metadata": {"nbgrader": nbgrader}, "source": ""}

    assert cells.is_locked(cell(grade=True)) and cells.is_locked(cell(locked=True))
    assert not cells.is_locked(cell(grade=True, solution=True, locked=True))
    assert not cells.is_locked(cell()) and not cells.is_locked({"cell_type": "code", "metadata": {}})


@pytest.mark.parametrize("cell", [None, "a string", 3, [], {}, {"metadata": None}, {"metadata": {"nbgrader": []}},
                                  {"metadata": {"nbgrader": {"grade_id": 7, "solution": 0}}, "source": 5},
                                  {"cell_type": "code", "source": ["a", 1]}])
def test_a_malformed_cell_is_nothing_never_an_error(cell):
    assert cells.source(cell) == "" and cells.nbgrader_metadata(cell) in ({}, {"grade_id": 7, "solution": 0})
    assert cells.grade_id(cell) is None
    assert not (cells.is_solution(cell) or cells.is_grade(cell) or cells.is_locked(cell))


def test_text_joins_nbformats_multiline_strings_only():
    assert cells.multiline_text(["def f():\n", "    return 1\n"]) == "def f():\n    return 1\n"
    assert cells.multiline_text("x") == "x"
    assert cells.multiline_text(None) == "" and cells.multiline_text({"text": "x"}) == ""
    assert cells.source({"source": ["a\n", "b"]}) == "a\nb"
    assert cells.is_code({"cell_type": "code"}) and not cells.is_code({"cell_type": "markdown"})


def test_functions_are_found_at_the_top_level_with_their_source():
    code = ("import torch\n\n@staticmethod\ndef first(x):\n    def inner():\n        pass\n    return x\n\n"
            "async def second():\n    pass\n\nclass Model:\n    def method(self):\n        pass\n")
    found = cells.functions_defined(code)
    assert list(found) == ["first", "second"]
    assert found["first"] == "def first(x):\n    def inner():\n        pass\n    return x"
    with pytest.raises(SyntaxError):
        cells.functions_defined("def broken(:\n")


def test_a_cell_that_does_not_parse_still_counts_when_it_looks_like_it_defines_the_name():
    assert cells.defines_any("def f(x):\n    return x\n", ["g", "f"])
    assert not cells.defines_any("def f(x):\n    return x\n", ["g"])
    assert not cells.defines_any("x = 1  # def f(x) in a comment is no definition\n", ["f"])
    assert cells.defines_any("def f(x:\n    pass\n", ["f"])
    assert not cells.defines_any("def f(x:\n    pass\n", ["g"])


@pytest.mark.parametrize("text, phrase", [('{"cells": [', "corrupt JSON"), ("[1, 2]", "no list of cells"),
                                          ('{"cells": {}}', "no list of cells"), (None, "no notebook at"),
                                          (b"\xff\xfe", "corrupt JSON")])
def test_unreadable_notebooks_raise_a_clear_error(tmp_path, text, phrase):
    path = tmp_path / "nb.ipynb"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(cells.NotebookError, match=phrase):
        cells.load_notebook(path)
