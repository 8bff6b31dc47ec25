"""The loader's fuzz corpus: seed checkpoints, the two drivers, and running them.

Used by tests/test_fuzz.py (a fixed-seed corpus in every `invoke test`) and by `invoke fuzz`
(coverage-guided libFuzzer campaigns). Crashes either finds are saved in tests/fuzz/crashes/,
which the tests replay forever after.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from llama2c.toolchain import C_COMMON, SANITIZE, sanitizer_env
from llama2c.checkpoint import Config, random_weights, write_checkpoint
from llama2c.quantize import quantize_checkpoint

HERE = Path(__file__).resolve().parent
C_DIR = HERE.parent / "c"
CRASHES = HERE / "crashes"  # every failing input found, replayed by tests/test_fuzz.py
CORPUS_SEED = 20261202  # the fixed corpus: the same cases on every machine
CORPUS_CASES = 20_000
CLANG = "clang-22"  # libFuzzer ships with it (Debian's libclang-rt-22-dev)

# Small shapes that load and run in well under a millisecond, covering both formats, a shared and
# an unshared classifier, grouped-query attention, an odd hidden size and seq_len 1.
SEED_SHAPES = [
    (Config(8, 12, 1, 2, 1, 16, 4), [None, 4, 2]),
    (Config(16, 24, 2, 4, 2, 32, 3, shared_classifier=False), [None, 8]),
    (Config(4, 5, 1, 1, 1, 7, 1), [None]),
    (Config(32, 48, 1, 4, 4, 20, 8), [None, 16, 32]),
]


def write_seeds(folder: Path) -> list[Path]:
    """Valid checkpoints to mutate: each shape in fp32, and in int8 for each group size."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (config, groups) in enumerate(SEED_SHAPES):
        fp32 = write_checkpoint(folder / f"seed{i}_fp32.bin", config,
                                random_weights(config, seed=i, scale=0.5))
        for group in groups:
            if group is None:
                paths.append(fp32)
            else:
                out = folder / f"seed{i}_q{group}.bin"
                quantize_checkpoint(fp32, out, group)
                paths.append(out)
    return paths


def build_driver(out: Path) -> Path:
    """The deterministic driver (fuzz_driver.c), under ASan and UBSan with float-cast-overflow."""
    proc = subprocess.run(["gcc", *C_COMMON, *SANITIZE, str(C_DIR / "fuzz_driver.c"), "-o", str(out),
                           "-lm"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc fuzz_driver.c failed:\n{proc.stderr}")
    return out


def build_libfuzzer(out: Path) -> Path:
    """The same target linked with libFuzzer (clang), for coverage-guided campaigns."""
    if shutil.which(CLANG) is None:
        raise RuntimeError(f"{CLANG} is missing: apt-get install clang-22 libclang-rt-22-dev")
    flags = [f for f in SANITIZE if not f.startswith("-fsanitize=")]
    sanitize = next(f for f in SANITIZE if f.startswith("-fsanitize=")) + ",fuzzer"
    proc = subprocess.run([CLANG, *C_COMMON, sanitize, *flags, str(C_DIR / "fuzz_loader.c"), "-o",
                           str(out), "-lm"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"clang fuzz_loader.c failed:\n{proc.stderr}")
    return out


def fuzz_env() -> dict[str, str]:
    """The sanitizers' options, with UBSan ending in abort() so that the driver saves the case."""
    env = sanitizer_env()
    env["UBSAN_OPTIONS"] += ":abort_on_error=1"
    return env


def run_corpus(driver: Path, seeds: list[Path], crash_dir: Path, cases: int = CORPUS_CASES,
               seed: int = CORPUS_SEED, timeout: float = 600) -> subprocess.CompletedProcess:
    crash_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(driver), "run", str(seed), str(cases), str(crash_dir),
                           *map(str, seeds)], capture_output=True, text=True, env=fuzz_env(),
                          timeout=timeout)


def replay(driver: Path, files: list[Path], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(driver), "replay", *map(str, files)], capture_output=True,
                          text=True, env=fuzz_env(), timeout=timeout)
