"""Shared test fixtures: where the reference material lives, and models the project generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llama2c.checkpoint import SHAPES, Config, random_weights, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the project: real models and reference goldens (a mirror, read-only).
SHARED = Path(os.environ.get("LLAMA2C_SHARED", ROOT.parent / "shared")).resolve()
GOLDEN = SHARED / "golden"
MODELS = SHARED / "models"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (MODELS / "stories260K.bin").exists():
        pytest.fail(f"reference material missing: {MODELS} (set LLAMA2C_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def make_model(tmp_path_factory):
    """make_model(config, seed=0, scale=None) -> path of a seeded-random legacy checkpoint (cached
    per run). `scale` is the std of the projection weights (checkpoint.random_weights' default when
    None); a larger one makes attention less uniform, so tests see more of it."""
    cache: dict[tuple[Config, int, float | None], Path] = {}
    folder = tmp_path_factory.mktemp("models")

    def make(config: Config, seed: int = 0, scale: float | None = None) -> Path:
        key = (config, seed, scale)
        if key not in cache:
            path = folder / f"m{len(cache)}_{seed}.bin"
            if scale is None:
                cache[key] = write_checkpoint(path, config, seed=seed)
            else:
                cache[key] = write_checkpoint(path, config, random_weights(config, seed, scale))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def stories15m_shaped(make_model) -> Path:
    """A stories15M-shaped checkpoint (dim 288, 6 layers, vocab 32000) with random weights."""
    return make_model(SHAPES["stories15M"], seed=15)


# -- helpers shared by the core test files -------------------------------------------------------

STORIES260K = MODELS / "stories260K.bin"
TOK512 = MODELS / "tok512.bin"
TOKENIZER_32K = MODELS / "tokenizer.bin"


def teacher_forced(model, tokens) -> np.ndarray:
    """(len(tokens), vocab_size) logits of a Backend fed `tokens` at positions 0, 1, 2, ..."""
    return np.array([model.forward(int(token), pos).copy() for pos, token in enumerate(tokens)])


def run_cli(*args, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m llama2c <args>` in a subprocess with no stdin; stdout/stderr captured as bytes."""
    return subprocess.run([sys.executable, "-m", "llama2c", *map(str, args)], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The CLI failed cleanly: non-zero exit, nothing on stdout, exactly one line on stderr."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode != 0, f"exit 0 for an error case; stderr={err!r}"
    assert proc.returncode > 0, f"killed by signal {-proc.returncode}; stderr={err!r}"
    assert proc.stdout == b"", proc.stdout
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr is not one line: {err!r}"
    assert err.startswith("llama2c: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


# -- training (tests/train_fixtures.py) ----------------------------------------------------------

from train_fixtures import story_data, trained_tiny  # noqa: E402,F401


def process_tree(root_pid: int) -> list[int]:
    """Every descendant of root_pid (from /proc/*/stat), for tests and the benchmark that must
    find or stop what a process they started has started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
