"""The book's own Sphinx extension (``book/_config.yml`` loads it): lighter pages, no script errors.

* **One copy of the attention views' libraries per page.** Every offline view
  (:mod:`course_lib.viz.bertviz_offline`) carries d3 and jQuery inline, about 330 kB, so that it
  works anywhere on its own; a chapter with three views carried them three times. On each page that
  has views, :func:`share_libraries` takes the inlined copies out and the page loads the book's one
  file, ``_static/course-view-libraries.js`` (:func:`shared_script`), before its body runs. Without
  the cached libraries (no npm at build time) the pages are left as they are.
* **Inline scripts once.** Sphinx 7.4 writes an inline script that an extension adds after the
  builder starts twice (once with the name ``None``, once with ``''``; fixed in Sphinx 8.2,
  sphinx-doc/sphinx#13402), so every page declared sphinx-thebe's ``const THEBE_JS_URL`` twice and
  logged "Identifier 'THEBE_JS_URL' has already been declared". :func:`unique_scripts` drops the
  repeats.
* **A colour mode.** Without one, the theme logs "Got invalid theme mode" on a reader's first
  visit; the pages default to ``auto`` (the reader's system setting).
* **Explorers that move without a kernel.** :func:`setup` sets ``COURSE_STATIC_EXPLORERS=1`` before
  the chapters execute (their kernels inherit it), so each explorer renders its figures in advance
  (:mod:`course_lib.viz.static_explorer`).
* **The Colab badge from the book itself.** The notebooks' badge image is Colab's, on the internet;
  the pages show the book's own copy (:data:`BADGE`), so an offline reader sees it too.

Not covered: the views themselves (:mod:`course_lib.viz.bertviz_offline`), the book's configuration.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .bertviz_offline import LIBRARIES_END, LIBRARIES_START, find_assets, library_block
from .static_explorer import ENVIRONMENT_FLAG

__all__ = ["BADGE", "SHARED_FILE", "setup", "share_libraries", "shared_script", "unique_scripts"]

SHARED_FILE = "course-view-libraries.js"
REMOTE_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"  # what the notebooks' badge shows
BADGE_FILE = "open-in-colab.svg"
BADGE = """<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">
<rect width="117" height="20" rx="3" fill="#444"/><rect width="24" height="20" rx="3" fill="#f9ab00"/>
<circle cx="9" cy="10" r="4.5" fill="none" stroke="#fff" stroke-width="2"/>
<circle cx="15" cy="10" r="4.5" fill="none" stroke="#fff" stroke-width="2"/>
<text x="70" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"
 text-anchor="middle">Open in Colab</text></svg>
"""
_INLINED = re.compile(re.escape(LIBRARIES_START) + ".*?" + re.escape(LIBRARIES_END), re.DOTALL)
_FROM_PAGE = "libs = window.courseViewLibraries;  /* loaded once per page: " + SHARED_FILE + " */"


def shared_script(sources: dict[str, str]) -> str:
    """The book's file of libraries: the views' own block, run once, its result left in ``window.courseViewLibraries``."""
    return ("/* d3 and jQuery for the course's attention views, loaded once per page (course_lib.viz.book). */\n"
            "(function () {\n  var define, module, exports;\n  var libs = {};\n  " + library_block(sources)
            + "\n  window.courseViewLibraries = libs;\n})();\n")


def share_libraries(body: str) -> tuple[str, int]:
    """``body`` with each view's inlined libraries replaced by the page's shared copy; how many were replaced."""
    return _INLINED.subn(_FROM_PAGE, body)


def unique_scripts(scripts: list) -> None:
    """Drop, in place, the scripts that repeat an earlier one (Sphinx's ``None`` and ``''`` names are the same)."""
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or "", getattr(script, "priority", 500),
               tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def _write_static_files(app) -> None:
    folder = Path(app.doctreedir) / "course-static"  # inside the build folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BADGE_FILE).write_text(BADGE, encoding="utf-8")
    app.config.html_static_path.append(str(folder))
    paths = find_assets()
    app.course_view_libraries = paths is not None
    if paths is not None:
        sources = {name: path.read_text(encoding="utf-8") for name, path in paths.items()}
        (folder / SHARED_FILE).write_text(shared_script(sources), encoding="utf-8")


def _page(app, pagename, templatename, context, doctree) -> None:
    context.setdefault("default_mode", "auto")
    if "body" in context and "pathto" in context:
        context["body"] = context["body"].replace(f'src="{REMOTE_BADGE}"',
                                                  f'src="{context["pathto"]("_static/" + BADGE_FILE, 1)}"')
    if getattr(app, "course_view_libraries", False) and "body" in context:
        context["body"], shared = share_libraries(context["body"])
        if shared:
            app.add_js_file(SHARED_FILE, priority=900)  # this page only, before its body's scripts run
    if isinstance(context.get("script_files"), list):
        unique_scripts(context["script_files"])


def setup(app):
    os.environ.setdefault(ENVIRONMENT_FLAG, "1")  # the book's kernels start from this process's environment
    app.connect("builder-inited", _write_static_files)
    app.connect("html-page-context", _page, priority=900)  # after the theme's own additions
    return {"parallel_read_safe": True, "parallel_write_safe": True}
