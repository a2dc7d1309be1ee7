"""Give every course notebook the same first two cells: an "Open in Colab" badge and a set-up cell.

    python scripts/notebook_header.py          # rewrite the headers in place
    python scripts/notebook_header.py --check  # exit 1 if any notebook's header is missing or stale

The badge points at the notebook's own path in the repository (a lab's source notebook points at
its student version, which is what students open). The set-up cell installs the course on Colab
and does nothing anywhere else. Both are generated from ``course_lib.REPOSITORY`` so they cannot
drift when files move (tests run ``--check``).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course_lib import REPOSITORY  # noqa: E402

BRANCH = "main"
BADGE_ID = "colab-badge"
SETUP_ID = "colab-setup"
INSTALL_TARGET = f"course-lib[viz] @ git+https://github.com/{REPOSITORY}@{BRANCH}"

SETUP_SOURCE = f'''\
# Set-up: on Google Colab this installs the course's library; anywhere else it does nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{INSTALL_TARGET}"], check=True)'''


def course_notebooks() -> list[pathlib.Path]:
    """Every notebook a reader or student opens: chapters and the labs (source and student version)."""
    found = [*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("labs/source/*/*.ipynb"), *ROOT.glob("labs/release/*/*.ipynb")]
    return sorted(p for p in found if ".ipynb_checkpoints" not in p.parts)


def repository_path(notebook: pathlib.Path) -> str:
    relative = notebook.resolve().relative_to(ROOT)
    if relative.parts[:2] == ("labs", "source"):
        relative = pathlib.Path("labs", "release", *relative.parts[2:])
    return relative.as_posix()


def colab_url(notebook: pathlib.Path) -> str:
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{repository_path(notebook)}"


def header_cells(notebook: pathlib.Path) -> list:
    badge = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"
    )
    setup = nbformat.v4.new_code_cell(SETUP_SOURCE)
    badge.id, setup.id = BADGE_ID, SETUP_ID
    setup.metadata["tags"] = ["colab-setup"]
    return [badge, setup]


def with_header(notebook: pathlib.Path, nb) -> bool:
    """Put the header on ``nb`` (replacing an old one); True if anything changed."""
    body = [c for c in nb.cells if c.get("id") not in (BADGE_ID, SETUP_ID)]
    new = header_cells(notebook)

    def key(cell):
        return cell.cell_type, cell.source, cell.get("id")

    if [key(c) for c in nb.cells[:2]] == [key(c) for c in new] and len(body) == len(nb.cells) - 2:
        return False
    nb.cells = new + body
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks whose header is stale")
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
    args = parser.parse_args(argv)
    stale = []
    for path in args.notebooks or course_notebooks():
        nb = nbformat.read(path, as_version=4)
        if with_header(path, nb):
            stale.append(path)
            if not args.check:
                nbformat.write(nb, path)
    verb = "stale header" if args.check else "updated"
    for path in stale:
        print(f"{verb}: {path.relative_to(ROOT) if path.is_absolute() else path}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
