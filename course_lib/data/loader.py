"""Find, download and verify the course's data files, and read them as text.

Every file the course uses is listed in :mod:`course_lib.data.registry` with its canonical URL
(raw GitHub at a pinned commit) and its SHA-256. :func:`data_path` looks for a file in order:

1. ``COURSE_DATA_DIR``: a local folder laid out like the registry (``multi30k/train.de.gz``);
   CI and offline machines point it at ``../shared/data``. It is only ever read, never written.
2. The download cache, ``COURSE_CACHE_DIR`` (default ``~/.cache/course_lib/data``).
3. A download from the canonical URL, or from ``COURSE_DATA_MIRROR`` + ``/`` + the relative
   path when that is set (a mirror is simply a copy of the data folder served over HTTP).
   ``COURSE_DATA_OFFLINE=1`` turns downloads off; ``COURSE_DATA_TIMEOUT`` sets the socket timeout.

Every file is checked against its SHA-256 before it is used (once per process per file version).
Not covered: tokenisation, batching and train/validation splitting, which later chapters build.

Command line (handy on Binder or Colab)::

    python -m course_lib.data list              # every file, and where it would come from
    python -m course_lib.data fetch multi30k    # a dataset folder, a file path, or "all"
"""
from __future__ import annotations

import argparse
import difflib
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .registry import DATA_FILES, DataFile

__all__ = [
    "DataUnavailableError", "ChecksumMismatchError", "lookup", "data_path", "cache_dir", "source_url",
    "read_text", "read_lines", "load_parallel", "load_multi30k", "load_tatoeba", "multi30k_dataset",
    "MULTI30K_SPLITS", "main",
]

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")
_SPLIT_ALIASES = {"valid": "val", "validation": "val", "test": "test_2016_flickr"}
_CHUNK = 1 << 16
_hash_memo: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> SHA-256


class DataUnavailableError(FileNotFoundError):
    """The file is in no local folder and could not be downloaded; the message says how to fix it."""


class ChecksumMismatchError(ValueError):
    """A local or downloaded file's bytes differ from the registered SHA-256."""


# --- where to look -------------------------------------------------------------------------------

def lookup(name: str) -> DataFile:
    """The registry entry for a relative path, or for a dataset folder that holds exactly one file.

    >>> lookup("tinyshakespeare").relpath
    'tinyshakespeare/input.txt'
    """
    name = name.strip().strip("/")
    if name in DATA_FILES:
        return DATA_FILES[name]
    in_folder = [entry for entry in DATA_FILES.values() if entry.dataset == name]
    if len(in_folder) == 1:
        return in_folder[0]
    if in_folder:
        choices = ", ".join(entry.relpath for entry in in_folder)
        raise ValueError(f"{name!r} is a dataset with {len(in_folder)} files; name one of: {choices}")
    close = difflib.get_close_matches(name, list(DATA_FILES), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"{name!r} is not a registered data file.{hint} "
                     "`python -m course_lib.data list` shows them all.")


def cache_dir() -> Path:
    """Where downloads go: ``COURSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/course_lib/data``."""
    if os.environ.get("COURSE_CACHE_DIR"):
        return Path(os.environ["COURSE_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "course_lib" / "data"


def source_url(name: str, base_url: str | None = None) -> str:
    """The URL a download would use: ``base_url`` or ``COURSE_DATA_MIRROR`` + relpath, else the canonical one."""
    entry = lookup(name)
    mirror = base_url or os.environ.get("COURSE_DATA_MIRROR")
    return f"{mirror.rstrip('/')}/{entry.relpath}" if mirror else entry.url


def _local_dir() -> Path | None:
    value = os.environ.get("COURSE_DATA_DIR")
    return Path(value).expanduser() if value else None


def _downloads_allowed() -> bool:
    return os.environ.get("COURSE_DATA_OFFLINE", "").strip().lower() in ("", "0", "false", "no")


# --- checking ------------------------------------------------------------------------------------

def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_sha256(path: Path) -> str:
    """Hash a file once per (size, mtime) so that repeated calls do not re-read big files."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_memo:
        _hash_memo[key] = _sha256_of_file(path)
    return _hash_memo[key]


# --- finding and downloading ---------------------------------------------------------------------

def data_path(name: str, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Return a local, verified path to a registered file, downloading it into the cache if needed.

    ``name`` is a path relative to the data folder (``"multi30k/val.de.gz"``) or a one-file dataset
    (``"tinyshakespeare"``). ``base_url`` overrides ``COURSE_DATA_MIRROR`` for this call.
    Raises :class:`DataUnavailableError` (with instructions) or :class:`ChecksumMismatchError`.
    """
    entry = lookup(name)
    looked: list[str] = []
    local = _local_dir()
    if local is not None:
        candidate = local / entry.relpath
        if candidate.is_file():
            actual = _cached_sha256(candidate)
            if actual != entry.sha256:
                raise ChecksumMismatchError(
                    f"{candidate} (from COURSE_DATA_DIR) is not the registered {entry.relpath}: its SHA-256 is "
                    f"{actual}, expected {entry.sha256}. Replace it with an unmodified copy from {entry.url}, "
                    "or unset COURSE_DATA_DIR to download it.")
            return candidate
        looked.append(f"{candidate} (COURSE_DATA_DIR): no such file")
    else:
        looked.append("COURSE_DATA_DIR: not set")
    cached = cache_dir() / entry.relpath
    if cached.is_file():
        if _cached_sha256(cached) == entry.sha256:
            return cached
        cached.unlink()  # a damaged copy in our own cache: fetch a fresh one
        looked.append(f"{cached} (download cache): checksum mismatch, removed")
    else:
        looked.append(f"{cached} (download cache): not downloaded yet")
    url = source_url(entry.relpath, base_url)
    if not _downloads_allowed():
        raise DataUnavailableError(_how_to_get(entry, looked, url, "not tried: COURSE_DATA_OFFLINE is set"))
    try:
        _download(url, cached, entry, progress)
    except (OSError, http.client.HTTPException) as exc:  # HTTP errors, refused connections, timeouts
        raise DataUnavailableError(_how_to_get(entry, looked, url, f"failed ({_describe(exc)})")) from exc
    return cached


def _download(url: str, target: Path, entry: DataFile, progress: bool) -> None:
    """Stream ``url`` into a temporary file beside ``target``; move it into place only if the hash matches."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(temp_name)
    timeout = float(os.environ.get("COURSE_DATA_TIMEOUT", "30"))
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib data loader"})
    try:
        digest, received = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response, \
                tqdm(total=entry.size, unit="B", unit_scale=True, desc=entry.relpath, disable=not progress) as bar:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > entry.size:  # wrong file (or an endless stream): stop before filling the disk
                    raise ChecksumMismatchError(_mismatch(entry, url, f"more than the expected {entry.size} bytes"))
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != entry.sha256:
            raise ChecksumMismatchError(_mismatch(entry, url, f"SHA-256 {digest.hexdigest()} ({received} bytes)"))
        os.replace(temp, target)  # atomic: readers never see a half-written file
    finally:
        temp.unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    """``HTTP Error 404: Not Found``, ``[Errno 111] Connection refused``, ``timed out``, ..."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc  # str(URLError) hides it in <...>
    return f"{type(exc).__name__}: {exc}"


def _mismatch(entry: DataFile, url: str, got: str) -> str:
    return (f"Downloaded {entry.relpath} from {url} but got {got}; expected SHA-256 {entry.sha256} "
            f"({entry.size} bytes). Nothing was saved. The server (or a proxy) sent different bytes; "
            f"try again later, or set COURSE_DATA_DIR to a folder holding a verified copy. {entry.note}").strip()


def _how_to_get(entry: DataFile, looked: list[str], url: str, outcome: str) -> str:
    places = "\n".join(f"  - {place}" for place in looked)
    target = cache_dir() / entry.relpath
    text = (
        f"Could not get the course data file {entry.relpath!r}.\nLooked in:\n{places}\n"
        f"Download from {url}: {outcome}\n"
        "To fix it, do one of these:\n"
        f"  1. Set COURSE_DATA_DIR to a folder that holds {entry.relpath} (e.g. the course's shared/data):\n"
        "       export COURSE_DATA_DIR=/path/to/data        (in a notebook: %env COURSE_DATA_DIR=/path/to/data)\n"
        f"  2. Download {entry.url}\n"
        f"     and save it as {target}\n"
        f"     (it must have SHA-256 {entry.sha256}); or set COURSE_DATA_MIRROR to a server that has it."
    )
    return text + (f"\nNote: {entry.note}" if entry.note else "")


# --- reading -------------------------------------------------------------------------------------

def read_text(name: str, *, encoding: str | None = None, **where) -> str:
    """The whole file as a string: ``.gz`` files are decompressed, and each file is decoded with its
    registered encoding (UTF-8; ISO-8859-1 for the raw TREC files) unless ``encoding`` is given.
    ``where`` is passed on to :func:`data_path`."""
    entry = lookup(name)
    raw = data_path(entry.relpath, **where).read_bytes()
    if entry.relpath.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode(encoding or entry.encoding)


def read_lines(name: str, **kwargs) -> list[str]:
    """The file's lines without their ``\\n``; a missing final newline does not add or drop a line."""
    lines = read_text(name, **kwargs).split("\n")  # not splitlines(): it also splits on \x0b, \u2028, ...
    return lines[:-1] if lines and lines[-1] == "" else lines


def load_parallel(source_name: str, target_name: str, **kwargs) -> list[tuple[str, str]]:
    """Pair line ``i`` of one file with line ``i`` of another; the two must have equally many lines."""
    sources, targets = read_lines(source_name, **kwargs), read_lines(target_name, **kwargs)
    if len(sources) != len(targets):
        raise ValueError(f"{source_name} has {len(sources)} lines but {target_name} has {len(targets)}; "
                         "they are not a parallel pair")
    return list(zip(sources, targets))


def _multi30k_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in MULTI30K_SPLITS:
        raise ValueError(f"unknown Multi30k split {split!r}; choose from {MULTI30K_SPLITS} (or 'valid', 'test')")
    return split


def load_multi30k(split: str = "train", src: str = "de", tgt: str = "en", **kwargs) -> list[tuple[str, str]]:
    """Multi30k sentence pairs ``(src, tgt)``; languages ``en``, ``de``, ``fr``.

    Splits: ``train`` (29,000), ``val``/``valid`` (1,014), ``test``/``test_2016_flickr`` (1,000), and the
    2017/2018 test sets. The raw text keeps its original casing and punctuation (no tokenisation).
    """
    split = _multi30k_split(split)
    for lang in (src, tgt):
        if lang not in ("en", "de", "fr"):
            raise ValueError(f"Multi30k has no language {lang!r}; choose from 'en', 'de', 'fr'")
    return load_parallel(f"multi30k/{split}.{src}.gz", f"multi30k/{split}.{tgt}.gz", **kwargs)


def load_tatoeba(lang: str = "epo", **kwargs) -> list[tuple[str, str]]:
    """The 1,000 Tatoeba test pairs ``(sentence in lang, English)``; ``lang`` is ``deu``, ``fra`` or ``epo``."""
    if lang not in ("deu", "fra", "epo"):
        raise ValueError(f"no Tatoeba set for {lang!r}; choose from 'deu', 'fra', 'epo'")
    return load_parallel(f"tatoeba/tatoeba.{lang}-eng.{lang}", f"tatoeba/tatoeba.{lang}-eng.eng", **kwargs)


def multi30k_dataset(split: str = "train", src: str = "de", tgt: str = "en", **kwargs):
    """The same pairs as :func:`load_multi30k` as a Hugging Face ``datasets.Dataset`` with columns ``src``, ``tgt``
    named after the languages (e.g. ``de`` and ``en``). Needs the ``datasets`` package."""
    try:
        from datasets import Dataset
    except ImportError as exc:
        raise ImportError("multi30k_dataset needs the `datasets` package: pip install datasets") from exc
    pairs = load_multi30k(split, src, tgt, **kwargs)
    return Dataset.from_dict({src: [s for s, _ in pairs], tgt: [t for _, t in pairs]})


# --- command line --------------------------------------------------------------------------------

def _where(entry: DataFile) -> str:
    """Where a file would come from, without hashing anything."""
    local = _local_dir()
    if local is not None and (local / entry.relpath).is_file():
        return "local"
    return "cached" if (cache_dir() / entry.relpath).is_file() else "download"


def _expand(names: list[str]) -> list[str]:
    if names == ["all"]:
        return list(DATA_FILES)
    relpaths = []
    for name in names:
        folder = [relpath for relpath, entry in DATA_FILES.items() if entry.dataset == name.strip("/")]
        relpaths += folder or [lookup(name).relpath]
    return relpaths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list every registered file and where it would come from")
    fetch = commands.add_parser("fetch", help="download files into the cache (or check local copies)")
    fetch.add_argument("names", nargs="+", help="a file path like multi30k/val.de.gz, a dataset folder, or 'all'")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(f"COURSE_DATA_DIR={_local_dir() or '(not set)'}  cache={cache_dir()}")
        for entry in DATA_FILES.values():
            print(f"{_where(entry):8}  {entry.size:>10,}  {entry.relpath}")
        return 0
    try:
        for relpath in _expand(args.names):
            print(data_path(relpath))
    except (ValueError, DataUnavailableError) as exc:  # ChecksumMismatchError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
