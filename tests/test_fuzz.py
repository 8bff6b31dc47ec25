"""Fuzzing the parsers of untrusted bytes: the engine's checkpoint loader and the tokenizer.

The loader runs under ASan and UBSan with float-cast-overflow (llama2c.toolchain.SANITIZE): a fixed
corpus of mutated checkpoints (tests/fuzz/corpus.py, the same cases on every machine) must end in a
clean error or a model that loads and runs, and every crash ever found (tests/fuzz/crashes/) must
stay fixed. `invoke fuzz --minutes N` runs longer, coverage-guided campaigns with libFuzzer.

The tokenizer parser is Python: mutated tokenizer.bin files must give a TokenizerError or a
tokenizer that encodes and decodes, never another exception.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TOK512

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import corpus  # noqa: E402

from llama2c.errors import TokenizerError  # noqa: E402
from llama2c.tokenizer import Tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    return corpus.build_driver(tmp_path_factory.mktemp("fuzz") / "fuzz_driver")


def test_fixed_corpus_runs_clean(driver, tmp_path):
    """20,000 mutated checkpoints, both formats (about 2 s on this machine)."""
    crashes = tmp_path / "crashes"
    proc = corpus.run_corpus(driver, corpus.write_seeds(tmp_path / "seeds"), crashes)
    saved = sorted(crashes.iterdir())
    assert proc.returncode == 0 and not saved, (
        f"a fuzz case failed; copy {saved} into tests/fuzz/crashes/\n{proc.stderr[-4000:]}")
    lines = proc.stdout.splitlines()
    counts = lines[0].split()
    assert counts[:2] == ["cases", str(corpus.CORPUS_CASES)], lines
    accepted, errors = int(counts[3]), int(counts[5])
    # The mutations reach every outcome: models that load and run, and each kind of refusal.
    assert accepted > corpus.CORPUS_CASES // 10 and errors > corpus.CORPUS_CASES // 10, lines
    codes = {line.split()[1] for line in lines[1:]}
    assert {"2", "3", "4"} <= codes, lines  # truncated, bad header, size mismatch


def test_saved_crashes_stay_fixed(driver):
    """Inputs that once crashed the loader or the forward pass (see tests/fuzz/crashes/README)."""
    files = sorted(corpus.CRASHES.glob("*.bin"))
    assert files, "tests/fuzz/crashes/ holds the crashes found so far"
    proc = corpus.replay(driver, files)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("replayed ") == len(files), proc.stdout


def test_driver_finds_a_planted_bug(tmp_path):
    """The driver and its sanitizers catch what they are for: the int8 quantizer before its NaN
    guard (an undefined float-to-int8 cast), which the corpus reached in its 8th case."""
    engine = (corpus.C_DIR.parent.parent / "wasm" / "run.c").read_text()
    guard = "r >= -128.0f && r <= 127.0f ? (int8_t)r : 0"
    assert guard in engine
    (tmp_path / "wasm").mkdir()
    (tmp_path / "wasm" / "run.c").write_text(engine.replace(guard, "(int8_t)r"))
    for header in (corpus.C_DIR.parent.parent / "wasm").glob("*.h"):  # what run.c includes
        (tmp_path / "wasm" / header.name).write_text(header.read_text())
    c_dir = tmp_path / "tests" / "c"
    c_dir.mkdir(parents=True)
    for name in ("fuzz_loader.c", "fuzz_driver.c"):
        (c_dir / name).write_text((corpus.C_DIR / name).read_text())
    old, corpus.C_DIR = corpus.C_DIR, c_dir
    try:
        unguarded = corpus.build_driver(tmp_path / "unguarded")
    finally:
        corpus.C_DIR = old
    proc = corpus.replay(unguarded, [corpus.CRASHES / "int8-nan-quantize.bin"])
    assert proc.returncode != 0
    assert "outside the range of representable values" in proc.stderr, proc.stderr[-2000:]


# -- the tokenizer parser ------------------------------------------------------------------------


def tokenizer_cases(data: bytes, count: int, seed: int):
    """(bytes, vocab_size) pairs: tok512.bin mutated at its fields, bits and length."""
    rng = np.random.default_rng(seed)
    edges = [0, 1, -1, 2, 255, 256, 1 << 16, (1 << 16) + 1, 2**31 - 1, -(2**31)]
    for _ in range(count):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 5))
            if kind == 0:  # an int32 at a random aligned offset: max_token_length, lengths
                at = 4 * int(rng.integers(0, len(b) // 4)) if len(b) >= 4 else 0
                b[at:at + 4] = struct.pack("<i", int(rng.choice(edges)))[:max(0, len(b) - at)]
            elif kind == 1 and b:  # bit flips
                for _ in range(int(rng.integers(1, 8))):
                    b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
            elif kind == 2:  # truncate
                del b[int(rng.integers(0, len(b) + 1)):]
            elif kind == 3:  # append
                b += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
            elif len(b) >= 8:  # a score set to NaN or inf
                at = 4 * int(rng.integers(1, len(b) // 4))
                b[at:at + 4] = struct.pack("<f", float(rng.choice([np.nan, np.inf, -np.inf])))
        vocab = 512 if rng.random() < 0.8 else int(rng.choice([1, 2, 3, 511, 513, 1 << 20]))
        yield bytes(b), vocab


def test_tokenizer_parser_fuzz(shared):
    """20,000 mutated tokenizers: a clean TokenizerError, or a tokenizer that works."""
    data = TOK512.read_bytes()
    outcomes = {"ok": 0, "error": 0}
    for i, (case, vocab) in enumerate(tokenizer_cases(data, corpus.CORPUS_CASES, seed=7)):
        try:
            tokenizer = Tokenizer.from_bytes(case, vocab)
        except TokenizerError as e:
            assert str(e), i
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        if i % 50 == 0:  # and the parsed tokenizer works: encode, then decode every id
            try:
                ids = tokenizer.encode("Once upon a time, é 🙂")
            except TokenizerError:
                continue  # a mutated tokenizer may lack the ' ' piece or the byte tokens
            for prev, token in zip([1, *ids], ids):
                tokenizer.decode(prev, token)
    assert outcomes["ok"] > 1000 and outcomes["error"] > 1000, outcomes
