"""Course-wide switches read from the environment.

``COURSE_FAST=1`` puts every chapter in its fast mode (fewer steps, smaller sizes) so the whole
book executes in minutes on a 2-core CPU; CI and the book build set it. Not covered: the
device (:mod:`course_lib.device`) and the data folder (:mod:`course_lib.data`).
"""
from __future__ import annotations

import os

__all__ = ["fast_mode"]


def fast_mode() -> bool:
    """True when ``COURSE_FAST`` is set to anything but ``""``/``0``/``false``."""
    return os.environ.get("COURSE_FAST", "").strip().lower() not in ("", "0", "false", "no")
