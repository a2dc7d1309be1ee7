"""The course's version, in one place: the package's (pyproject.toml reads it) and its release tag.

A release is the commit tagged ``v<version>``; the notebooks' Colab badges and set-up cells point at
that tag (see :mod:`course_lib.notebooks` and "Releasing" in the README).
"""
__version__ = "0.1.0"
RELEASE_TAG = f"v{__version__}"
