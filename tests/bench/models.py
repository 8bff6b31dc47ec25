"""The models the benchmark measures: generated ones of the published shapes (random weights:
the speed of a forward pass does not depend on the values), their int8 copies, and real models
found in models/."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llama2c.toolchain import (
    ENGINE_SOURCE,
    NATIVE_CFLAGS,
    NATIVE_LDFLAGS,
    SCALAR_CFLAGS,
)

from .common import MODEL_SEEDS, MODELS, ROOT, SHARED, BenchError, say


@dataclass
class Model:
    key: str  # "stories15M fp32"
    path: Path
    tokenizer: Path
    format: str  # fp32 | int8
    baseline: str  # key of the fp32 model whose scalar run is this one's baseline
    real: bool = False
    threads_auto: int | None = None  # what LLAMA2C_THREADS=0 picks for it natively
    mb: float = 0.0  # file size in MB

    def __post_init__(self) -> None:
        self.mb = self.path.stat().st_size / 1e6


def tokenizer_for(vocab_size: int) -> Path | None:
    names = ["tokenizer.bin"] if vocab_size == 32000 else [f"tok{vocab_size}.bin"]
    for folder in (MODELS, SHARED / "models"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def make_models(folder: Path, shapes: list[str], memory_only: list[str],
                with_real: bool = True) -> tuple[list[Model], list[Model]]:
    """(speed models, models only for the memory table): generated fp32 + int8, then real ones."""
    from llama2c.checkpoint import SHAPES, read_config, write_checkpoint
    from llama2c.quantize import quantize_checkpoint

    tokenizer = tokenizer_for(32000)
    speed, memory = [], []
    for shape in shapes + memory_only:
        started = time.perf_counter()
        fp32 = folder / f"{shape}-fp32.bin"
        write_checkpoint(fp32, SHAPES[shape], seed=MODEL_SEEDS[shape])
        key = f"{shape} fp32"
        if shape in memory_only:
            memory.append(Model(key, fp32, tokenizer, "fp32", key))
            say(f"generated {fp32.name} ({fp32.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s")
            continue
        int8 = folder / f"{shape}-int8.bin"
        quantize_checkpoint(fp32, int8)
        speed += [Model(key, fp32, tokenizer, "fp32", key),
                  Model(f"{shape} int8", int8, tokenizer, "int8", key)]
        say(f"generated {fp32.name} and {int8.name} in {time.perf_counter() - started:.1f} s")
    for path in sorted(MODELS.glob("*.bin")) if MODELS.is_dir() and with_real else []:
        if path.name.startswith("tok"):
            continue
        try:
            with path.open("rb") as f:
                config = read_config(f.read(28), check_size=False)
        except Exception:
            continue
        if path.stat().st_size != config.file_size():
            continue  # not a legacy fp32 checkpoint (or an int8 one): leave it out
        tok = tokenizer_for(config.vocab_size)
        if tok is None:
            say(f"skipping models/{path.name}: no tokenizer for vocab {config.vocab_size}")
            continue
        key = f"{path.stem} real"
        speed.append(Model(key, path, tok, "fp32", key, real=True))
    return speed, memory


def compile_scalar(folder: Path) -> Path:
    """The baseline: the same engine with run.c's plain loops (llama2.c's `make run`)."""
    target = folder / "scalar-engine.so"
    command = ["gcc", *NATIVE_CFLAGS, *SCALAR_CFLAGS, "-o", str(target), str(ROOT / ENGINE_SOURCE),
               *NATIVE_LDFLAGS]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise BenchError(f"compiling the scalar baseline failed:\n{' '.join(command)}\n{proc.stderr}")
    return target
