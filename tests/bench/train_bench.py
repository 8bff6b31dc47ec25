"""Training speed: `llama2c train`'s loop against plain eager PyTorch loops of the same model.

    python tests/bench/train_bench.py [RUNS]        (or `invoke bench --train`)

For the 260K and tiny presets' shapes, each run is a fresh process (so peak memory is its own)
training WARMUP + STEPS steps on random tokens:

    ours     llama2c.train.loop.train(): the real loop (data stream, AdamW, clipping, schedule)
             over pretokenized shards written for the run, as `llama2c train` runs it: with
             torch.compile (its one-off compile time is in the warm-up time, shown apart, with
             the loop's set-up)
    plain    the same Transformer and batch in the plainest eager loop: forward, loss, backward,
             AdamW step (no clipping, no data pipeline)
    eager    ours with `--compile false`
    naive    plain, with attention written out as matmul + mask + softmax instead of PyTorch's
             scaled_dot_product_attention kernel (what the attention kernel buys)
    paired   ours and plain in one process, one step of each in turn (ours / plain, interleaved):
             the ratio that a burst of other work on a shared machine moves least

A run's speed is tokens per step over its median step time after WARMUP steps: the median, not
the mean, because other work on a shared machine stalls single steps for up to seconds (in one
tiny run here the mean step was 10x the median: 679 vs 67 ms). Runs alternate (ours, plain, eager,
naive, paired, ours, ...) so the load falls on all of them; ratios are medians of the
per-round ratios. FLOP/s counts 6 per parameter per token plus attention
(Transformer.flops_per_token, llama2.c's estimate) and is shown as a share of this machine's fp32
matmul peak, measured in the same run (1024 x 1024 matmuls, best of 20).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS, WARMUP = 20, 2
# The presets' model shapes with batches that fit a 2-core CPU run (4096 tokens per step).
SHAPES = {
    "260K": dict(batch_size=8, max_seq_len=512),
    "tiny": dict(batch_size=32, max_seq_len=128),
}


def _config(preset: str):
    from llama2c.train.loop import make_config
    return make_config(preset, {**SHAPES[preset], "vocab_size": 512, "dropout": 0.0,
                                "max_iters": WARMUP + STEPS, "eval_interval": 10**9, "eval_iters": 1, "log_interval": 1,
                                "warmup_iters": 1, "lr_decay_iters": WARMUP + STEPS})


def _naive_attention(self, x, cos, sin):
    """Attention.forward without the fused kernel: scores, causal mask, softmax, weighted sum."""
    import torch
    from llama2c.train.model import apply_rope
    b, t, _ = x.shape
    hs = self.head_size
    q = apply_rope(self.wq(x).view(b, t, self.n_heads, hs), cos, sin)
    k = apply_rope(self.wk(x).view(b, t, self.n_kv_heads, hs), cos, sin)
    v = self.wv(x).view(b, t, self.n_kv_heads, hs)
    repeat = self.n_heads // self.n_kv_heads
    k, v = k.repeat_interleave(repeat, dim=2), v.repeat_interleave(repeat, dim=2)
    q, k, v = (z.transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / hs ** 0.5
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.softmax(scores.float(), dim=-1).type_as(q) @ v
    return self.wo(out.transpose(1, 2).reshape(b, t, -1))


def plain_step(c, naive: bool = False):
    """The plain loop: the model, a standard AdamW and one fixed random batch. Returns a function
    that takes one training step and returns its time in seconds."""
    import torch
    from llama2c.train import model as model_module
    if naive:
        model_module.Attention.forward = _naive_attention
    torch.manual_seed(c.seed)
    model = model_module.Transformer(c.model_args())
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.learning_rate)
    x = torch.randint(0, 512, (c.batch_size, c.max_seq_len))
    y = torch.randint(0, 512, (c.batch_size, c.max_seq_len))

    def step() -> float:
        started = time.perf_counter()
        for _ in range(c.gradient_accumulation_steps):
            _, loss = model(x, y)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started
    return step


def ours_steps(c, between=None) -> list[float]:
    """llama2c.train.loop.train() on random shards; the time of each of its steps, from one
    on_step call to the next. between(), if given, runs after each step, outside the timing."""
    import numpy as np
    from llama2c.train.loop import train
    times: list[float] = []
    mark = time.perf_counter()

    def on_step(_: int) -> None:
        nonlocal mark
        times.append(time.perf_counter() - mark)
        if between is not None:
            between()
        mark = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "tok512"
        shards.mkdir()
        rng = np.random.default_rng(0)
        for name in ("val.bin", "train_0001.bin"):
            rng.integers(0, 512, 400_000, dtype=np.uint16).tofile(shards / name)
        (shards / "meta.json").write_text(json.dumps({"vocab_size": 512, "tokenizer": "",
                                                      "tokens": {}}))
        train(c, tmp, Path(tmp) / "out", progress=False, on_step=on_step)
    return times


def worker(kind: str, preset: str) -> dict:
    """One measurement in this process: tokens/s after warm-up, FLOPs per token, peak RSS, and
    the warm-up time (where compilation happens). `paired` interleaves the two loops step by
    step in this one process, so a burst of other work falls on both alike; its tokens_per_s is
    ours's and plain_per_s the plain loop's."""
    from llama2c.train.model import Transformer

    c = _config(preset)
    tokens_per_step = c.batch_size * c.max_seq_len * c.gradient_accumulation_steps
    flops = Transformer(c.model_args()).flops_per_token()
    result = {"flops_per_token": flops}
    if kind == "paired":
        step, plain_times = plain_step(c), []
        step_times = ours_steps(c, lambda: plain_times.append(step()))
        result["plain_per_s"] = tokens_per_step / statistics.median(plain_times[WARMUP:])
    elif kind in ("ours", "eager"):
        c.compile = kind == "ours"
        step_times = ours_steps(c)
    else:
        step = plain_step(c, naive=kind == "naive")
        step_times = [step() for _ in range(WARMUP + STEPS)]
    return {**result, "tokens_per_s": tokens_per_step / statistics.median(step_times[WARMUP:]),
            "warmup_s": sum(step_times[:WARMUP]),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def matmul_peak() -> float:
    """Best fp32 FLOP/s of a 1024 x 1024 matmul with PyTorch's default threads."""
    import torch
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 1024 ** 3 / best


def measure(kind: str, preset: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, preset], capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{kind} {preset}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(results: dict, kind: str, key: str) -> float:
    return statistics.median(r[key] for r in results[kind])


def ratio(results: dict, a: str, b: str) -> float:
    """The median of the per-round ratios of tokens/s, a over b."""
    return statistics.median(x["tokens_per_s"] / y["tokens_per_s"]
                             for x, y in zip(results[a], results[b]))


def table(runs: int = 3) -> list[str]:
    """The training table as printable lines (markdown)."""
    peak = matmul_peak()
    lines = [f"Training on {os.cpu_count()} CPU cores, fp32; tokens/s over the median of {STEPS} "
             f"steps of 4096 tokens after {WARMUP} warm-up steps; median of {runs} alternating "
             f"rounds. Matmul peak measured now: {peak / 1e9:.1f} GFLOP/s.",
             "",
             "| preset (batch x seq) | ours tok/s (warm-up s) | plain tok/s | ours / plain | "
             "ours / plain, interleaved | ours eager tok/s | eager / plain | naive-attention "
             "tok/s | plain / naive | ours GFLOP/s | share of matmul peak | peak RSS ours / plain "
             "MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset, shape in SHAPES.items():
        results: dict[str, list[dict]] = {"ours": [], "plain": [], "eager": [], "naive": [],
                                          "paired": []}
        for _ in range(runs):
            for kind in results:
                results[kind].append(measure(kind, preset))

        rate = {kind: median(results, kind, "tokens_per_s") for kind in results}
        interleaved = statistics.median(r["tokens_per_s"] / r["plain_per_s"]
                                        for r in results["paired"])
        flops = rate["ours"] * results["ours"][0]["flops_per_token"]
        lines.append(f"| {preset} ({shape['batch_size']} x {shape['max_seq_len']}) | "
                     f"{rate['ours']:,.0f} ({median(results, 'ours', 'warmup_s'):.0f}) | "
                     f"{rate['plain']:,.0f} | {ratio(results, 'ours', 'plain'):.2f} | "
                     f"{interleaved:.2f} | {rate['eager']:,.0f} | "
                     f"{ratio(results, 'eager', 'plain'):.2f} | {rate['naive']:,.0f} | "
                     f"{ratio(results, 'plain', 'naive'):.2f} | {flops / 1e9:.2f} | "
                     f"{flops / peak:.0%} | {median(results, 'ours', 'peak_mb'):.0f} / "
                     f"{median(results, 'plain', 'peak_mb'):.0f} |")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2], sys.argv[3])))
    else:
        print("\n".join(table(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
