"""Time our decoding against HF ``generate`` on the same small GPT weights, on the CPU.

    python scripts/bench_decoding.py               # the shipped Shakespeare GPT, 1 thread
    python scripts/bench_decoding.py --random      # random weights of the same shape (no checkpoint needed)

For batch 1 and 8 (prompts of different lengths, left-padded), 64 new tokens, greedy and beam
search with 4 beams: our :func:`course_lib.decoding.generate` on :class:`course_lib.models.gpt.GPT` and
``GPT2LMHeadModel.generate`` on the same weights (:meth:`GPT.to_hf`). Outputs are asserted
identical; each timing is the best of ``--repeats`` runs (CPU time of the one
decoding thread, so other load on a shared machine distorts it less), ours and HF's interleaved so both see
the same machine load. Prints the ratio ours / HF (goal ≤ 0.7). A script, not a test: timings
depend on the machine.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib.decoding import generate
from course_lib.models.gpt import GPT, SHAKESPEARE_CHECKPOINT, GPTConfig, load_shakespeare_gpt

PROMPTS = ["ROMEO:\n", "First Citizen:\nBefore we proceed any further, hear me speak.\n", "KING RICHARD II:\nNo",
           "JULIET:\nO Romeo, Romeo!", "MENENIUS:\nWhat work's, my countrymen, in hand? Where go you\n",
           "Thou", "GLOUCESTER:\nNow is the winter of our discontent\n", "To be, or not"]


def batch_of(tokenizer, size):
    encoded = [tokenizer.encode(p) for p in PROMPTS[:size]] if tokenizer else \
        [list(range(3, 3 + 4 + 3 * i)) for i in range(size)]
    longest = max(map(len, encoded))
    ids = torch.tensor([[0] * (longest - len(e)) + e for e in encoded])  # left padding
    mask = torch.tensor([[0] * (longest - len(e)) + [1] * len(e) for e in encoded])
    return ids, mask


def best_time(fn, repeats):
    # CPU time of this thread, not wall time: on a shared machine wall time mostly measures the
    # neighbours. With one torch thread all the work happens on this thread.
    times, out = [], None
    for _ in range(repeats):
        start = time.thread_time()
        out = fn()
        times.append(time.thread_time() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="random weights instead of the checkpoint")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging
    logging.set_verbosity_error()

    if args.threads != 1:
        parser.error("timings are CPU time of one thread: keep --threads 1")
    if args.random or not SHAKESPEARE_CHECKPOINT.exists():
        torch.manual_seed(0)
        ours, tokenizer = GPT(GPTConfig(vocab_size=2048, context_length=256, dim=128, num_layers=4, num_heads=4)), None
    else:
        ours, tokenizer = load_shakespeare_gpt()
    ours.eval()
    hf = ours.to_hf()
    eos = tokenizer.special_tokens["<|endoftext|>"] if tokenizer else 2047
    print(f"model: {ours.num_parameters:,} parameters ({'random' if tokenizer is None else 'Shakespeare'}), "
          f"{args.threads} thread(s), {args.new_tokens} new tokens, best of {args.repeats}")
    print(f"{'batch':>5} {'method':>8} {'ours (s)':>9} {'HF (s)':>9} {'ratio':>6}")
    for size in (1, 8):
        ids, mask = batch_of(tokenizer, size)
        for name, kwargs in (("greedy", {}), ("beam-4", dict(num_beams=4))):
            def run_ours():
                return generate(ours, ids, mask, max_new_tokens=args.new_tokens, eos_token_id=eos,
                                pad_token_id=0, **kwargs)

            def run_hf():
                with torch.no_grad():
                    return hf.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False,
                                       eos_token_id=eos, pad_token_id=0, **kwargs)

            run_ours(), run_hf()  # warm-up
            ours_times, hf_times = [], []
            for _ in range(args.repeats):  # interleaved, so both see the same load
                t, ours_out = best_time(run_ours, 1)
                ours_times.append(t)
                t, hf_out = best_time(run_hf, 1)
                hf_times.append(t)
            assert torch.equal(ours_out, hf_out), f"outputs differ for batch {size}, {name}"
            t_ours, t_hf = min(ours_times), min(hf_times)
            print(f"{size:>5} {name:>8} {t_ours:9.3f} {t_hf:9.3f} {t_ours / t_hf:6.2f}", flush=True)
    if tokenizer:
        print("beam-4 sample:", repr(tokenizer.decode(ours_out[0, ids.shape[1]:].tolist())[:300]))


if __name__ == "__main__":
    main()
