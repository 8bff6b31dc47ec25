"""Session fixtures for the training tests: a story corpus run through the real commands, and a
`--preset tiny` model trained on it (shared by the learning, round-trip, export and page tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import storygrammar

STORIES = 2000
VOCAB = 512  # the grammar's ~50 words merge into whole-word tokens well below sentencepiece's max
# --preset tiny with a shorter schedule: a story is ~39 tokens, so 64 positions hold more than
# one; 120 steps of 16 x 64 tokens take about a minute on one busy core.
TINY_ARGS = ["--preset", "tiny", "--batch_size", "16", "--max_seq_len", "64", "--max_iters", "120",
             "--warmup_iters", "10", "--lr_decay_iters", "120", "--eval_interval", "40",
             "--eval_iters", "8"]


def train_env(**extra: str) -> dict[str, str]:
    """One intra-op thread per process: on a shared 2-core machine PyTorch's two spinning threads
    made a tiny step 4x slower (44 s vs 10 s for 20 steps), and one thread is deterministic."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def llama2c(*args, cwd=None, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "llama2c", *map(str, args)], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          env=env or train_env())
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    return proc


@dataclass
class Trained:
    root: Path
    data: Path
    out: Path
    model: Path  # fp32 export of best.pt
    tokenizer: Path  # the exported NAME.tok.bin beside it
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="session")
def story_data(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """DATA folder after `data text`, `vocab --size 512` and `pretokenize` of the story grammar."""
    root = tmp_path_factory.mktemp("stories")
    (root / "stories.txt").write_text("\n\n".join(storygrammar.stories(STORIES)))
    data = root / "data"
    seconds = {}
    for step, args in (("data", ["data", "text", root / "stories.txt"]),
                       ("vocab", ["vocab", "--size", VOCAB]),
                       ("pretokenize", ["pretokenize", "--vocab-size", VOCAB])):
        started = time.monotonic()
        ok(llama2c(*args, "--data", data))
        seconds[step] = time.monotonic() - started
    return data, seconds


@pytest.fixture(scope="session")
def trained_tiny(story_data) -> Trained:
    data, seconds = story_data
    root = data.parent
    out = root / "out"
    started = time.monotonic()
    ok(llama2c("train", *TINY_ARGS, "--data", data, "--out", out, "--quiet"))
    seconds["train"] = time.monotonic() - started
    ok(llama2c("export", out / "best.pt", root / "tiny.bin"))
    return Trained(root, data, out, root / "tiny.bin", root / "tiny.tok.bin", dict(seconds))
