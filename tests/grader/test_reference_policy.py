"""The reference policy (:mod:`course_grader.reference_policy`): a lab's functions must be the student's own.

Each submission of ``tests/fixtures/reference_use/`` hands back course_lib's implementation one way
or another (an import, importlib, a package walk, its source file or its ``inspect.getsource`` text
run as the student's, a helper's ``__globals__``, a plain assignment, a thread, a forked child) and
would score full marks without the policy. Graded by the sandboxed grader, each loses exactly its ``LOST`` cells, each with the
policy's message, while the honest solution keeps full marks, both with the checkout's editable
install and with a regular site-packages install of course_lib and course_grader (a venv made in
the test, torch and nbgrader borrowed from the course's environment through a ``.pth`` file). The
grading runs in a subprocess of the install's Python either way, so both take the same path.
Fast tests pin the guard's decisions in one sandbox.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from course_grader import course, sandbox_part
from course_grader.sandbox import Limits, Sandbox
from course_lib.lab_checks import attention as attention_checks
from tests.grader import CHECKOUT
from tests.labtools import lab_files
from tests.paths import FIXTURES, REPO

LAB, SOURCE, RELEASE = lab_files("attention")[:3]
USES = sorted((FIXTURES / "reference_use").glob("*.py"))
POLICY = "this lab asks you to write it yourself"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

# Grades {name: notebook} with the Python that runs it (stdin: a JSON request, stdout: the results).
GRADE = r"""
import json, sys
from pathlib import Path
import course_grader, course_lib
from course_grader import autograder, cells
from course_grader.registry import lab
from course_grader.sandbox import Limits, Sandbox
request = json.load(sys.stdin)
module = lab(request["lab"]).checks
source = cells.load_notebook(Path(request["source"]))
hidden = autograder.paths_hidden_from_students(*map(Path, request["hidden"]))
results = {"course_lib": course_lib.__file__, "course_grader": course_grader.__file__}
with Sandbox(Limits(wall_seconds=30), hidden, rubric=module.__name__) as box:
    for name, path in request["notebooks"].items():
        graded = autograder.grade_notebook(box, module, Path(path), source)
        results[name] = {"scores": graded.scores, "messages": graded.messages}
print(json.dumps(results))
"""


def _field(fixture: Path, name: str):
    tree = ast.parse(fixture.read_text(encoding="utf-8"))
    return next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name)


def _notebooks(folder: Path) -> dict[str, Path]:
    """The solution, and the release with the reference solutions and one fixture's cell each (never run here)."""
    solutions = course.solution_code(SOURCE)
    written = {}
    for name, code in {"solution": {}, **{use.stem: {_field(use, "TARGET"): use.read_text(encoding="utf-8")}
                                          for use in USES}}.items():
        path = folder / name / LAB / RELEASE.name
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(course.fill_solutions(RELEASE, {**solutions, **code})), encoding="utf-8")
        written[name] = path
    return written


def _grade(python: Path, notebooks: dict[str, Path], cwd: Path) -> dict:
    request = {"lab": LAB, "source": str(SOURCE), "hidden": [str(p) for p in CHECKOUT.private],
               "notebooks": {name: str(path) for name, path in notebooks.items()}}
    done = subprocess.run([str(python), "-P", "-c", GRADE], input=json.dumps(request), capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def make_site_install(root: Path) -> Path:
    """A venv whose course_lib and course_grader are regular (non-editable) installs in its site-packages;
    the course's environment provides the rest. Returns its Python."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pt", "*.egg-info", "build")  # no checkpoints: not needed here
    shutil.copytree(REPO / "course_lib", root / "src" / "course_lib", ignore=ignore)
    shutil.copytree(REPO / "grader", root / "src" / "grader", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, root / "src" / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "course-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(root / "src"), str(root / "src" / "grader")],
                   check=True, timeout=600, capture_output=True)
    return python


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every fixture and the solution, graded with the editable install and with a site-packages one."""
    root = tmp_path_factory.mktemp("reference_use")
    notebooks = _notebooks(root / "submissions")
    start = time.monotonic()
    site_python = make_site_install(root / "site")
    install_seconds = time.monotonic() - start
    return {"editable": _grade(Path(sys.executable), notebooks, root),
            "site-packages": _grade(site_python, notebooks, root), "root": root, "install_seconds": install_seconds}


@pytest.mark.slow
@pytest.mark.parametrize("install", ["editable", "site-packages"])
def test_every_use_of_the_reference_scores_0_with_the_policys_message_in_both_installs(graded, install):
    results, points = graded[install], lab_files(LAB).points
    site = str(graded["root"] / "site")
    assert results["course_lib"].startswith(site) == results["course_grader"].startswith(site) == (install != "editable")
    assert results["solution"]["scores"] == {g: [p, p] for g, p in points.items()}, results["solution"]["messages"]
    for use in USES:
        got = results[use.stem]
        lost = {g for g, (score, _) in got["scores"].items() if score == 0}
        assert lost == set(_field(use, "LOST")), (use.stem, got["messages"])
        for grade_id in lost:
            message = got["messages"][grade_id]
            assert message.startswith("your ") and POLICY in message and "course_lib" in message, (use.stem, message)
    total = sum(points.values())
    for name in ["solution", *(use.stem for use in USES)]:  # the closing note's table (pytest -s shows it)
        got = results[name]
        score = sum(score for score, _ in got["scores"].values())
        said = " | ".join(f"{g}: {m}" for g, m in sorted(got["messages"].items()) if POLICY in m) or "-"
        print(f"{name} | {install} | {score:g}/{total:g} | {said}")
    print(f"site-packages install made in {graded['install_seconds']:.1f} s")


@pytest.mark.slow
def test_the_message_names_the_function_and_what_it_used(graded):
    messages = graded["editable"]["import_directly"]["messages"]
    assert messages["test_sdpa_scaling"] == (
        "your scaled_dot_product_attention calls course_lib's own implementation "
        "(course_lib.attention.scaled_dot_product.scaled_dot_product_attention); " + POLICY)
    assert "at import" in graded["editable"]["source_exec"]["messages"]["test_merge_heads"]
    assert "reads the files of course_lib's own implementation" in graded["editable"]["source_exec"]["messages"][
        "test_merge_heads"]


# --- the guard's decisions, in one sandbox ------------------------------------------------------------

@pytest.fixture(scope="module")
def box():
    with Sandbox(Limits(wall_seconds=20), rubric=attention_checks.__name__) as sandbox:
        yield sandbox


def _part(box: Sandbox, cells, names, grade_id: str | None = None, setup: str = "import math\nimport torch"):
    helpers = attention_checks.RUBRIC.helpers(grade_id) if grade_id else ()
    return box.run(cells, names, helpers=helpers, setup=setup)


def test_helpers_and_the_set_up_may_use_course_lib_the_students_code_may_not(box):
    uses_helper = "def split_heads(x, num_heads):\n    merged = merge_heads(x)\n    return x.transpose(1, 2)\n"
    with _part(box, uses_helper, ["split_heads"], "test_split_heads") as part:
        part.function("split_heads")(torch.ones(1, 2, 3, 4), 2)
        assert part.policy_violation() is None  # merge_heads is the lab's reference here: allowed, inside too
    setup = "import torch\nimport course_lib.attention.masks as masks\ndef lower(size):\n    return masks.causal_mask(size)\n"
    with _part(box, "def causal_mask(size):\n    return lower(size)\n", ["causal_mask"], setup=setup) as part:
        assert part.function("causal_mask")(3).shape == (3, 3) and part.policy_violation() is None
    with _part(box, "def causal_mask(size):\n    return masks.causal_mask(size)\n", ["causal_mask"], setup=setup) as part:
        part.function("causal_mask")(3)
        assert part.policy_violation().startswith("your causal_mask calls course_lib's own implementation")


def test_formatting_the_stack_is_not_reading_the_graders_files(box):
    """torch.manual_seed formats the stack (torch.cuda's lazy seeding), which reads the source lines of every
    frame, the grader's own among them: no false alarm for that. Reading course_lib's files through the same
    line cache is still reading them."""
    seeds = "import torch, traceback\ndef f():\n    torch.manual_seed(3)\n    return len(traceback.format_stack())\n"
    with _part(box, seeds, ["f"]) as part:
        assert part.function("f")() > 0 and part.policy_violation() is None
    reads = ("import linecache, course_lib.attention.masks as masks\n"
             "def f():\n    return linecache.getlines(masks.__file__)\n")
    with _part(box, reads, ["f"]) as part:
        part.function("f")()
        assert "reads the files of course_lib's own implementation" in part.policy_violation()


def test_a_forged_set_up_filename_is_still_the_students_code(box):
    forged = ("import course_lib.attention.masks as masks\n"
              f"exec(compile('def causal_mask(size):\\n    return masks.causal_mask(size)\\n', "
              f"{sandbox_part.SETUP_FILENAME!r}, 'exec'))\n"
              "def unused(): pass\n")
    with _part(box, forged, ["causal_mask"]) as part:
        part.function("causal_mask")(3)
        assert "calls course_lib's own implementation" in part.policy_violation()


@pytest.mark.parametrize("code, said", [
    ("import sys\ndef f():\n    sys.setprofile(None)\n", "turns off the grader's watch"),
    ("import course_lib.attention as a\ndef f():\n    return len(a.causal_mask.__code__.co_code)\n",
     "reads the code of course_lib's own implementation"),
    ("import course_grader\ndef f():\n    pass\n", "imports the grader's own code"),
    ("import os, course_lib\ndef f():\n    return os.listdir(course_lib.__path__[0])\n",
     "lists the folder of course_lib's own implementation"),
])
def test_tampering_and_reading_are_violations_too(box, code, said):
    with _part(box, code, ["f"]) as part:
        try:
            part.function("f")()
        except Exception:
            pass  # refused inside the student's code: the violation is what counts
        assert said in (part.policy_violation() or ""), part.load_error


def test_honest_code_that_uses_torch_threads_processes_and_its_own_helpers_is_left_alone(box):
    honest = ("import threading\nfrom collections import namedtuple\nPoint = namedtuple('Point', 'x y')\n"
              "def _softmax(s):\n    return torch.softmax(s, dim=-1)\n"
              "def f(x):\n    out = []\n    t = threading.Thread(target=lambda: out.append(_softmax(x)))\n"
              "    t.start(); t.join()\n    return out[0], Point(1, 2)\n")
    with _part(box, honest, ["f"]) as part:
        result, point = part.function("f")(torch.zeros(2, 3))
        assert torch.allclose(result, torch.full((2, 3), 1 / 3)) and point == (1, 2)
        assert part.policy_violation() is None


def test_a_labs_runner_drives_the_students_function_in_the_sandbox_and_only_the_runner_is_allowed():
    """The distributed lab's ``RUNNERS``: run_ranks_logged calls the student's function once per simulated rank
    inside the sandbox; the simulated group's code is the runner's (allowed), while the student's own use of
    course_lib inside a rank is still a violation, and an unknown runner is refused."""
    from course_lib.lab_checks import distributed as distributed_checks

    setup = "import torch\nfrom course_lib.distributed.simulated import run_ranks\n"
    honest = ("def average_gradients(grads, group):\n    out = []\n    for g in grads:\n        t = g.clone()\n"
              "        group.all_reduce(t)\n        out.append(t / group.world_size)\n    return out\n")
    borrows = ("import course_lib.distributed.data_parallel as dp\n"
               "def average_gradients(grads, group):\n    dp.gradient_buckets(grads, 1.0)\n"
               "    out = [g.clone() for g in grads]\n    [group.all_reduce(t) for t in out]\n"
               "    return [t / group.world_size for t in out]\n")
    per_rank = [([torch.ones(2)],), ([3 * torch.ones(2)],)]
    with Sandbox(Limits(wall_seconds=20), rubric=distributed_checks.__name__) as sandbox:
        with sandbox.run(honest, ["average_gradients"], setup=setup) as part:
            results = part.function("average_gradients").run_with("ranks", 2, per_rank, group_at=1)
            assert [torch.equal(result[0][0], 2 * torch.ones(2)) for result in results] == [True, True]
            assert [result[1] for result in results] == [[("all_reduce", 2, None)]] * 2
            assert part.policy_violation() is None
            with pytest.raises(LookupError, match="no runner nope"):
                part.function("average_gradients").run_with("nope", 2, per_rank)
        with sandbox.run(borrows, ["average_gradients"], setup=setup) as part:
            part.function("average_gradients").run_with("ranks", 2, per_rank, group_at=1)
            assert "calls course_lib's own implementation" in part.policy_violation()
