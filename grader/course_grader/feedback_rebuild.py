"""The trusted rebuild of a feedback notebook: the student's cells and outputs, the release's tests, the verdicts.

:func:`feedback_notebook` takes nbgrader's executed notebook from the sandbox (untrusted JSON, or
``None`` when it was not run) and keeps the student's cells and outputs, puts back the release's
source of every test and locked cell, drops rich outputs (HTML, JavaScript) and caps each cell's
outputs at a number of bytes with a visible "[output truncated: N bytes not shown]" note
(:func:`cap_outputs`), then appends to each graded cell the grader's verdict: its points and, for a
failed check, the check's message and hint (never its source). Nothing here runs student code.

Not covered: running the notebook and rendering HTML (:mod:`~course_grader.feedback`).
"""
from __future__ import annotations

import json

from . import cells
from .cells import multiline_text
from .protocol import safe_text

__all__ = ["DEFAULT_OUTPUT_BYTES", "cap_outputs", "feedback_notebook"]

DEFAULT_OUTPUT_BYTES = 64 << 10  # per cell, outputs only
MAX_CELLS, MAX_SOURCE_BYTES = 1000, 256 << 10
SHOWN_DATA = ("text/plain", "image/png", "image/jpeg")  # rich HTML/JS outputs are dropped, not rendered


def _cut(text: str, budget: int) -> tuple[str, int]:
    """``text`` cut to at most ``budget`` UTF-8 bytes; and how many bytes were cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= budget:
        return text, 0
    kept = data[:max(budget, 0)].decode("utf-8", "ignore")  # a character cut in two is dropped whole
    return kept, len(data) - len(kept.encode("utf-8"))


def cap_outputs(outputs, max_bytes: int = DEFAULT_OUTPUT_BYTES) -> list[dict]:
    """Clean copies of a code cell's ``outputs``: only text and PNG/JPEG images, at most ``max_bytes``
    of them in all, then a note saying how many bytes were not shown. Anything malformed is dropped.

    >>> capped = cap_outputs([{"output_type": "stream", "name": "stdout", "text": "x" * 100}], 10)
    >>> capped[0]["text"], capped[1]["text"]
    ('xxxxxxxxxx', '[output truncated: 90 bytes not shown]\\n')
    """
    kept, budget, hidden = [], max_bytes, 0
    for output in outputs[:10_000] if isinstance(outputs, list) else []:
        kind = output.get("output_type") if isinstance(output, dict) else None
        if kind == "stream":
            text, cut = _cut(multiline_text(output.get("text")), budget)
            if text:
                kept.append({"output_type": "stream", "name": "stderr" if output.get("name") == "stderr"
                             else "stdout", "text": text})
            budget, hidden = budget - len(text.encode()), hidden + cut
        elif kind == "error":
            lines = output.get("traceback")
            trace = "\n".join(line for line in lines if isinstance(line, str)) if isinstance(lines, list) else ""
            summary = f"{multiline_text(output.get('ename'))}: {multiline_text(output.get('evalue'))}"
            text, cut = _cut(trace or summary, budget)
            kept.append({"output_type": "error", "ename": safe_text(multiline_text(output.get("ename")), 100),
                         "evalue": _cut(multiline_text(output.get("evalue")), 1000)[0], "traceback": text.split("\n")})
            budget, hidden = budget - len(text.encode()), hidden + cut
        elif kind in ("execute_result", "display_data") and isinstance(output.get("data"), dict):
            data = {}
            for mime in SHOWN_DATA:
                value = multiline_text(output["data"].get(mime))
                size = len(value.encode())
                if value and mime != "text/plain" and size <= budget:
                    data[mime], budget = value, budget - size
                elif value and mime == "text/plain":
                    data[mime], cut = _cut(value, budget)
                    budget, hidden = budget - len(data[mime].encode()), hidden + cut
                elif value:
                    hidden += size
            hidden += sum(len(json.dumps(v)) for k, v in output["data"].items() if k not in SHOWN_DATA)
            if data:
                count = output.get("execution_count")
                kept.append({"output_type": kind, "data": data, "metadata": {}}
                            | ({"execution_count": count if type(count) is int else None}
                               if kind == "execute_result" else {}))
    if hidden:
        kept.append({"output_type": "stream", "name": "stderr", "text": f"[output truncated: {hidden} bytes not shown]\n"})
    return kept


def _verdict(grade_id: str, result, description: str) -> dict:
    """The trusted grader's result for one graded cell, as an output of that cell."""
    score, points = result.scores[grade_id]
    if grade_id not in result.messages and score >= points:
        return {"output_type": "stream", "name": "stdout",
                "text": f"Hidden tests passed: {score:g} / {points:g} points ({description}).\n"}
    lines = [f"Hidden tests failed: {score:g} / {points:g} points ({description}).",
             *result.messages.get(grade_id, "").splitlines()]
    return {"output_type": "error", "ename": "HiddenTestsFailed", "evalue": lines[0], "traceback": lines}


def feedback_notebook(executed: dict | None, submitted: dict, release: dict, result, rubric,
                      max_output_bytes: int = DEFAULT_OUTPUT_BYTES, note: str | None = None) -> dict:
    """The notebook nbgrader renders as feedback, rebuilt here from trusted parts.

    ``executed``: nbgrader's executed notebook from the sandbox (``None`` if there is none: the
    cells of ``submitted`` are shown without outputs). Cells keep their order; a cell whose grade
    id is in ``release`` gets the release's nbgrader metadata and, unless it is a solution cell,
    the release's source; later duplicates of a grade id lose it. Graded cells the student deleted
    come back at the end. ``result``'s verdicts are appended to the graded cells; ``note`` (why
    the notebook was not run) opens the notebook.
    """
    trusted = {g: c for c in release["cells"] if (g := cells.grade_id(c))}
    descriptions = {c.grade_id: c.description for c in rubric}
    shown, seen = [], set()
    if note:
        shown.append({"cell_type": "markdown", "metadata": {}, "source": f"**Note from the grader:** {note}"})
    source_cells = (executed or submitted).get("cells")
    for cell in (source_cells if isinstance(source_cells, list) else [])[:MAX_CELLS]:
        kind = cell.get("cell_type") if isinstance(cell, dict) else None
        if kind not in ("code", "markdown"):
            continue
        grade_id = cells.grade_id(cell)
        if grade_id in trusted and grade_id not in seen:
            seen.add(grade_id)
            model = trusted[grade_id]
            kind, metadata = model["cell_type"], {"nbgrader": dict(cells.nbgrader_metadata(model))}
            text = cells.source(cell if cells.is_solution(model) else model)
        else:
            metadata, text = {}, cells.source(cell)
        text, cut = _cut(text, MAX_SOURCE_BYTES)
        new = {"cell_type": kind, "metadata": metadata, "source": text + (f"\n# [{cut} more bytes not shown]" if cut else "")}
        if kind == "code":
            new["outputs"] = cap_outputs(cell.get("outputs"), max_output_bytes) if executed is not None else []
            count = cell.get("execution_count") if executed is not None else None
            new["execution_count"] = count if type(count) is int else None
        shown.append(new)
    for grade_id, model in trusted.items():  # deleted graded cells: shown with their verdict
        if grade_id not in seen and grade_id in descriptions:
            metadata = {"nbgrader": dict(cells.nbgrader_metadata(model))}
            shown.append({"cell_type": model["cell_type"], "metadata": metadata, "source": cells.source(model),
                          "outputs": [], "execution_count": None})
    for cell in shown:
        grade_id = cells.grade_id(cell)
        if grade_id in descriptions and cell["cell_type"] == "code":
            cell["outputs"].append(_verdict(grade_id, result, descriptions[grade_id]))
    for number, cell in enumerate(shown):
        cell["id"] = f"cell-{number}"
    return {"cells": shown, "metadata": {k: release["metadata"][k] for k in ("kernelspec", "language_info")
                                         if k in release.get("metadata", {})},
            "nbformat": 4, "nbformat_minor": 5}
