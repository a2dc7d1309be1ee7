"""Tests for the data loader (course_lib.data) and its registry (course_lib.data.registry).

Downloads go to a real HTTP server on 127.0.0.1 (a thread serving a temporary copy of a few
real files), never to the internet. The real data folder is found through COURSE_DATA_DIR, or
beside the checkout as ../shared/data; tests that need it are skipped where it is absent.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from course_lib.data import loader as data
from course_lib.data.registry import DATA_FILES

REPO = Path(__file__).resolve().parents[2]
# Read once at import, before any test's monkeypatching hides the variable.
SHARED = Path(os.environ.get("COURSE_DATA_DIR") or REPO.parent / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(), reason=f"no data folder at {SHARED}")

SMALL = "tatoeba/tatoeba.epo-eng.epo"  # 43 kB, UTF-8 with Esperanto letters
SMALL_GZ = "multi30k/val.de.gz"


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """An empty download cache and no data folder, mirror or offline switch from the outer environment."""
    for variable in ("COURSE_DATA_DIR", "COURSE_DATA_MIRROR", "COURSE_DATA_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DATA_TIMEOUT", "5")
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving ``root``; ``requests`` records every GET path."""
    root = tmp_path / "mirror"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}", requests=requests)
    httpd.shutdown()
    httpd.server_close()


def serve(server, relpath: str, content: bytes | None = None) -> bytes:
    """Put ``content`` (default: the real file from the data folder) on the server at ``relpath``."""
    body = (SHARED / relpath).read_bytes() if content is None else content
    (server.root / relpath).parent.mkdir(parents=True, exist_ok=True)
    (server.root / relpath).write_bytes(body)
    return body


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- registry --------------------------------------------------------------------------------------

@needs_shared
def test_registry_matches_sha256sums_and_sizes():
    listed = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        path = path.strip().removeprefix("./")
        if path != "SHA256SUMS":  # the file lists (the hash of an empty) itself
            listed[path] = digest
    assert {relpath: entry.sha256 for relpath, entry in DATA_FILES.items()} == listed
    for relpath, entry in DATA_FILES.items():
        assert (SHARED / relpath).stat().st_size == entry.size, relpath


def test_registry_urls_are_pinned_raw_github_files():
    for relpath, entry in DATA_FILES.items():
        url = urllib.parse.urlsplit(entry.url)
        owner, repo, ref, path = url.path.lstrip("/").split("/", 3)
        assert (url.scheme, url.netloc) == ("https", "raw.githubusercontent.com"), relpath
        assert f"{owner}/{repo}" == entry.repo and path == entry.upstream_path
        assert relpath.endswith(".gz") == path.endswith(".gz"), relpath
        is_commit = len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)
        # A file pinned to a tag rather than a commit must say so to the user.
        assert is_commit or entry.note, f"{relpath} is pinned to {ref!r} without a note"
    assert "rebuilt" in DATA_FILES["ud_english_ewt/en_ewt-ud-train.conllu"].note


@needs_shared
def test_every_registered_file_resolves_from_the_data_folder(cache, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED))
    monkeypatch.setenv("COURSE_DATA_OFFLINE", "1")  # a miss must fail, not download
    for relpath in DATA_FILES:
        assert data.data_path(relpath, progress=False) == SHARED / relpath
    assert files_under(cache) == []


def test_lookup_names_and_helpful_errors():
    assert data.lookup("tinyshakespeare").relpath == "tinyshakespeare/input.txt"
    assert data.lookup("/multi30k/val.de.gz").relpath == "multi30k/val.de.gz"
    with pytest.raises(ValueError, match=r"Did you mean 'multi30k/val\.de\.gz'"):
        data.lookup("multi30k/val.de")
    with pytest.raises(ValueError, match="dataset with 7 files"):
        data.lookup("tatoeba")


# --- finding and downloading -------------------------------------------------------------------------

@needs_shared
def test_local_folder_is_used_without_touching_the_network(cache, server, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED))
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    serve(server, SMALL)
    assert data.data_path(SMALL) == SHARED / SMALL
    assert server.requests == [] and files_under(cache) == []


@needs_shared
def test_download_verifies_then_second_call_uses_the_cache(cache, server, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url + "/")
    body = serve(server, SMALL)
    first = data.data_path(SMALL, progress=False)
    assert first == cache / SMALL and first.read_bytes() == body
    assert server.requests == [f"/{SMALL}"]
    assert data.data_path(SMALL, progress=False) == first
    assert server.requests == [f"/{SMALL}"]  # not fetched again
    assert files_under(cache) == [first]     # no temporary .part file left behind


@needs_shared
def test_base_url_argument_and_readonly_data_folder(cache, server, monkeypatch, tmp_path):
    empty_data_dir = tmp_path / "readonly"
    empty_data_dir.mkdir()
    monkeypatch.setenv("COURSE_DATA_DIR", str(empty_data_dir))
    serve(server, SMALL_GZ)
    assert data.read_lines(SMALL_GZ, base_url=server.url, progress=False)[0].startswith("Eine Gruppe von Männern")
    assert files_under(empty_data_dir) == []  # downloads never go into COURSE_DATA_DIR
    assert files_under(cache) == [cache / SMALL_GZ]


@needs_shared
@pytest.mark.parametrize("tamper", ["flip_one_byte", "truncate", "append"])
def test_checksum_mismatch_keeps_nothing(cache, server, monkeypatch, tamper):
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    good = (SHARED / SMALL).read_bytes()
    bad = {"flip_one_byte": good[:100] + bytes([good[100] ^ 1]) + good[101:],
           "truncate": good[:-10], "append": good + b"extra"}[tamper]
    serve(server, SMALL, bad)
    with pytest.raises(data.ChecksumMismatchError) as caught:
        data.data_path(SMALL, progress=False)
    message = str(caught.value)
    assert DATA_FILES[SMALL].sha256 in message and f"{server.url}/{SMALL}" in message
    if tamper != "append":  # an over-long download is cut off before it is fully hashed
        assert hashlib.sha256(bad).hexdigest() in message
    assert files_under(cache) == []


@needs_shared
def test_damaged_cache_copy_is_replaced(cache, server, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    body = serve(server, SMALL)
    (cache / SMALL).parent.mkdir(parents=True)
    (cache / SMALL).write_bytes(b"not the file")
    assert data.data_path(SMALL, progress=False).read_bytes() == body
    assert server.requests == [f"/{SMALL}"]


@needs_shared
def test_tampered_file_in_data_folder_is_an_error(cache, server, monkeypatch, tmp_path):
    local = tmp_path / "local"
    (local / SMALL).parent.mkdir(parents=True)
    (local / SMALL).write_bytes((SHARED / SMALL).read_bytes().replace(b"Tomo", b"Tomas"))
    monkeypatch.setenv("COURSE_DATA_DIR", str(local))
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    with pytest.raises(data.ChecksumMismatchError, match="COURSE_DATA_DIR") as caught:
        data.data_path(SMALL)
    assert str(local / SMALL) in str(caught.value) and DATA_FILES[SMALL].sha256 in str(caught.value)
    assert server.requests == []


def _assert_explains_how_to_fix(message: str, relpath: str, tried_url: str, cache: Path):
    entry = DATA_FILES[relpath]
    for needed in (relpath, tried_url, "COURSE_DATA_DIR", entry.url, str(cache / relpath), entry.sha256):
        assert needed in message, f"{needed!r} missing from:\n{message}"


def test_missing_on_server_gives_instructions(cache, server, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    with pytest.raises(data.DataUnavailableError) as caught:
        data.data_path(SMALL, progress=False)
    assert isinstance(caught.value, FileNotFoundError)
    assert "HTTP Error 404" in str(caught.value)
    _assert_explains_how_to_fix(str(caught.value), SMALL, f"{server.url}/{SMALL}", cache)
    assert files_under(cache) == []


def test_server_down_gives_instructions(cache, monkeypatch):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(data.DataUnavailableError, match="Connection refused") as caught:
        data.data_path(SMALL, base_url=url, progress=False)
    _assert_explains_how_to_fix(str(caught.value), SMALL, f"{url}/{SMALL}", cache)
    assert files_under(cache) == []


def test_silent_server_times_out(cache, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_TIMEOUT", "0.5")
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.perf_counter()
        with pytest.raises(data.DataUnavailableError, match="timed out"):
            data.data_path(SMALL, base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", progress=False)
    assert time.perf_counter() - start < 5
    assert files_under(cache) == []


def test_offline_switch_never_downloads(cache, server, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    monkeypatch.setenv("COURSE_DATA_OFFLINE", "1")
    with pytest.raises(data.DataUnavailableError, match="COURSE_DATA_OFFLINE"):
        data.data_path(SMALL)
    assert server.requests == []


@needs_shared
def test_verification_is_cached_until_the_file_changes(cache, monkeypatch, tmp_path):
    local = tmp_path / "local"
    (local / SMALL).parent.mkdir(parents=True)
    shutil.copyfile(SHARED / SMALL, local / SMALL)
    monkeypatch.setenv("COURSE_DATA_DIR", str(local))
    hashed: list[Path] = []
    real_hash = data._sha256_of_file
    monkeypatch.setattr(data, "_sha256_of_file", lambda path: hashed.append(path) or real_hash(path))
    for _ in range(3):
        data.data_path(SMALL)
    assert hashed == [local / SMALL]
    stat = (local / SMALL).stat()
    os.utime(local / SMALL, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "touched": check again
    data.data_path(SMALL)
    assert len(hashed) == 2


# --- reading -----------------------------------------------------------------------------------------

@pytest.fixture
def shared_only(cache, monkeypatch):
    if not (SHARED / "SHA256SUMS").is_file():
        pytest.skip(f"no data folder at {SHARED}")
    monkeypatch.setenv("COURSE_DATA_DIR", str(SHARED))
    monkeypatch.setenv("COURSE_DATA_OFFLINE", "1")


def test_gz_files_are_decompressed(shared_only):
    lines = data.read_lines(SMALL_GZ)
    assert len(lines) == 1014  # Multi30k validation size
    assert lines[0] == "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen"
    assert data.read_text(SMALL_GZ) == gzip.decompress((SHARED / SMALL_GZ).read_bytes()).decode("utf-8")


def test_trec_is_read_as_latin1(shared_only):
    lines = data.read_lines("sst2_trec/TREC.train")
    assert len(lines) == 5452
    assert any("sisterðcity" in line for line in lines)  # byte 0xF0, invalid as UTF-8
    with pytest.raises(UnicodeDecodeError):
        data.read_text("sst2_trec/TREC.train", encoding="utf-8")


def test_read_lines_keeps_a_last_line_without_newline(shared_only):
    raw = (SHARED / "gutenberg_en/pg11_alice_in_wonderland.txt").read_bytes()
    assert not raw.endswith(b"\n")
    lines = data.read_lines("gutenberg_en/pg11_alice_in_wonderland.txt")
    assert len(lines) == raw.count(b"\n") + 1 and lines[-1] == raw.rsplit(b"\n", 1)[1].decode()


def test_parallel_loaders(shared_only):
    sizes = {split: len(data.load_multi30k(split)) for split in ("train", "valid", "test")}
    assert sizes == {"train": 29000, "valid": 1014, "test": 1000}
    assert data.load_multi30k("val", "en", "fr")[0][0] == "A group of men are loading cotton onto a truck"
    pairs = data.load_tatoeba("epo")
    assert len(pairs) == 1000
    assert pairs[0] == ("Washington estis la plej fama viro en Usono.",
                        "Washington was the most famous man in the United States.")
    with pytest.raises(ValueError, match="not a parallel pair"):
        data.load_parallel(SMALL, SMALL_GZ)
    with pytest.raises(ValueError, match="unknown Multi30k split"):
        data.load_multi30k("dev")
    with pytest.raises(ValueError, match="no language 'cs'"):
        data.load_multi30k("val", "cs", "en")


def test_multi30k_as_a_datasets_table(shared_only):
    pytest.importorskip("datasets")
    table = data.multi30k_dataset("val", "de", "en")
    assert table.column_names == ["de", "en"] and table.num_rows == 1014
    assert (table[5]["de"], table[5]["en"]) == data.load_multi30k("val")[5]


# --- command line --------------------------------------------------------------------------------------

def test_cli_list_and_fetch(shared_only, capsys, server, monkeypatch):
    assert data.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert all("local" in line for line in listing.splitlines()[1:])
    assert all(relpath in listing for relpath in DATA_FILES)

    assert data.main(["fetch", "tatoeba"]) == 0
    assert capsys.readouterr().out.split() == [str(SHARED / r) for r in DATA_FILES if r.startswith("tatoeba/")]

    assert data.main(["fetch", "no/such/file"]) == 1
    assert "not a registered data file" in capsys.readouterr().err

    monkeypatch.delenv("COURSE_DATA_DIR")
    monkeypatch.delenv("COURSE_DATA_OFFLINE")
    monkeypatch.setenv("COURSE_DATA_MIRROR", server.url)
    assert data.main(["fetch", SMALL]) == 1  # not on the server: the instructions go to stderr
    assert "To fix it" in capsys.readouterr().err
    serve(server, SMALL)
    assert data.main(["fetch", SMALL]) == 0
    assert capsys.readouterr().out.strip() == str(data.cache_dir() / SMALL)


def test_cli_runs_as_a_module(shared_only):
    result = subprocess.run([sys.executable, "-m", "course_lib.data", "list"], capture_output=True, text=True,
                            cwd=REPO, env=os.environ.copy(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "multi30k/train.de.gz" in result.stdout
