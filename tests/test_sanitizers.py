"""The engine under AddressSanitizer and UndefinedBehaviorSanitizer.

tests/c/engine_check.c includes wasm/run.c and drives it over real, random and corrupted
checkpoints held in buffers of exactly the file's size. Built with
`gcc -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all`
(llama2c.toolchain.SANITIZE), any overread, overflow, leak or
undefined behaviour aborts with a report; every input must instead end in "ok" or a clean error.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, STORIES260K
from llama2c.toolchain import C_COMMON, SANITIZE, sanitizer_env
from llama2c.checkpoint import HEADER, Config, random_weights, write_checkpoint
from llama2c.native import NativeModel

DRIVER = Path(__file__).with_name("c") / "engine_check.c"
ENV = sanitizer_env()
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MASK64 = (1 << 64) - 1


def compile_c(source: Path, out: Path, flags: list[str]) -> Path:
    proc = subprocess.run(["gcc", *C_COMMON, *flags, str(source), "-o", str(out), "-lm"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sanitizers")


@pytest.fixture(scope="module")
def asan(build) -> Path:
    return compile_c(DRIVER, build / "engine_check_asan", SANITIZE)


@pytest.fixture(scope="module")
def plain(build) -> Path:
    return compile_c(DRIVER, build / "engine_check", ["-O3"])


@pytest.fixture(scope="module")
def scalar(build) -> Path:
    """run.c's plain one-row-at-a-time matmul (-DL2C_SCALAR), which the fast one must equal bit
    for bit. (Should the macro go away, this is the default build again and still must agree.)"""
    return compile_c(DRIVER, build / "engine_check_scalar", ["-O3", "-DL2C_SCALAR"])


def run(exe: Path, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs the driver; a run that outlives the timeout (a few seconds are plenty) has hung."""
    command = [str(exe), *map(str, args)]
    try:
        return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s (a deadlock in the engine?): {' '.join(command)}")


def assert_clean(proc: subprocess.CompletedProcess) -> str:
    """No sanitizer report, and either ok (0) or a clean engine error (3). Returns stdout."""
    report = proc.stderr
    assert "Sanitizer" not in report and "runtime error" not in report, report
    assert proc.returncode in (0, 3), (proc.returncode, proc.stdout, report)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    if proc.returncode == 0:
        assert lines[0].startswith("ok "), lines
    else:
        assert lines[0].startswith("error ") and len(lines[0]) > 12, lines
    return lines[0]


def expect_error(proc, code: int, fragment: str = "") -> str:
    line = assert_clean(proc)
    assert proc.returncode == 3 and line.startswith(f"error {code}: "), line
    assert fragment in line, (fragment, line)
    return line


def tokens_for(first: int, steps: int, vocab: int) -> list[int]:
    return [first if i == 0 else (first + 31 * i) % vocab for i in range(steps)]


def python_checksum(path: Path, steps: int, first: int = 1) -> str:
    """The driver's checksum, from the installed package's engine (llama2c.native)."""
    h = 1469598103934665603
    with NativeModel.open(path) as model:
        for pos, token in enumerate(tokens_for(first, steps, model.config.vocab_size)):
            for word in model.forward(token, pos).view(np.uint32).tolist():
                h = ((h ^ word) * 1099511628211) & MASK64
    return f"{h:016x}"


# -- the sanitizers themselves work (so that "no report" means something) ---------------------------


CANARIES = {
    "heap_overflow": ("int main(int c, char** v) { char* p = malloc(8); p[0] = 0;"
                      " int r = p[7 + c]; free(p); return r; }",
                      ("heap-buffer-overflow", "insufficient space")),  # (ASan's or UBSan's word)
    "signed_overflow": ("int main(int c, char** v) { int x = INT_MAX - 1; x += c + 1;"
                        " return x == 3; }", ("signed integer overflow",)),
    "leak": ("void* volatile g; int main(void) { g = malloc(64); g = 0; return 0; }",
             ("LeakSanitizer",)),
}


@pytest.mark.parametrize("name", sorted(CANARIES))
def test_sanitizers_catch_a_planted_bug(build, name):
    body, reports = CANARIES[name]
    source = build / f"canary_{name}.c"
    source.write_text("#include <limits.h>\n#include <stdlib.h>\n" + body + "\n")
    proc = run(compile_c(source, build / f"canary_{name}", SANITIZE + ["-Wno-unused-parameter"]))
    assert proc.returncode != 0
    assert any(r in proc.stderr for r in reports), proc.stderr


# -- real and random models run clean, with the same logits as the optimised build --------------------


def test_real_model_full_context(asan, plain, scalar, shared):
    steps = 512  # every position of the KV cache, up to seq_len - 1
    sanitized = assert_clean(run(asan, STORIES260K, steps))
    assert sanitized == assert_clean(run(plain, STORIES260K, steps))
    assert sanitized == assert_clean(run(scalar, STORIES260K, steps))
    assert sanitized.startswith("ok 64 172 5 8 4 512 512 shared=1 ")
    assert sanitized.split()[-1] == python_checksum(STORIES260K, steps)
    # the thread pool splits whole rows and heads: any thread count gives the same bits
    for threads in (2, 3):
        assert assert_clean(run(asan, "--threads", threads, STORIES260K, steps)) == sanitized


RANDOM_SHAPES = [
    Config(2, 1, 1, 1, 1, 1, 1),  # the smallest legal model
    Config(64, 160, 2, 8, 2, 96, 24),  # GQA
    Config(48, 97, 2, 4, 4, 150, 20, shared_classifier=False),  # odd hidden, unshared
    Config(96, 257, 1, 6, 3, 33, 9, shared_classifier=False),
    Config(16, 40, 1, 8, 1, 17, 30),  # head size 2, one kv head
    Config(32, 64, 3, 2, 1, 300, 1),  # seq_len 1
]


@pytest.mark.parametrize("config", RANDOM_SHAPES, ids=[str(i) for i in range(len(RANDOM_SHAPES))])
def test_random_model_full_context(asan, plain, scalar, make_model, config):
    path = make_model(config, seed=5, scale=0.1)
    sanitized = assert_clean(run(asan, path, config.seq_len, 0))
    assert sanitized == assert_clean(run(plain, path, config.seq_len, 0))
    assert sanitized == assert_clean(run(scalar, path, config.seq_len, 0))
    assert sanitized.split()[-1] == python_checksum(path, config.seq_len, 0)
    for threads in (2, 5):  # more threads than some matrices have rows
        assert assert_clean(run(asan, "--threads", threads, path, config.seq_len, 0)) == sanitized
    assert f"shared={int(config.shared_classifier)}" in sanitized


def test_random_fitting_headers_run_clean(asan, tmp_path):
    """Random small configs, each in a file of exactly the size its header implies."""
    rng = np.random.default_rng(1234)
    paths = []
    for i in range(24):
        n_heads = int(rng.choice([1, 2, 3, 4, 8]))
        n_kv = int(rng.choice([d for d in range(1, n_heads + 1) if n_heads % d == 0]))
        head_size = int(rng.choice([2, 4, 6, 8]))
        config = Config(n_heads * head_size, int(rng.integers(1, 80)), int(rng.integers(1, 4)),
                        n_heads, n_kv, int(rng.integers(1, 200)), int(rng.integers(1, 20)),
                        shared_classifier=bool(rng.integers(0, 2)))
        path = write_checkpoint(tmp_path / f"fit{i}.bin", config,
                                random_weights(config, seed=i, scale=0.3))
        paths.append((path, config))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda pc: run(asan, pc[0], pc[1].seq_len, 0), paths))
    for (_, config), proc in zip(paths, results):
        line = assert_clean(proc)
        assert proc.returncode == 0, (config, line)


# -- corrupted checkpoints: clean errors, never a report ------------------------------------------------


def corrupted_variants(data: bytes, seed: int) -> dict[str, bytes]:
    size = len(data)
    variants: dict[str, bytes] = {}
    for cut in sorted({0, 1, 3, 4, 27, 28, 29, 31, 32, 100, 1000, size // 3, size // 2, size - 1024,
                       size - 5, size - 4, size - 3, size - 1}):
        variants[f"truncated_{cut}"] = data[:cut]
    for extra in (1, 3, 4, 8, 4096):
        variants[f"extra_{extra}"] = data + b"\x7f" * extra
    header = list(HEADER.unpack_from(data))
    rng = np.random.default_rng(seed)
    specials = [0, -1, 1, 2, 3, INT32_MIN, INT32_MAX, 1 << 16, (1 << 16) + 1, 1 << 20, (1 << 20) + 1,
                1 << 30, -(1 << 30)]
    for field in range(7):
        for value in specials:
            h = list(header)
            h[field] = value
            variants[f"field{field}_{value}"] = HEADER.pack(*h) + data[HEADER.size:]
    for i in range(40):
        h = [int(v) for v in rng.integers(INT32_MIN, INT32_MAX, 7, dtype=np.int64)]
        for j in np.flatnonzero(rng.random(7) < 0.6):
            h[j] = int(rng.choice([header[j], int(rng.integers(-4, 600))]))
        variants[f"random_header_{i}"] = HEADER.pack(*h) + data[HEADER.size:]
    # bit flips anywhere in the header
    for _ in range(16):
        flipped = bytearray(data[:HEADER.size])
        bit = int(rng.integers(0, HEADER.size * 8))
        flipped[bit // 8] ^= 1 << (bit % 8)
        variants[f"bitflip_{bit}"] = bytes(flipped) + data[HEADER.size:]
    return {name: v for name, v in variants.items() if v != data}  # (a special may be the original)


def run_variants(exe: Path, folder: Path, variants: dict[str, bytes], steps: int = 4):
    paths = []
    for name, content in variants.items():
        path = folder / f"{name}.bin"
        path.write_bytes(content)
        paths.append(path)
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(variants, pool.map(lambda p: run(exe, p, steps), paths)))


def test_corrupted_real_model(asan, tmp_path, shared):
    data = STORIES260K.read_bytes()
    variants = corrupted_variants(data, seed=1)
    assert len(variants) > 150
    results = run_variants(asan, tmp_path, variants)
    for name, proc in results.items():
        line = assert_clean(proc)
        # no variant is the original, and none still fits its header: each is refused
        assert proc.returncode == 3, (name, line)
        if name.startswith("truncated"):
            code = 2 if int(name.split("_")[1]) < HEADER.size else 4
            assert line.startswith(f"error {code}: "), (name, line)
        if name.startswith("extra"):
            assert line.startswith("error 4: ") and "extra bytes" in line, (name, line)
        if name.startswith("field") and not name.startswith(("field5_-1", "field5_1_")):
            assert line.startswith(("error 3: ", "error 4: ")), (name, line)


def test_corrupted_unshared_model(asan, tmp_path, make_model):
    """The same over a model whose classifier is stored last (negative vocab_size)."""
    path = make_model(Config(48, 97, 2, 4, 2, 150, 20, shared_classifier=False), seed=9)
    results = run_variants(asan, tmp_path, corrupted_variants(path.read_bytes(), seed=2))
    for name, proc in results.items():
        line = assert_clean(proc)
        assert proc.returncode == 3, (name, line)


@pytest.mark.parametrize("token,pos,steps,fragment", [
    (-1, 0, 1, "token -1 out of range [0, 512)"),
    (512, 0, 1, "token 512 out of range"),
    (INT32_MIN, 0, 1, "token -2147483648 out of range"),
    (INT32_MAX, 0, 1, "token 2147483647 out of range"),
    (0, -1, 1, "position -1 out of range [0, 512)"),
    (0, 512, 1, "position 512 out of range"),
    (0, INT32_MIN, 1, "position -2147483648 out of range"),
    (0, 509, 5, "position 512 out of range"),  # runs 509, 510, 511 first
])
def test_bad_token_and_position(asan, shared, token, pos, steps, fragment):
    expect_error(run(asan, STORIES260K, steps, token, pos), 6, fragment)


# -- the thread pool under ThreadSanitizer ---------------------------------------------------------


@pytest.fixture(scope="module")
def tsan(build) -> Path:
    return compile_c(DRIVER, build / "engine_check_tsan", ["-fsanitize=thread", "-g", "-O1"])


def test_tsan_catches_a_planted_race(build):
    source = build / "canary_race.c"
    source.write_text(
        "#include <pthread.h>\nint counter;\n"
        "static void* bump(void* arg) { for (int i = 0; i < 100000; i++) counter++; return arg; }\n"
        "int main(void) { pthread_t t; pthread_create(&t, 0, bump, 0); bump(0);"
        " pthread_join(t, 0); return counter == 7; }\n")
    proc = run(compile_c(source, build / "canary_race", ["-fsanitize=thread", "-g", "-O1"]))
    assert "ThreadSanitizer: data race" in proc.stderr, proc.stderr


@pytest.mark.parametrize("threads", [2, 5])
def test_threads_race_free_and_bit_identical(tsan, plain, make_model, shared, threads):
    for path, steps in ((STORIES260K, 16), (make_model(RANDOM_SHAPES[1], seed=5, scale=0.1), 24),
                        (make_model(RANDOM_SHAPES[0], seed=5, scale=0.1), 1)):
        proc = run(tsan, "--threads", threads, path, steps, 0)
        assert "ThreadSanitizer" not in proc.stderr, proc.stderr
        assert assert_clean(proc) == assert_clean(run(plain, path, steps, 0))


def test_misaligned_buffer_is_refused(asan, shared):
    expect_error(run(asan, "--misaligned", STORIES260K, 2), 1, "4-byte aligned")


def test_null_and_bad_api_arguments(asan):
    proc = run(asan, "--api")
    assert proc.returncode == 0 and "Sanitizer" not in proc.stderr, proc.stderr
    results = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert results == {"check_null": "1", "check_null_empty": "2", "check_short": "2",
                       "load_null": "2", "forward_null": "1", "config_null": "1",
                       "shared_null": "-1", "free_null": "ok"}


def test_sampler_functions_run_clean(asan, plain):
    """l2c_nucleus, l2c_choose and l2c_argmax on random logit sets of every size, each in buffers
    of exactly its size: no report, and the same results as the optimised build."""
    sanitized = assert_clean(run(asan, "--sample", 300))
    assert sanitized == assert_clean(run(plain, "--sample", 300))


def test_driver_includes_the_real_engine():
    assert '#include "../../wasm/run.c"' in DRIVER.read_text()
    assert (ROOT / "wasm" / "run.c").exists()


# -- int8 models with non-finite values -----------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 3e38])
def test_int8_non_finite_values_compute_without_undefined_behaviour(asan, tmp_path, value):
    """An int8 file whose norms or scales are NaN, infinite or huge loads and runs: its activations
    turn NaN, and the quantizer maps a NaN to 0 instead of the undefined (int8_t)roundf(NaN) that
    float-cast-overflow reports (212 of 2000 mutants did before)."""
    from llama2c.quantize import quantize_checkpoint

    config = Config(16, 32, 2, 2, 1, 24, 6)
    fp32 = write_checkpoint(tmp_path / "m.bin", config, random_weights(config, seed=1, scale=0.3))
    quantize_checkpoint(fp32, tmp_path / "q.bin", 8)
    data = bytearray((tmp_path / "q.bin").read_bytes())
    data[256:256 + 4 * 16] = np.full(16, value, "<f4").tobytes()  # layer 0's attention norm
    path = tmp_path / "nonfinite.bin"
    path.write_bytes(bytes(data))
    assert assert_clean(run(asan, path, config.seq_len, 0)).startswith("ok 16 32 2 2 1 24 6 ")
