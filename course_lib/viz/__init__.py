"""What the chapters draw with: heatmaps, the explorers' frame, the library's own source, offline bertviz.

:mod:`.plots` (attention heatmaps, grids of heads, positional tables), :mod:`.explorer` (controls
above a figure that redraws), :mod:`.static_explorer` (the explorers in the static book: figures drawn
in advance, switched by plain JavaScript), :mod:`.source` (``show_source``), :mod:`.bertviz_offline` (bertviz's
views with their scripts served locally), :mod:`.book` (the book's Sphinx extension: the views'
libraries once per page). Each topic's explorers live beside the topic, in
``course_lib/<topic>/widgets.py``, and build on :class:`Explorer`.
"""
from .explorer import Explorer, message_figure
from .plots import plot_attention, plot_heads, plot_positional_encoding
from .source import show_source

__all__ = ["Explorer", "message_figure", "plot_attention", "plot_heads", "plot_positional_encoding", "show_source"]
