"""`llama2c train`: llama2.c's train.py loop, with its knobs as plain values.

    llama2c train --data data --vocab-size 512 --preset 260K --out out/mymodel [--max_iters 2000 ...]
    torchrun --standalone --nproc_per_node 2 -m llama2c train ...   (DDP: gloo on CPU, nccl on GPU)

What it keeps from train.py: AdamW (decay on 2-D tensors), linear warmup then cosine decay to
min_lr, gradient accumulation, gradient clipping, evaluation every eval_interval over eval_iters
batches. What it adds:

- Batches are a pure function of the step: sample i of the training stream is chunk
  perm_epoch[i % n] (a seeded permutation per epoch), micro-batch k of step s on rank r reads
  samples of global micro-batch s * accumulation + k * world + r. So 2 processes with accumulation
  1 see exactly the batches of 1 process with accumulation 2, and a resumed run sees exactly the
  batches the uninterrupted run would have.
- OUT/ckpt.pt is the last checkpoint (written at every evaluation and on Ctrl-C), OUT/best.pt the
  one with the lowest validation loss; both atomically (a temporary file renamed into place).
  Starting again with the same OUT resumes from ckpt.pt.
- OUT/history.csv and OUT/loss.png: the loss curve, rewritten at every evaluation.
- A progress line with loss, tokens/s and time left.

The checkpoint is llama2.c's layout (model, optimizer, model_args, iter_num, best_val_loss,
config), so `llama2c export` reads ours and llama2.c's alike.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .model import ModelArgs, Transformer, strip_compile_prefix
from .pretokenize import read_meta, shards_dir
from .util import Progress, TrainError, atomic_write


@dataclass
class TrainConfig:
    # model (llama2.c's ModelArgs)
    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int = 6
    multiple_of: int = 32
    hidden_dim: int = 0  # 0: derived from dim and multiple_of, as llama2.c does
    max_seq_len: int = 256
    vocab_size: int = 0  # 0: the pretokenized data's vocabulary
    dropout: float = 0.0
    shared_classifier: bool = True
    # optimisation (train.py's defaults)
    batch_size: int = 128
    gradient_accumulation_steps: int = 4
    learning_rate: float = 5e-4
    max_iters: int = 100_000
    warmup_iters: int = 1000
    lr_decay_iters: int = 100_000
    min_lr: float = 0.0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # evaluation and logging
    eval_interval: int = 2000
    eval_iters: int = 100
    log_interval: int = 1
    # system
    dtype: str = "float32"  # float32, bfloat16 or float16 (float16 on CUDA only)
    # torch.compile, train.py's default. On 2 CPU cores here the training step ran 1.15x (260K)
    # and 1.23x (tiny) as fast as eager; compiling takes ~22 s the first time, ~4 s once PyTorch's
    # on-disk cache holds the kernels. Without a working compiler, training runs eager (one line).
    compile: bool = True
    seed: int = 1337
    device: str = ""  # "": cuda when present, else cpu

    def model_args(self) -> ModelArgs:
        return ModelArgs(dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
                         n_kv_heads=self.n_kv_heads, vocab_size=self.vocab_size,
                         hidden_dim=self.hidden_dim or None, multiple_of=self.multiple_of,
                         max_seq_len=self.max_seq_len, dropout=self.dropout,
                         shared_classifier=self.shared_classifier)


# Presets named after the published models (llama2.c's README and its stories260K recipe), and
# `tiny`: a model that learns something visible in a few minutes on 2 CPU cores.
PRESETS: dict[str, dict] = {
    "260K": dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, multiple_of=4, max_seq_len=512,
                 vocab_size=512, batch_size=128, gradient_accumulation_steps=1,
                 learning_rate=1e-3, dropout=0.05, weight_decay=0.01, beta2=0.99),
    "15M": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, max_seq_len=256, vocab_size=32000),
    "42M": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, max_seq_len=1024, vocab_size=32000,
                batch_size=32, gradient_accumulation_steps=16),
    "110M": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, max_seq_len=1024,
                 vocab_size=32000, batch_size=32, gradient_accumulation_steps=16),
    # tiny: on the tests' story grammar, 2 layers at lr 4e-3 reach a lower loss in 200 steps than
    # 4 layers at 2e-3 or 4e-3 (0.450 vs 0.484 and 0.458), in 0.8x the time of 4 layers.
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, max_seq_len=128,
                 batch_size=32, gradient_accumulation_steps=1, learning_rate=4e-3,
                 max_iters=600, warmup_iters=30, lr_decay_iters=600, min_lr=2e-4,
                 weight_decay=0.01, beta2=0.99, eval_interval=100, eval_iters=10, log_interval=10),
}


def make_config(preset: str | None, overrides: dict) -> TrainConfig:
    if preset is not None and preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    values = {**(PRESETS[preset] if preset else {}), **overrides}
    return TrainConfig(**values)


def get_lr(it: int, c: TrainConfig) -> float:
    """train.py's schedule: linear warmup from 0, cosine decay to min_lr, then min_lr."""
    if it < c.warmup_iters:
        return c.learning_rate * it / c.warmup_iters
    if it > c.lr_decay_iters:
        return c.min_lr
    ratio = (it - c.warmup_iters) / max(1, c.lr_decay_iters - c.warmup_iters)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)


# -- data --------------------------------------------------------------------------------------------

class Chunks:
    """Every (T+1)-token chunk of some uint16 shards: chunk starts ix * T for ix < len // T - 1,
    as llama2.c's loader takes them (no document masking)."""

    def __init__(self, files: list[Path], seq_len: int):
        self.seq_len = seq_len
        # plain ndarray views of the maps: slicing an np.memmap builds a memmap object per slice
        # (about 3 us each, 32 per tiny batch); slicing an ndarray costs a tenth of that
        self.data = [np.asarray(np.memmap(f, dtype=np.uint16, mode="r")) for f in files]
        self.index = np.array([(s, ix * seq_len) for s, d in enumerate(self.data)
                               for ix in range(len(d) // seq_len - 1)], dtype=np.int64)
        if len(self.index) == 0:
            raise TrainError(f"{', '.join(f.name for f in files)}: fewer than {2 * seq_len} tokens, "
                             f"too little for max_seq_len {seq_len}")

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([self.data[s][i:i + self.seq_len + 1] for s, i in self.index[samples]])
        rows = torch.from_numpy(rows.astype(np.int64))
        return rows[:, :-1], rows[:, 1:]


class TrainStream:
    """Sample i of the training stream: epoch i // n, then a seeded permutation of the n chunks."""

    def __init__(self, chunks: Chunks, seed: int):
        self.chunks, self.seed = chunks, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks)))
        return self._perm[1]

    def samples(self, first: int, count: int) -> np.ndarray:
        """Chunk numbers of samples first ... first + count - 1 of the stream."""
        n = len(self.chunks)
        i = np.arange(first, first + count)
        out = np.empty(count, dtype=np.int64)
        for epoch in range(first // n, (first + count - 1) // n + 1):  # usually one epoch
            here = i // n == epoch
            out[here] = self._permutation(epoch)[i[here] % n]
        return out

    def batch(self, micro: int, batch_size: int):
        """Global micro-batch number `micro`: samples micro * batch_size ... + batch_size - 1."""
        return self.chunks.batch(self.samples(micro * batch_size, batch_size))


# -- checkpoints and history ---------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Writes a temporary file and renames it over `path`: a full disk or a crash leaves the
    previous checkpoint whole."""
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except OSError as e:
        raise TrainError(f"cannot write {path}: {e.strerror or e}") from None
    except RuntimeError as e:  # torch's zip writer reports a short write as an "enforce fail"
        raise TrainError(f"cannot write {path}: the write failed (disk full?): "
                         f"{str(e).splitlines()[0]}") from None


def write_history(out: Path, history: list[dict]) -> None:
    """history.csv (one row per logged step) and loss.png (train and validation loss)."""
    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, ["iter", "train_loss", "val_loss", "lr", "tokens_per_s"])
            writer.writeheader()
            writer.writerows(history)
    atomic_write(out / "history.csv", write_csv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(h["iter"], h["train_loss"]) for h in history if h["train_loss"] != ""]
    val = [(h["iter"], h["val_loss"]) for h in history if h["val_loss"] != ""]
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(out / "loss.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def compatible(saved: dict, config: TrainConfig) -> None:
    """A resumed checkpoint must have the model this config asks for."""
    saved_args = ModelArgs.from_dict(saved["model_args"])
    wanted = config.model_args()
    for name in ("dim", "n_layers", "n_heads", "kv_heads", "vocab_size", "ffn_dim", "max_seq_len",
                 "shared_classifier"):
        a, b = getattr(saved_args, name), getattr(wanted, name)
        if a != b:
            raise TrainError(f"the checkpoint to resume has {name} {a} but the config asks for "
                             f"{b} (checkpoint shape does not match the config; use another --out)")


# -- the loop -------------------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; then gloo on CPU, nccl on CUDA."""
    if "RANK" not in os.environ:
        return Dist()
    import torch.distributed as dist
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ["WORLD_SIZE"]))


def compile_unavailable(device: str) -> str | None:
    """Why torch.compile cannot work here (its first step would fail), or None when it can: a
    two-operation function compiled for `device` exercises the whole toolchain (on CPU a C++
    compiler and Python's headers) in a few seconds, once; PyTorch caches the result on disk."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4, device=device))
    except Exception as e:  # noqa: BLE001 - any failure means the same: train eager
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def train(config: TrainConfig, data_dir: str | Path, out_dir: str | Path,
          progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict:
    """Trains (or resumes) and returns the last evaluation {iter, train_loss, val_loss}.
    on_step(iteration) is called after each optimizer step (the benchmark times steps with it)."""
    c = config
    device = c.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist_info = setup_distributed(device)
    if device == "cuda" and dist_info.world > 1:
        device = f"cuda:{dist_info.local_rank}"
    try:
        return _train(c, Path(data_dir), Path(out_dir), device, dist_info, progress, on_step)
    finally:
        if dist_info.world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()


def _train(c: TrainConfig, data_dir: Path, out: Path, device: str, d: Dist, progress: bool,
           on_step: Callable[[int], None] | None) -> dict:
    # data
    if c.vocab_size == 0:
        metas = sorted(data_dir.glob("tok*/meta.json"))
        if len(metas) != 1:
            raise TrainError(f"give --vocab_size: {data_dir} holds {len(metas)} pretokenized vocabularies")
        c.vocab_size = read_meta(metas[0].parent)["vocab_size"]
    folder = shards_dir(data_dir, c.vocab_size)
    meta = read_meta(folder)
    train_files = sorted(folder.glob("train_*.bin"))
    if not train_files:
        raise TrainError(f"no training shards in {folder}")
    train_stream = TrainStream(Chunks(train_files, c.max_seq_len), c.seed)
    val_chunks = Chunks([folder / "val.bin"], c.max_seq_len)
    if c.gradient_accumulation_steps % d.world:
        raise TrainError(f"gradient_accumulation_steps {c.gradient_accumulation_steps} is not a "
                         f"multiple of the {d.world} processes")
    local_accum = c.gradient_accumulation_steps // d.world
    tokens_per_iter = c.gradient_accumulation_steps * c.batch_size * c.max_seq_len

    # model, optimizer, resume
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # a write that a crash interrupted
        if d.master:
            stale.unlink(missing_ok=True)
    torch.manual_seed(c.seed)
    model_args = c.model_args()
    try:
        model_args.config().validate()
    except Exception as e:
        raise TrainError(str(e)) from None
    model = Transformer(model_args).to(device)
    optimizer = model.configure_optimizer(c.weight_decay, c.learning_rate, (c.beta1, c.beta2))
    start, best_val, history = 0, float("inf"), []
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location=device, weights_only=False)
        compatible(saved, c)
        from .export import load_state
        load_state(model, strip_compile_prefix(saved["model"]), str(ckpt_path))
        optimizer.load_state_dict(saved["optimizer"])
        start, best_val = saved["iter_num"], saved["best_val_loss"]
        history = [h for h in saved.get("history", []) if h["iter"] <= start]
        if d.master and progress:
            print(f"resuming from {ckpt_path} at iteration {start}", flush=True)
    if d.master:
        (out / "tokenizer.txt").write_text(meta["tokenizer"] + "\n")
    raw_model = model
    if c.compile:
        unavailable = compile_unavailable(device)
        if unavailable is None:
            model = torch.compile(model)
        elif d.master:
            print(f"warning: training without torch.compile: {unavailable}", flush=True)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(model, device_ids=[d.local_rank] if device.startswith("cuda") else None)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[c.dtype]
    autocast = (contextlib.nullcontext() if ptdtype == torch.float32
                else torch.autocast(device_type=device_type, dtype=ptdtype))
    scaler = torch.amp.GradScaler(device_type, enabled=(c.dtype == "float16"))

    @torch.inference_mode()  # no autograd bookkeeping at all, unlike no_grad
    def evaluate() -> float:
        """Mean loss over eval_iters fixed validation batches (the same on every rank)."""
        raw_model.eval()
        losses = []
        for k in range(c.eval_iters):
            samples = (np.arange(c.batch_size) + k * c.batch_size) % len(val_chunks)
            x, y = (t.to(device) for t in val_chunks.batch(samples))
            with autocast:
                losses.append(raw_model(x, y)[1].item())
        raw_model.train()
        return float(np.mean(losses))

    def checkpoint(it: int) -> dict:
        return {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "model_args": model_args.to_dict(), "iter_num": it, "best_val_loss": best_val,
                "config": asdict(c), "history": history}

    bar = Progress(c.max_iters, "train", "", progress and d.master)
    bar.update(start, force=True)
    last = {"iter": start, "train_loss": float("nan"), "val_loss": best_val}
    started, tokens_done = time.monotonic(), 0
    completed = start  # iterations whose optimizer step has been taken
    shown_loss = float("nan")  # the training loss of the last logged step, for the progress line
    try:
        for it in range(start, c.max_iters):
            lr = get_lr(it, c)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # the step's loss stays a tensor: reading it (.item(), or an all_reduce in DDP) waits
            # for the device, so that happens on logged steps only, as in llama2.c's train.py
            step_loss = torch.zeros((), device=device)
            for k in range(local_accum):
                x, y = (t.to(device) for t in train_stream.batch(
                    it * c.gradient_accumulation_steps + k * d.world + d.rank, c.batch_size))
                sync = d.world == 1 or k == local_accum - 1
                with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                    _, loss = model(x, y)
                    loss = loss / local_accum
                scaler.scale(loss).backward()
                step_loss += loss.detach()
            if c.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            completed = done = it + 1
            if on_step is not None:
                on_step(done)
            tokens_done += tokens_per_iter
            evaluating = done % c.eval_interval == 0 or done == c.max_iters
            logged = evaluating or done % c.log_interval == 0
            if logged:
                if d.world > 1:  # the loss of the global batch: the mean over processes
                    import torch.distributed as dist
                    dist.all_reduce(step_loss)
                    step_loss /= d.world
                shown_loss = step_loss.item()
            rate = tokens_done / max(time.monotonic() - started, 1e-9)
            message = f"loss {shown_loss:.4f} {rate:,.0f} tok/s lr {lr:.2e}"
            if not logged:
                bar.update(done, message)
                continue
            row = {"iter": done, "train_loss": shown_loss, "val_loss": "", "lr": lr,
                   "tokens_per_s": round(rate)}
            if evaluating:
                row["val_loss"] = evaluate()
                last = {"iter": done, "train_loss": shown_loss, "val_loss": row["val_loss"]}
            history.append(row)
            if evaluating and d.master:
                improved = row["val_loss"] < best_val
                best_val = min(best_val, row["val_loss"])
                save_checkpoint(ckpt_path, checkpoint(done))
                if improved:
                    save_checkpoint(out / "best.pt", checkpoint(done))
                write_history(out, history)
            bar.update(done, message, force=evaluating)
    except KeyboardInterrupt:
        if d.master and d.world == 1 and completed > start:
            bar.close()
            history[:] = [h for h in history if h["iter"] <= completed]
            save_checkpoint(ckpt_path, checkpoint(completed))
            print(f"\ninterrupted: saved {ckpt_path} at iteration {completed}; run again to resume",
                  flush=True)
        raise
    bar.close()
    return last


def config_fields() -> list[tuple[str, type, object]]:
    """(name, type, default) of every knob, for the command line."""
    return [(f.name, type(f.default), f.default) for f in fields(TrainConfig)]
