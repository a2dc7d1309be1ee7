"""The course's datasets: found in ``COURSE_DATA_DIR``, the download cache, or downloaded and checked.

:mod:`.loader` finds and reads the files (``python -m course_lib.data list`` / ``fetch NAME``);
:mod:`.registry` lists every file with its canonical URL (a pinned commit), licence and SHA-256.
"""
from .loader import (
    MULTI30K_SPLITS, ChecksumMismatchError, DataUnavailableError, cache_dir, data_path, load_multi30k, load_parallel,
    load_tatoeba, lookup, main, multi30k_dataset, read_lines, read_text, source_url,
)
from .registry import DATA_FILES, GITHUB_RAW, DataFile

__all__ = [
    "DATA_FILES", "GITHUB_RAW", "MULTI30K_SPLITS", "ChecksumMismatchError", "DataFile", "DataUnavailableError",
    "cache_dir", "data_path", "load_multi30k", "load_parallel", "load_tatoeba", "lookup", "main", "multi30k_dataset",
    "read_lines", "read_text", "source_url",
]
