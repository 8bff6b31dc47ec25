"""Hostile checkpoint headers: the native engine and the WebAssembly engine give the same verdict.

Every case is a file whose header is hostile (edge values, inconsistent fields, sizes that overflow
32 bits) and, where the header is readable, whose length is exactly what it implies, so that the
case reaches the loader's allocations. Each case runs through check, load and two forward passes:
natively (tests/c/verdicts.c, gcc, under a 4 GiB address-space limit, WebAssembly's) and in the
page's WebAssembly build under node (tests/wasm/verdicts.mjs). The lines must be equal: the same
error code and message, or "ok" with the same logits.

In WebAssembly size_t is 32 bits: a KV cache of exactly 2^32 floats once became calloc(0), and the
page said "ready", then "memory access out of bounds".
"""

from __future__ import annotations

import resource
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, STORIES260K
from llama2c.toolchain import C_COMMON
from llama2c.checkpoint import Config, random_weights, write_checkpoint
from llama2c.quantize import quantize_checkpoint

ENGINE = ROOT / "site" / "engine" / "llama2c-engine.mjs"  # the page's single-thread engine
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
WASM_MEMORY = 4 << 30  # the WebAssembly build's MAXIMUM_MEMORY (tasks.py)


def implied_size(dim, hidden, layers, heads, kv_heads, vocab, seq, group=None, shared=True) -> int:
    """The byte length a header implies (llama2.c's layouts), for files that pass the size check."""
    kv_dim = dim * kv_heads // heads
    matrices = [vocab * dim] + layers * [dim * dim, kv_dim * dim, kv_dim * dim, dim * dim,
                                         hidden * dim, dim * hidden, hidden * dim]
    matrices += [] if shared else [vocab * dim]
    norms = (2 * layers * dim + dim) * 4
    if group is None:
        return 28 + norms + 4 * sum(matrices) + 4 * seq * (dim // heads)  # + freq_cis
    return 256 + norms + sum(n + n // group * 4 for n in matrices)


def fp32_file(values, body: bytes | None = None) -> bytes:
    dim, hidden, layers, heads, kv, vocab, seq = values
    head = struct.pack("<7i", *values)
    if body is None:
        body = bytes(implied_size(dim, hidden, layers, heads, kv, abs(vocab), seq,
                                  shared=vocab > 0) - 28)
    return head + body


def int8_file(values, group, shared=1, version=2, body: bytes | None = None) -> bytes:
    head = struct.pack("<Ii7iBi", 0x616B3432, version, *values, shared, group)
    head += bytes(256 - len(head))
    if body is None:
        body = bytes(implied_size(*values, group=group, shared=bool(shared)) - 256)
    return head + body


def hostile_cases(tmp: Path) -> dict[str, bytes]:
    tiny = Config(8, 12, 1, 2, 1, 16, 4)
    tiny_fp32 = write_checkpoint(tmp / "tiny.bin", tiny, random_weights(tiny, seed=3, scale=0.5))
    quantize_checkpoint(tiny_fp32, tmp / "tiny_q4.bin", 4)
    fp32, q8 = tiny_fp32.read_bytes(), (tmp / "tiny_q4.bin").read_bytes()
    nan = bytearray(fp32)
    nan[28 + 4 * 20:28 + 4 * 40] = struct.pack("<f", np.nan) * 20  # NaN weights run, without UB
    nan_q8 = bytearray(q8)
    nan_q8[256:256 + 4 * 8] = struct.pack("<f", np.inf) * 8  # inf norms: NaN activations
    cases = {
        "tiny fp32": fp32, "tiny int8": q8, "stories260K": STORIES260K.read_bytes(),
        "NaN weights": bytes(nan), "inf int8 norms": bytes(nan_q8),
        # KV caches of 2^32 floats and more: 0 or a few floats in 32-bit size_t before the fix
        "kv cache 2^32 floats (5.5 MB file)": fp32_file((8, 2, 1024, 4, 4, 8, 1 << 19)),
        "kv cache 2^32 + 8192 floats": fp32_file((8, 2, 1024, 4, 4, 8, (1 << 19) + 1)),
        "kv cache 2^31 floats (8 GiB)": fp32_file((8, 2, 1024, 4, 4, 8, 1 << 18)),
        "kv cache 2^32 floats, dim 4": fp32_file((4, 2, 1024, 2, 2, 4, 1 << 20)),
        "kv cache 2^32 floats, int8": int8_file((8, 4, 1024, 4, 4, 8, 1 << 19), 4),
        "kv cache 1.5 x 2^32 floats": fp32_file((12, 2, 1024, 6, 6, 8, 1 << 19)),
        # inconsistent headers
        "dim not divisible by n_heads": fp32_file((10, 4, 1, 3, 3, 8, 4), b""),
        "odd head size": fp32_file((6, 4, 1, 2, 2, 8, 4), b""),
        "n_heads not divisible by n_kv_heads": fp32_file((12, 4, 1, 6, 4, 8, 4), b""),
        "implied size above 2^50": fp32_file((1 << 16, 1 << 18, 1024, 1, 1, 1 << 20, 1 << 20),
                                             bytes(1000)),
        "int8 group size 0": int8_file((8, 12, 1, 2, 1, 16, 4), 0, body=q8[256:]),
        "int8 group size -1": int8_file((8, 12, 1, 2, 1, 16, 4), -1, body=q8[256:]),
        "int8 group size 3": int8_file((8, 12, 1, 2, 1, 16, 4), 3, body=q8[256:]),
        "int8 group size INT32_MIN": int8_file((8, 12, 1, 2, 1, 16, 4), I32_MIN, body=q8[256:]),
        "int8 shared flag 2": int8_file((8, 12, 1, 2, 1, 16, 4), 4, shared=2),
        "int8 version 1": int8_file((8, 12, 1, 2, 1, 16, 4), 4, version=1),
        "int8 version 3": int8_file((8, 12, 1, 2, 1, 16, 4), 4, version=3),
        "int8 header cut at 255": q8[:255],
        "empty": b"", "3 bytes": fp32[:3], "27 bytes": fp32[:27], "header only": fp32[:28],
        "one byte short": fp32[:-1], "one byte extra": fp32 + b"\0",
        "vocab INT32_MIN": struct.pack("<7i", 8, 12, 1, 2, 1, I32_MIN, 4) + fp32[28:],
    }
    maxima = [1 << 16, 1 << 18, 1 << 10, 1 << 16, 1 << 16, 1 << 20, 1 << 20]
    for field in range(7):
        for value in (0, -1, I32_MIN, I32_MAX, maxima[field], maxima[field] + 1):
            values = list(struct.unpack_from("<7i", fp32))
            values[field] = value
            cases[f"field {field} = {value}"] = struct.pack("<7i", *values) + fp32[28:]
            q8_values = list(struct.unpack_from("<7i", q8, 8))
            q8_values[field] = value
            cases[f"int8 field {field} = {value}"] = int8_file(q8_values, 4, body=q8[256:])
    return cases


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (WASM_MEMORY, WASM_MEMORY))


@pytest.fixture(scope="module")
def table(tmp_path_factory, shared) -> list[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("hostile")
    return [(name, _write(folder / f"case{i}.bin", data))
            for i, (name, data) in enumerate(hostile_cases(folder).items())]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def native_verdicts(tmp_path: Path, files: list[Path]) -> list[str]:
    exe = tmp_path / "verdicts"
    subprocess.run(["gcc", *C_COMMON, "-O1", str(ROOT / "tests/c/verdicts.c"), "-o", str(exe),
                    "-lm"], check=True)
    proc = subprocess.run([str(exe), *map(str, files)], capture_output=True, text=True,
                          preexec_fn=limit_memory, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def wasm_verdicts(files: list[Path]) -> list[str]:
    if not ENGINE.exists() or ENGINE.stat().st_mtime < (ROOT / "wasm/run.c").stat().st_mtime:
        pytest.fail(f"{ENGINE.relative_to(ROOT)} is missing or older than wasm/run.c: "
                    "run `invoke build`")
    node = shutil.which("node")
    assert node, "node is needed to run the WebAssembly engine"
    proc = subprocess.run([node, str(ROOT / "tests/wasm/verdicts.mjs"), ENGINE.as_uri(),
                           *map(str, files)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_native_and_webassembly_give_the_same_verdicts(table, tmp_path):
    names = [name for name, _ in table]
    native = dict(zip(names, native_verdicts(tmp_path, [p for _, p in table]), strict=True))
    wasm = dict(zip(names, wasm_verdicts([p for _, p in table]), strict=True))
    differ = {name: (native[name], wasm[name]) for name in names if native[name] != wasm[name]}
    assert not differ, differ
    # and the verdicts are the right ones
    for name in ("tiny fp32", "tiny int8", "stories260K", "NaN weights", "inf int8 norms"):
        assert native[name].startswith("0\tok "), (name, native[name])
    for name in names:
        if name.startswith("kv cache"):
            assert native[name].startswith("5\tout of memory: the KV cache alone needs "), native[name]
    assert native["kv cache 2^32 floats (5.5 MB file)"] == \
        "5\tout of memory: the KV cache alone needs 34359.7 MB"
    assert native["implied size above 2^50"].startswith("4\tcheckpoint size mismatch"), native
    assert all(v.split("\t")[0] in "0 2 3 4 5".split() for v in native.values()), native
    assert sum(v.startswith(("2\t", "3\t", "4\t")) for v in native.values()) > 60


def test_page_engine_refuses_a_model_it_cannot_hold_before_malloc():
    """web/engine.js: malloc takes a 32-bit size, so a Content-Length of 2^32 + 16 became a 16-byte
    block that the download wrote past. A size above what WebAssembly memory can still take is now
    refused before malloc is called, and a size malloc cannot satisfy gets the same message."""
    import json

    sizes = [2**32, 2**32 + 16, 2**53, 2**32 - 1, 3 * 2**30, 1 << 20]
    proc = subprocess.run([shutil.which("node") or "node", str(ROOT / "tests/wasm/engine_limits.mjs"),
                           ENGINE.as_uri(), *map(str, sizes)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    cases = {int(c["size"]): c for c in result["cases"]}
    assert 2**32 - result["maxBytes"] < 64 << 20  # 4 GiB less the engine's own few megabytes
    for size in (2**32, 2**32 + 16, 2**53, 2**32 - 1):
        assert cases[size]["mallocs"] == 0, cases[size]
        assert cases[size]["outcome"].startswith(
            "EngineError: the model is too large for this browser: "), cases[size]
    assert cases[2**32]["outcome"].startswith("EngineError: the model is too large for this "
                                              "browser: 4295 MB does not fit in WebAssembly memory")
    # within the limit, malloc decides: 3 GiB may or may not fit here, but never crashes
    assert cases[3 * 2**30]["mallocs"] == 1
    assert cases[3 * 2**30]["outcome"] in ("allocated 3221225472", cases[2**32]["outcome"].replace(
        "4295 MB", "3221 MB"))
    assert cases[1 << 20] == {"size": str(1 << 20), "outcome": "allocated 1048576", "mallocs": 1}
