"""The course GPT's training loop, on one process or many: what ``scripts/train_gpt.py`` runs.

* **Launching.** :func:`~course_lib.distributed.launch.setup_process_group` reads torchrun's (or ``accelerate
  launch``'s) environment; without one the run is a plain single process (world size 1), as before.
* **Data.** Every rank holds the same seeded generator and draws the same *global* batch of
  ``world_size × batch_size`` window starts; rank ``r`` keeps rows ``r·B … (r+1)·B − 1``
  (:func:`rank_windows`). Each rank trains on a different slice, the generator's state *is* the data position
  (the same on every rank), and one process with ``world_size × batch_size`` draws the same windows.
* **Model.** Built from one seed on every rank, then wrapped in torch's ``DistributedDataParallel`` (the production
  path; :mod:`.data_parallel` builds it from scratch). Dropout draws from each rank's own stream.
* **Writing.** Rank 0 alone prints, logs, evaluates, writes the checkpoint, the tokenizer and the record.
* **Resuming** (:mod:`.training_state`): full-precision weights, optimizer state, step, tokens,
  elapsed time, the data generator and every rank's RNG state. With a step budget (``steps``) the learning rate
  follows the step, so 2N steps equal N steps + resume + N steps exactly (tested under 1 and 2 processes); with a
  wall-clock budget the schedule follows time and a resumed run is only close.

Not covered: data parallelism from scratch, sharded optimizer state, mixed precision.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..data import read_text
from ..models.gpt import GPT, GPTConfig
from ..runtime import CHECKPOINT_DIR
from ..tokenization import ByteLevelBPE, train_bpe
from .launch import setup_process_group, teardown
from .training_state import load_state, save_state

__all__ = ["MODELS", "TrainSettings", "Corpus", "load_corpus", "rank_windows", "cosine_learning_rate",
           "validation_loss", "train", "load_tokenizer"]

END_OF_TEXT = "<|endoftext|>"
# "small" is the shipped Shakespeare GPT (about 1.1 M parameters); "tiny" is for tests and quick checks.
MODELS = {
    "small": dict(context_length=256, dim=128, num_layers=4, num_heads=4, dropout=0.1),
    "tiny": dict(context_length=32, dim=32, num_layers=1, num_heads=2, dropout=0.1),
}


@dataclass
class TrainSettings:
    minutes: float = 15.0  # wall-clock budget of the training loop (when ``steps`` is None)
    steps: int | None = None  # a step budget instead: the schedule follows the step and runs repeat exactly
    stop_after: int | None = None  # stop after this many steps (an interruption), on the full budget's schedule
    batch_size: int = 8  # per process; the global batch is world_size × batch_size
    lr: float = 3e-3
    eval_every: float = 60.0  # seconds between validation losses (rank 0)
    model: str = "small"
    vocab_size: int = 2048
    corpus_chars: int | None = None  # train on the corpus's first characters only (tests)
    seed: int = 0
    threads: int = 1
    out_dir: Path = CHECKPOINT_DIR
    name: str = "gpt_shakespeare"
    dry_run: bool = False  # no checkpoint, no tokenizer files
    log: Path | None = None  # rank 0 appends every printed line here
    record: Path | None = None  # rank 0 writes the training record here as JSON
    state: Path | None = None  # the resumable state is written here at the end
    state_every: int | None = None  # and every this many steps too, so a crash loses at most that many
    resume: Path | None = None  # a state to start from
    sample_tokens: int = 80  # rank 0 prints a sample of this many tokens at the end
    final_eval_windows: int = 10_000  # windows of the final validation loss (the whole validation part)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.state_every is not None and (self.state_every < 1 or self.state is None):
            raise ValueError(f"state_every must be at least 1 and needs a state file to write (--state), "
                             f"got state_every={self.state_every}, state={self.state}")


class Corpus(NamedTuple):
    tokenizer: ByteLevelBPE
    train_ids: torch.Tensor  # (N_train,)
    val_ids: torch.Tensor  # (N_val,)
    val_chars: int


def load_corpus(vocab_size: int, corpus_chars: int | None = None) -> Corpus:
    """Tiny Shakespeare cut between two speeches at 90 %, a byte-level BPE trained on the training part, both encoded.
    Deterministic, so every rank builds the same vocabulary itself (no file to share)."""
    text = read_text("tinyshakespeare/input.txt")
    if corpus_chars is not None:
        if corpus_chars < 2000:
            raise ValueError(f"corpus_chars={corpus_chars} is too small: use at least 2000 characters")
        text = text[:corpus_chars]
    split = text.rfind("\n\n", 0, int(0.9 * len(text))) + 2  # between two speeches
    tokenizer = train_bpe([text[:split]], vocab_size, special_tokens=[END_OF_TEXT])
    train_ids = torch.tensor(tokenizer.encode(text[:split]), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(text[split:]), dtype=torch.long)
    return Corpus(tokenizer, train_ids, val_ids, len(text) - split)


def rank_windows(ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator,
                 rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's ``batch_size`` windows of one global draw of ``world_size × batch_size``: inputs, targets ``(B, T)``.
    Every rank must call it with the generator in the same state (same seed, same number of calls)."""
    if len(ids) <= context + 1:
        raise ValueError(f"{len(ids)} tokens are too few for windows of {context + 1}")
    starts = torch.randint(0, len(ids) - context - 1, (world_size * batch_size,), generator=generator)
    mine = starts[rank * batch_size:(rank + 1) * batch_size]
    windows = torch.stack([ids[s:s + context + 1] for s in mine.tolist()])  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def cosine_learning_rate(progress: float, peak: float, warmup: float = 0.03) -> float:
    """Linear warm-up over the first 3 % of the budget, then a cosine down to 10 % of the peak."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return peak * progress / warmup
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))))


@torch.no_grad()
def validation_loss(model: GPT, ids: torch.Tensor, context: int, max_windows: int = 64) -> float:
    """Mean next-token cross-entropy (nats per token) over consecutive non-overlapping windows."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    count = min(max_windows, (len(ids) - 1) // context)
    inputs = ids[: count * context].view(count, context).to(device)
    targets = ids[1: count * context + 1].view(count, context).to(device)
    losses = [F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item()
              for x, y in zip(inputs.split(16), targets.split(16))]
    model.train(was_training)
    return sum(losses) / len(losses)


# What a resumed run must share with the saved one for the continuation to mean anything.
_RESUME_MUST_MATCH = ("steps", "batch_size", "lr", "model", "vocab_size", "corpus_chars", "seed", "minutes")


class _Rank0Log:
    """Prints (and appends to ``path``) on rank 0 only; other ranks stay silent."""

    def __init__(self, enabled: bool, path: Path | None):
        self.enabled, self.path = enabled, path

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(line + "\n")


def _agreed(value: float, world_size: int, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank: ranks must agree on the learning rate and on when a timed run stops."""
    if world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.item()


def train(settings: TrainSettings) -> dict | None:
    """Train (one process, or one rank of many) and return the training record on rank 0 (None elsewhere).
    Joins torchrun's process group, or the caller's if one is open already (then leaves it open, for the next run)."""
    owns_group = not dist.is_initialized()
    rank, world_size, device = setup_process_group()
    try:
        return _train(settings, rank, world_size, device)
    finally:
        if owns_group:
            teardown()


def _train(settings: TrainSettings, rank: int, world_size: int, device: torch.device) -> dict | None:
    torch.set_num_threads(settings.threads)
    log = _Rank0Log(rank == 0, settings.log)
    torch.manual_seed(settings.seed)  # the same initial weights on every rank
    generator = torch.Generator().manual_seed(settings.seed)  # the data position: the same on every rank
    start = time.perf_counter()
    corpus = load_corpus(settings.vocab_size, settings.corpus_chars)
    log(f"tokenizer: {corpus.tokenizer} in {time.perf_counter() - start:.1f} s; "
        f"{len(corpus.train_ids):,} training and {len(corpus.val_ids):,} validation tokens")

    core = GPT(GPTConfig(vocab_size=len(corpus.tokenizer), **MODELS[settings.model])).to(device)
    if rank > 0:
        torch.manual_seed(settings.seed + rank)  # each rank's own dropout masks (rank 0 keeps the seed's stream)
    context = core.config.context_length
    log(f"model: {core.num_parameters:,} parameters, config {core.config}")
    decay = [p for p in core.parameters() if p.dim() >= 2]
    no_decay = [p for p in core.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.95))
    resumable = {key: getattr(settings, key) for key in _RESUME_MUST_MATCH}
    progress = dict(step=0, tokens=0, elapsed=0.0, eval_seconds=0.0, history=[], settings=resumable)
    if settings.resume is not None:
        progress = load_state(settings.resume, core, optimizer, generator, rank, world_size, device)
        changed = {k: (progress["settings"][k], v) for k, v in resumable.items() if progress["settings"][k] != v}
        if changed:
            raise ValueError(f"{settings.resume} was saved with other settings (saved, now): {changed}")
        log(f"resumed from {settings.resume} at step {progress['step']}")
    model = core
    if world_size > 1:  # gradients averaged across ranks during backward, in buckets
        model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    log(f"{world_size} process(es) on {device}; {settings.batch_size} windows per process, "
        f"global batch {world_size * settings.batch_size}")

    def progress_now() -> dict:  # what a state records of the run so far (a resumed run goes on from it)
        return dict(step=step, tokens=tokens, elapsed=time.perf_counter() - start, eval_seconds=eval_seconds,
                    history=history, settings=resumable)

    def save(progress: dict) -> None:
        save_state(settings.state, core, optimizer, generator, progress, rank, world_size, device)
        log(f"wrote the resumable state at step {step} to {settings.state}")

    budget = settings.minutes * 60
    step, tokens, history = progress["step"], progress["tokens"], progress["history"]
    eval_seconds = progress["eval_seconds"]
    start = time.perf_counter() - progress["elapsed"]
    last_eval = time.perf_counter()
    model.train()
    while True:
        elapsed = _agreed(time.perf_counter() - start, world_size, device)
        if settings.stop_after is not None and step >= settings.stop_after:
            break
        if settings.steps is not None:
            if step >= settings.steps:
                break
            fraction = step / settings.steps
        else:
            if elapsed >= budget:
                break
            fraction = elapsed / budget
        for group in optimizer.param_groups:
            group["lr"] = cosine_learning_rate(fraction, settings.lr)
        inputs, targets = rank_windows(corpus.train_ids, settings.batch_size, context, generator, rank, world_size)
        inputs, targets = inputs.to(device), targets.to(device)
        loss = F.cross_entropy(model(inputs).logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP, the gradients arrive averaged over the ranks
        torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
        optimizer.step()
        step, tokens = step + 1, tokens + world_size * inputs.numel()
        if rank == 0 and time.perf_counter() - last_eval >= settings.eval_every:
            evaluation_start = time.perf_counter()
            val = validation_loss(core, corpus.val_ids, context)
            last_eval = time.perf_counter()
            eval_seconds += last_eval - evaluation_start
            history.append((step, round(elapsed, 1), round(loss.item(), 4), round(val, 4)))
            log(f"{elapsed / 60:5.1f} min  step {step:5d}  train loss {loss.item():.3f}  val loss {val:.3f}  "
                f"({tokens / max(elapsed - eval_seconds, 1e-9):,.0f} tokens/s)")
        if settings.state_every and step % settings.state_every == 0 and step not in (settings.steps,
                                                                                      settings.stop_after):
            save(progress_now())  # a periodic state (the last step's is written after the loop)
    progress = progress_now()
    if settings.state is not None:
        save(progress)
    if rank != 0:
        return None
    return _finish(settings, core, corpus, progress, world_size, device, log)


def _finish(settings: TrainSettings, model: GPT, corpus: Corpus, progress: dict, world_size: int,
            device: torch.device, log: _Rank0Log) -> dict:
    """Rank 0: the final validation loss, the record, the checkpoint and tokenizer, a sample."""
    model.eval()
    val = validation_loss(model, corpus.val_ids, model.config.context_length, settings.final_eval_windows)
    step, tokens, seconds = progress["step"], progress["tokens"], progress["elapsed"]
    training_seconds = seconds - progress["eval_seconds"]
    log(f"trained {step} steps ({tokens:,} tokens, {tokens / len(corpus.train_ids):.1f} epochs) in "
        f"{seconds / 60:.1f} min; validation loss {val:.4f} nats/token (perplexity {math.exp(val):.1f})")
    record = dict(steps=step, seconds=round(seconds, 1), tokens=tokens, val_loss=round(val, 4),
                  history=progress["history"], batch_size=settings.batch_size, lr=settings.lr,
                  threads=settings.threads, vocab_size=settings.vocab_size, val_chars=corpus.val_chars,
                  world_size=world_size, global_batch_size=world_size * settings.batch_size,
                  backend=dist.get_backend() if dist.is_initialized() else None, device=str(device),
                  model=settings.model, training_seconds=round(training_seconds, 3),
                  tokens_per_second=round(tokens / max(training_seconds, 1e-9), 1))
    if not settings.dry_run:
        out = Path(settings.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{settings.name}.pt"
        model.save(path, training=record)
        corpus.tokenizer.save(out, prefix=settings.name)
        log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and the tokenizer files")
    if settings.record is not None:
        Path(settings.record).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.record).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if settings.sample_tokens:
        from ..decoding import generate

        prompt = torch.tensor([corpus.tokenizer.encode("ROMEO:\n")], device=device)
        sample = generate(model, prompt, max_new_tokens=settings.sample_tokens, do_sample=True, top_k=50,
                          temperature=0.8, seed=0)
        log("sample:\n" + corpus.tokenizer.decode(sample[0].tolist()))
    return record


def load_tokenizer(out_dir: Path = CHECKPOINT_DIR, name: str = "gpt_shakespeare") -> ByteLevelBPE:
    """The tokenizer a run wrote beside its checkpoint."""
    return ByteLevelBPE.load(Path(out_dir) / f"{name}-vocab.json", Path(out_dir) / f"{name}-merges.txt",
                             special_tokens=[END_OF_TEXT])
