"""The explorers' frame: ipywidgets controls above a matplotlib figure that redraws when a control moves.

Every chapter's widgets (``course_lib/<topic>/widgets.py``) build one :class:`Explorer` from a dict
of controls and a ``draw(**values) -> Figure`` function. The figure is a plain image output,
updated in place (``display_id``), not an ``Output`` widget: a notebook executed headless (nbclient)
therefore keeps a picture of the initial state. When the book executes a notebook
(``COURSE_STATIC_EXPLORERS=1``), the explorer shows :mod:`.static_explorer`'s version instead: a few
figures drawn in advance, switched by plain JavaScript, so that its controls move on a page without a
kernel. Not covered: the pictures themselves (each topic's widgets).
"""
from __future__ import annotations

import io
import textwrap
from collections.abc import Callable

import ipywidgets as widgets
from matplotlib.figure import Figure

from .static_explorer import render_static, static_requested

__all__ = ["Explorer", "message_figure"]


def message_figure(message: str, width: float = 7, columns: int = 80) -> Figure:
    """A figure that only says ``message``: what an explorer draws when its input cannot be drawn."""
    figure = Figure(figsize=(width, 1.6), layout="constrained")
    ax = figure.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(message, columns), ha="center", va="center", fontsize=11,
            color="firebrick")
    return figure


class Explorer:
    """ipywidgets controls plus a matplotlib figure that is redrawn whenever a control moves.

    ``draw(**values)`` receives the controls' values by name and returns a Figure. Display the
    explorer (last line of a cell) to get the controls and, below them, the figure.
    ``book_controls`` replaces some controls in the static book (same names), e.g. a menu of examples
    for a free text box, or a slider's few telling stops for its whole range.
    """

    def __init__(self, title: str, controls: dict[str, widgets.ValueWidget], draw: Callable[..., Figure],
                 book_controls: dict[str, widgets.ValueWidget] | None = None):
        unknown = set(book_controls or {}) - set(controls)
        if unknown:
            raise ValueError(f"book_controls {sorted(unknown)} are not controls of this explorer: {sorted(controls)}")
        self.title = title
        self.controls = controls
        self.book_controls = dict(book_controls or {})
        self._draw = draw
        self._display_handle = None
        self.widget = widgets.VBox([widgets.HTML(f"<b>{title}</b>"), *controls.values()])
        for control in controls.values():
            control.observe(self._redraw, names="value")

    @property
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def figure(self) -> Figure:
        """The figure for the controls' current values."""
        return self._draw(**self.values)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    def _redraw(self, change=None) -> None:
        if self._display_handle is not None:
            from IPython.display import Image

            self._display_handle.update(Image(self.png()))

    def static_html(self) -> str:
        """The explorer for a page without a kernel (:func:`.static_explorer.render_static`)."""
        return render_static(self.title, {**self.controls, **self.book_controls}, self._draw)

    def _ipython_display_(self) -> None:
        from IPython.display import Image, display

        if static_requested():
            display({"text/html": self.static_html(), "text/plain": f"{self.title} (drawn in advance)"}, raw=True)
            return
        display(self.widget)
        self._display_handle = display(Image(self.png()), display_id=True)
