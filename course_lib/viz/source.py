"""Show the library's own source in a chapter, so a chapter never keeps a second copy that could drift.

:func:`show_source` reads the code of a function, class or module from the installed library at
call time: the chapter shows exactly what runs and what the tests check. Not covered: plots.
"""
from __future__ import annotations

import inspect
from pathlib import Path

__all__ = ["show_source"]


def show_source(obj, *, header: bool = True):
    """The source code of a course_lib function, class or module, as a highlighted IPython ``Code`` object.

    ``header=True`` adds a first comment line saying which file and lines the code comes from.
    The code is read from the installed library at call time, so the chapter always shows
    exactly what runs and what the tests check.
    """
    from IPython.display import Code  # imported here: plotting must work without IPython

    try:
        source = inspect.getsource(obj)
        filename = inspect.getsourcefile(obj)
    except (TypeError, OSError) as error:
        raise TypeError(f"cannot show the source of {obj!r}: {error}") from None
    if header:
        first_line = 1 if inspect.ismodule(obj) else inspect.getsourcelines(obj)[1]
        last_line = first_line + source.count("\n") - 1
        location = _relative_to_package(Path(filename))
        source = f"# {location}, lines {first_line}-{last_line}\n{source}"
    return Code(source, language="python")


def _relative_to_package(path: Path) -> str:
    """``.../site-packages/course_lib/attention.py`` -> ``course_lib/attention.py``."""
    parts = path.parts
    if "course_lib" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("course_lib") - 1 :])
    return path.name
