"""Explorers in the static book: a bounded set of precomputed figures, switched by plain JavaScript.

A page of the book has no kernel, so an ipywidgets explorer there could only show its first figure.
When a notebook is executed for the book, the book's extension (:mod:`.book`) sets
``COURSE_STATIC_EXPLORERS=1`` and :class:`~course_lib.viz.Explorer` displays :func:`render_static`'s
HTML instead: native ``<input type=range>``, ``<select>`` and checkboxes, a figure drawn beforehand
for every combination of a few stops per control (at most :data:`MAX_STATES` combinations, each a
64-colour PNG), and a few lines of JavaScript that swap the picture when a control moves.

Which stops: a checkbox gets both states, a menu its options, a slider evenly spaced values that
include its current one; a control that is disabled, or that has no stops (a text box), stays at its
current value and is shown as fixed. The stops are shared out so that their product stays within the
cap, the control with the fewest stops so far getting the next one. Not covered: the live explorer
(:mod:`.explorer`), the figures themselves (each topic's widgets).
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping

import ipywidgets as widgets
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["ENVIRONMENT_FLAG", "MAX_STATES", "all_stops", "choose_stops", "render_static", "static_requested"]

ENVIRONMENT_FLAG = "COURSE_STATIC_EXPLORERS"
MAX_STATES = 16  # 16 figures of 10-20 kB each: a page with three explorers stays under about 1 MB
COLOURS = 64  # a palette PNG is 3-4 times smaller than matplotlib's RGBA one, and looks the same here

Stop = tuple[object, str]  # (value passed to draw, label shown beside the control)


def static_requested() -> bool:
    """Whether explorers should render for a page without a kernel (the book build sets the flag)."""
    return os.environ.get(ENVIRONMENT_FLAG, "") not in ("", "0")


def _number_label(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3g}"


def all_stops(control: widgets.Widget) -> list[Stop]:
    """Every value ``control`` can take, in order, with its label; only the current one for a free-form control."""
    if isinstance(control, (widgets.Checkbox, widgets.ToggleButton)):
        return [(False, "off"), (True, "on")]
    if isinstance(control, widgets.widget_selection._Selection):  # menus, selection sliders, radio buttons
        return list(zip(control._options_values, control._options_labels))
    if isinstance(control, widgets.FloatLogSlider):
        count = int(round((control.max - control.min) / control.step)) + 1
        values = [control.base ** (control.min + i * control.step) for i in range(count)]
        return [(value, _number_label(value)) for value in values]
    if isinstance(control, (widgets.IntSlider, widgets.FloatSlider)):
        count = int(math.floor((control.max - control.min) / control.step + 1e-9)) + 1
        if isinstance(control, widgets.IntSlider):
            values = [control.min + i * control.step for i in range(count)]
        else:
            values = [round(control.min + i * control.step, 10) for i in range(count)]
        return [(value, _number_label(value)) for value in values]
    return [(control.value, str(control.value))]


def _nearest(stops: list[Stop], value) -> int:
    try:
        return min(range(len(stops)), key=lambda i: abs(stops[i][0] - value))
    except TypeError:  # not numbers: an exact match or the first option
        return next((i for i, (v, _) in enumerate(stops) if v == value), 0)


def _thin(stops: list[Stop], current: int, count: int) -> list[int]:
    """``count`` evenly spaced indices into ``stops``, both ends and ``current`` among them when ``count`` allows."""
    if count >= len(stops):
        return list(range(len(stops)))
    if count == 1:
        return [current]
    picked = [round(i * (len(stops) - 1) / (count - 1)) for i in range(count)]
    if current not in picked:  # the explorer's own starting point replaces the stop nearest to it
        picked[min(range(count), key=lambda i: abs(picked[i] - current))] = current
    return sorted(set(picked))


def choose_stops(controls: Mapping[str, widgets.Widget], max_states: int = MAX_STATES) -> dict[str, list[Stop]]:
    """The stops each control offers in the static explorer; the product of their counts is at most ``max_states``."""
    if max_states < 1:
        raise ValueError(f"max_states must be at least 1, got {max_states}")
    full, current = {}, {}
    for name, control in controls.items():
        stops = all_stops(control)
        current[name] = _nearest(stops, control.value)
        full[name] = [stops[current[name]]] if getattr(control, "disabled", False) else stops
        if len(full[name]) == 1:
            current[name] = 0
    counts = {name: 1 for name in controls}
    while True:
        growable = [name for name in controls if counts[name] < len(full[name])
                    and math.prod(counts.values()) // counts[name] * (counts[name] + 1) <= max_states]
        if not growable:
            break
        name = min(growable, key=lambda n: counts[n])  # ties: the earlier control
        counts[name] += 1
    return {name: [full[name][i] for i in _thin(full[name], current[name], counts[name])] for name in controls}


def _png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").quantize(colors=COLOURS)
    small = io.BytesIO()
    image.save(small, format="PNG", optimize=True)
    return base64.b64encode(small.getvalue()).decode("ascii")


_SLIDERS = (widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider, widgets.SelectionSlider)


def _control_html(name: str, control: widgets.Widget, stops: list[Stop], start: int) -> str:
    """The control as the page shows it: a slider stays a slider, a checkbox a checkbox, anything else a menu."""
    label = html.escape(getattr(control, "description", "") or name)
    if not isinstance(control, (widgets.Checkbox, widgets.ToggleButton)):  # the controls line up, as the widgets do
        label = f'<span style="display: inline-block; min-width: 9em">{label}</span>'
    shown = html.escape(stops[start][1])
    if len(stops) == 1:
        return f'<div><label>{label} <output>{shown}</output> <small>(fixed in the book)</small></label></div>'
    if isinstance(control, (widgets.Checkbox, widgets.ToggleButton)):  # its two stops: off, on
        checked = " checked" if stops[start][0] else ""
        return f'<div><label><input type="checkbox" data-control="{html.escape(name)}"{checked}> {label}</label></div>'
    if isinstance(control, _SLIDERS):
        return (f'<div><label>{label} <input type="range" min="0" max="{len(stops) - 1}" step="1" value="{start}" '
                f'data-control="{html.escape(name)}"> <output>{shown}</output></label></div>')
    options = "".join(f'<option value="{i}"{" selected" if i == start else ""}>{html.escape(text)}</option>'
                      for i, (_, text) in enumerate(stops))
    return f'<div><label>{label} <select data-control="{html.escape(name)}">{options}</select></label></div>'


_SCRIPT = """(function () {
  var root = document.getElementById("%s");
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var image = root.querySelector("img");
  function update() {
    var state = 0;
    data.controls.forEach(function (name, i) {
      var input = root.querySelector("[data-control='" + name + "']");
      var stop = input.type === "checkbox" ? (input.checked ? 1 : 0) : Number(input.value);
      state += stop * data.strides[i];
      var shown = input.parentNode.querySelector("output");
      if (shown) { shown.textContent = data.labels[i][stop]; }
    });
    image.src = "data:image/png;base64," + data.images[data.states[state]];
    image.dataset.state = state;
  }
  root.querySelectorAll("[data-control]").forEach(function (input) {
    input.addEventListener("input", update);
    input.addEventListener("change", update);
  });
})();"""


def render_static(title: str, controls: Mapping[str, widgets.Widget], draw: Callable[..., Figure],
                  max_states: int = MAX_STATES) -> str:
    """HTML for a page without a kernel: the controls' stops, a figure per combination, and the script switching them."""
    stops = choose_stops(controls, max_states)
    names = list(controls)
    moving = [name for name in names if len(stops[name]) > 1]
    images, image_index, states = [], {}, []
    for combination in itertools.product(*(range(len(stops[name])) for name in moving)):
        values = {name: stops[name][0][0] for name in names}  # fixed controls have one stop
        values.update({name: stops[name][i][0] for name, i in zip(moving, combination)})
        picture = _png_base64(draw(**values))
        if picture not in image_index:  # equal figures (a control that changes nothing here) are stored once
            image_index[picture] = len(images)
            images.append(picture)
        states.append(image_index[picture])
    start = {name: _nearest(stops[name], controls[name].value) for name in names}
    strides = [math.prod(len(stops[n]) for n in moving[i + 1:]) for i in range(len(moving))]
    first = sum(start[name] * stride for name, stride in zip(moving, strides))  # the explorer's starting state
    data = {"controls": moving, "strides": strides, "states": states, "images": images,
            "labels": [[label for _, label in stops[name]] for name in moving]}
    element_id = f"course-explorer-{uuid.uuid4().hex[:12]}"
    rows = "".join(_control_html(name, controls[name], stops[name], start[name]) for name in names)
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    note = (f"{len(states)} settings drawn in advance for the book; open the notebook to explore freely"
            if moving else "drawn in advance for the book; open the notebook to explore")
    return (f'<div class="course-static-explorer" id="{element_id}"><p><b>{html.escape(title)}</b> '
            f'<small>({note})</small></p>{rows}'
            f'<img alt="{html.escape(title)}" style="max-width: 100%" data-state="{first}" '
            f'src="data:image/png;base64,{images[states[first]]}">'
            f'<script type="application/json">{payload}</script><script>{_SCRIPT % element_id}</script></div>')
