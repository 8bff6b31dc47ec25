"""Bad input: a specific exception from the library, one line on stderr and exit 1 from the CLI.

Never a crash, a traceback, or a partial story.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import STORIES260K, TOK512, TOKENIZER_32K, assert_one_line_error, run_cli
from llama2c.checkpoint import HEADER, LIMITS, Config, read_config
from llama2c.errors import CheckpointError, EngineError, Llama2cError, TokenizerError
from llama2c.native import NativeModel
from llama2c.tokenizer import Tokenizer

FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
SMALL = Config(32, 64, 2, 4, 2, 50, 16)


@pytest.fixture(scope="module")
def small_model(make_model):
    return make_model(SMALL, seed=1)


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def library_rejects(data: bytes, *fragments: str) -> str:
    """NativeModel and checkpoint.read_config both raise CheckpointError, with the same message."""
    with pytest.raises(CheckpointError) as native:
        NativeModel(data)
    with pytest.raises(CheckpointError) as python:
        read_config(data)
    message = str(native.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert str(python.value) == message  # the C engine and the Python reader agree
    return message


def cli_rejects(path, *fragments: str, tokenizer=TOK512) -> str:
    return assert_one_line_error(run_cli("run", path, "-z", tokenizer, "-n", "4"), *fragments)


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 4, 100, -1000, -4, -1])
def test_truncated_file(tmp_path, small_model, cut):
    data = small_model.read_bytes()
    bad = data[:cut] if cut < 0 else data[:HEADER.size + cut]
    library_rejects(bad, "size mismatch", "truncated", str(SMALL.file_size()))
    cli_rejects(write(tmp_path, "t.bin", bad), "truncated")


@pytest.mark.parametrize("extra", [1, 4, 4096])
def test_extra_bytes(tmp_path, small_model, extra):
    bad = small_model.read_bytes() + b"\0" * extra
    library_rejects(bad, "extra bytes", str(len(bad)))
    cli_rejects(write(tmp_path, "x.bin", bad), "extra bytes")


def test_empty_file(tmp_path):
    library_rejects(b"", "0 bytes", "header")
    cli_rejects(write(tmp_path, "empty.bin", b""), "0 bytes")


@pytest.mark.parametrize("size", [1, 4, 27])
def test_shorter_than_header(tmp_path, small_model, size):
    bad = small_model.read_bytes()[:size]
    library_rejects(bad, f"{size} bytes", "28-byte header")
    cli_rejects(write(tmp_path, "short.bin", bad), "header")


# -- header values -----------------------------------------------------------------------------


def with_header(data: bytes, **values: int) -> bytes:
    header = list(HEADER.unpack_from(data))
    for name, value in values.items():
        header[FIELDS.index(name)] = value
    return HEADER.pack(*header) + data[HEADER.size:]


BAD_VALUES = [(f, v) for f in FIELDS for v in (0, -1, INT32_MAX, LIMITS[f] + 1)]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v}" for f, v in BAD_VALUES])
def test_bad_header_value(tmp_path, small_model, field, value):
    if field == "vocab_size" and value == -1:
        value = INT32_MIN  # -1 is a valid header (vocab 1, unshared classifier): see below
    bad = with_header(small_model.read_bytes(), **{field: value})
    with pytest.raises(CheckpointError) as native:
        NativeModel(bad)
    with pytest.raises(CheckpointError) as python:
        read_config(bad)
    for message in (str(native.value), str(python.value)):
        assert message.startswith(f"bad header: {field} = "), message
        assert f"between 1 and {LIMITS[field]}" in message
    if field != "vocab_size":  # (for vocab_size the C side prints the signed field)
        assert str(native.value) == str(python.value)
    cli_rejects(write(tmp_path, "h.bin", bad), f"bad header: {field} = ")


def test_negative_vocab_means_unshared_not_invalid(tmp_path, small_model):
    bad = with_header(small_model.read_bytes(), vocab_size=-1)
    message = library_rejects(bad, "size mismatch")
    cli_rejects(write(tmp_path, "v.bin", bad), "size mismatch")
    assert "bad header" not in message


def test_huge_but_legal_header_needs_a_huge_file(tmp_path, small_model):
    bad = with_header(small_model.read_bytes(), seq_len=LIMITS["seq_len"], n_layers=LIMITS["n_layers"])
    library_rejects(bad, "size mismatch", "truncated")
    cli_rejects(write(tmp_path, "huge.bin", bad), "truncated")


@pytest.mark.parametrize("values,fragment", [
    ({"dim": 30}, "dim 30 is not divisible by n_heads 4"),
    ({"n_heads": 5, "dim": 40}, "n_heads 5 is not divisible by n_kv_heads 2"),
    ({"n_kv_heads": 3}, "n_heads 4 is not divisible by n_kv_heads 3"),
    ({"n_kv_heads": 8}, "n_heads 4 is not divisible by n_kv_heads 8"),
    ({"dim": 12, "n_heads": 4}, "head size 3 is odd"),
])
def test_inconsistent_header(tmp_path, small_model, values, fragment):
    bad = with_header(small_model.read_bytes(), **values)
    library_rejects(bad, "bad header", fragment)
    cli_rejects(write(tmp_path, "i.bin", bad), fragment)


def test_random_headers_never_crash(small_model):
    """Any header is either a clean CheckpointError or (here, never) a model."""
    data = small_model.read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(300):
        header = rng.integers(INT32_MIN, INT32_MAX, 7, dtype=np.int64)
        small = rng.random(7) < 0.5
        header[small] = rng.integers(-2, 70, int(small.sum()))
        bad = HEADER.pack(*map(int, header)) + data[HEADER.size:]
        with pytest.raises(CheckpointError):
            NativeModel(bad)
        with pytest.raises(CheckpointError):
            read_config(bad)


# -- tokenizer that does not fit --------------------------------------------------------------


def test_tokenizer_smaller_than_model(stories15m_shaped):
    with pytest.raises(TokenizerError, match="holds 512 tokens but the model's vocab_size is 32000"):
        Tokenizer.load(TOK512, 32000)
    cli_rejects(stories15m_shaped, "holds 512 tokens", "32000", tokenizer=TOK512)


def test_tokenizer_larger_than_model(shared):
    with pytest.raises(TokenizerError, match="more tokens than the model's vocab_size 512"):
        Tokenizer.load(TOKENIZER_32K, 512)
    cli_rejects(STORIES260K, "vocab_size 512", tokenizer=TOKENIZER_32K)


def test_corrupt_tokenizer_file(tmp_path, shared):
    data = bytearray(TOK512.read_bytes())
    data[8:12] = struct.pack("<i", -5)  # token 0's length
    path = write(tmp_path, "tok.bin", bytes(data))
    with pytest.raises(TokenizerError, match="token 0 has a bad length -5"):
        Tokenizer.load(path, 512)
    cli_rejects(STORIES260K, "token 0 has a bad length", tokenizer=path)
    cli_rejects(STORIES260K, "tok.bin", tokenizer=write(tmp_path, "tok.bin", bytes(data[:2000])))


# -- token and position out of range ---------------------------------------------------------------


@pytest.mark.parametrize("token,pos,fragment", [
    (-1, 0, "token -1 out of range [0, 512)"),
    (512, 0, "token 512 out of range [0, 512)"),
    (INT32_MIN, 0, "token -2147483648 out of range"),
    (0, -1, "position -1 out of range [0, 512)"),
    (0, 512, "position 512 out of range [0, 512)"),
    (0, INT32_MAX, "position 2147483647 out of range"),
])
def test_forward_out_of_range(shared, token, pos, fragment):
    with NativeModel.open(STORIES260K) as model:
        good = model.forward(1, 0).copy()
        with pytest.raises(EngineError) as e:
            model.forward(token, pos)
        assert fragment in str(e.value)
        assert not isinstance(e.value, CheckpointError)
        assert np.array_equal(model.forward(1, 0), good)  # the engine still works afterwards


@pytest.mark.parametrize("token,pos", [(2**32 + 5, 0), (5, 2**32), (5, 2**32 + 1)])
def test_forward_rejects_ints_beyond_32_bits(shared, token, pos):
    with NativeModel.open(STORIES260K) as model:
        with pytest.raises(EngineError):
            model.forward(token, pos)


def test_text_needing_tokens_the_model_lacks(tmp_path, make_model):
    """A 200-token model and tokenizer: non-ASCII text needs byte tokens above 200."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(128)]
    pieces += [b" ", b"a", b"b"] + [b"x%d" % i for i in range(200 - len(pieces) - 3)]
    tok = struct.pack("<i", 8) + b"".join(struct.pack("<fi", 0.0, len(p)) + p for p in pieces)
    tok_path = write(tmp_path, "tok200.bin", tok)
    model = make_model(Config(32, 64, 1, 4, 4, 200, 32), seed=4)
    ok = run_cli("run", model, "-z", tok_path, "-n", "8", "-t", "0", "-i", "ab")
    assert ok.returncode == 0, ok.stderr
    assert_one_line_error(run_cli("run", model, "-z", tok_path, "-n", "8", "-i", "日本"),
                          "byte-fallback")


# -- the command line itself -----------------------------------------------------------------------


@pytest.mark.parametrize("args,fragment", [
    (["-x", "1"], "unknown option '-x'"),
    (["--temperature", "1"], "unknown option '--temperature'"),
    (["-tt", "1"], "unknown option '-tt'"),
    (["1.0"], "unknown option '1.0'"),
    (["-n"], "option -n needs a value"),
    (["-t", "0", "-i"], "option -i needs a value"),
    (["-m", "foo"], "unknown mode: foo"),
])
def test_bad_run_flags(shared, args, fragment):
    err = assert_one_line_error(run_cli("run", STORIES260K, "-z", TOK512, *args), fragment)
    assert "--help" in err


def test_missing_model_file(tmp_path, shared):
    assert_one_line_error(run_cli("run", tmp_path / "nope.bin", "-z", TOK512),
                          "cannot open model", "nope.bin")
    assert_one_line_error(run_cli("run", tmp_path, "-z", TOK512), "cannot open model")


def test_missing_tokenizer_file(tmp_path, shared):
    assert_one_line_error(run_cli("run", STORIES260K, "-z", tmp_path / "nope.bin"),
                          "cannot read tokenizer", "nope.bin")
    # without -z the default is ./tokenizer.bin, which is not in an empty folder
    assert_one_line_error(run_cli("run", STORIES260K, cwd=tmp_path), "tokenizer.bin")
    with pytest.raises(CheckpointError, match="cannot open model"):
        NativeModel.open(tmp_path / "nope.bin")


def test_no_arguments(shared):
    assert_one_line_error(run_cli(), "missing a command")
    assert_one_line_error(run_cli("run"), "missing the checkpoint path")
    assert_one_line_error(run_cli("frobnicate"), "unknown command 'frobnicate'")
    exe = shutil.which("llama2c")
    assert exe, "the `llama2c` console script is not installed"
    proc = subprocess.run([exe], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert_one_line_error(proc, "missing a command")


def test_help_is_not_an_error():
    proc = run_cli("--help")
    assert proc.returncode == 0 and b"Usage:" in proc.stdout and proc.stderr == b""


def test_every_library_error_is_a_llama2c_error():
    for cls in (CheckpointError, TokenizerError, EngineError):
        assert issubclass(cls, Llama2cError)


# -- prompts that are not valid UTF-8 -------------------------------------------------------------


def test_bytes_prompt_uses_byte_fallback(shared):
    """The library takes raw bytes: an invalid UTF-8 byte becomes its <0xXX> token, as in run.c."""
    tok = Tokenizer.load(TOK512, 512)
    ids = tok.encode(b"ab\xffcd")
    at = ids.index(0xFF + 3)
    assert ids[:at] == tok.encode("ab")  # nothing merges across a byte token
    decoded = b"".join(tok.decode(p, c) for p, c in zip(ids, ids[1:]))
    assert decoded == b"abcd"  # and safe_printf drops the lone 0xFF when printing


def test_surrogate_escaped_prompt_encodes_like_bytes(shared):
    tok = Tokenizer.load(TOK512, 512)
    text = b"ab\xffcd".decode("utf-8", "surrogateescape")  # what sys.argv holds for those bytes
    assert tok.encode(text) == tok.encode(b"ab\xffcd")


def test_cli_prompt_with_invalid_utf8(shared):
    """run.c byte-falls-back a prompt's invalid UTF-8; the CLI must not die with a traceback."""
    proc = subprocess.run([sys.executable, "-m", "llama2c", "run", str(STORIES260K), "-z", str(TOK512),
                           "-t", "0", "-n", "16", "-i", b"ab\xffcd"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60)
    assert b"Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    # The CLI hands the prompt's raw bytes to the encoder: 0xFF is its byte-fallback token, and
    # stdout is the library's story for those bytes.
    from llama2c.generate import generate
    from llama2c.sampler import Sampler

    tok = Tokenizer.load(TOK512, 512)
    assert 0xFF + 3 in tok.encode(b"ab\xffcd")  # <0xFF> is id 3 + 0xFF in llama2.c's vocabularies
    with NativeModel.open(STORIES260K) as model:
        sampler = Sampler(512, 0.0, 0.9, 1, model.expf)
        expected = b"".join(p.data for p in generate(model, tok, sampler, b"ab\xffcd", 16))
    assert proc.stdout == expected + b"\n"


# -- hostile environment, flags and signals (issue 12) ---------------------------------------------


def run_cli_env(*args, env: dict, **kwargs) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "llama2c", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                          env={**os.environ, **env}, **kwargs)


@pytest.mark.parametrize("value,fragment", [
    ("abc", "LLAMA2C_THREADS='abc' is not a number of threads"),
    ("2.5", "LLAMA2C_THREADS='2.5' is not a number"),
    ("-3", "LLAMA2C_THREADS=-3 is negative"),
])
def test_bad_thread_count_is_one_line(shared, value, fragment):
    proc = run_cli_env("run", STORIES260K, "-z", TOK512, "-n", "4", env={"LLAMA2C_THREADS": value})
    assert_one_line_error(proc, fragment)


def test_more_threads_than_cores_are_lowered_with_a_note(shared):
    """16 threads on 2 cores ran 24 times slower than 1: the count is capped at the cores, and
    stderr says so. The story is the same."""
    from llama2c.native import cores_available

    cores = cores_available()
    args = ("run", STORIES260K, "-z", TOK512, "-n", "24", "-t", "0")
    many = run_cli_env(*args, env={"LLAMA2C_THREADS": str(cores + 14)})
    one = run_cli_env(*args, env={"LLAMA2C_THREADS": "1"})
    assert many.returncode == 0 and many.stdout == one.stdout, many.stderr
    note, toks = many.stderr.decode().splitlines()
    assert note == f"llama2c: LLAMA2C_THREADS={cores + 14} lowered to {cores}, the cores available"
    assert toks.startswith("achieved tok/s: ")
    with NativeModel.open(STORIES260K, threads=cores + 14) as model:  # the API is not capped
        assert model.threads == min(cores + 14, 16)


def test_help_with_stdout_closed_is_one_line():
    proc = subprocess.run(f"{sys.executable} -m llama2c --help >&-", shell=True,
                          capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err == "llama2c: error: standard output is closed: cannot print the usage\n"


def test_tiny_temperature_prints_no_numpy_warnings(shared):
    """-t 1e-45 overflows logits / temperature to inf, as in run.c: no RuntimeWarning on stderr."""
    proc = run_cli_env("run", STORIES260K, "-z", TOK512, "-n", "8", "-t", "1e-45", "-s", "1",
                       env={})
    assert proc.returncode == 0
    assert proc.stderr.decode().splitlines()[0].startswith("achieved tok/s: "), proc.stderr


def test_inspect_missing_file_says_what_run_says(tmp_path):
    proc = run_cli_env("inspect", tmp_path / "nope.bin", env={})
    assert_one_line_error(proc, "cannot open model", "nope.bin")
    assert b"Errno" not in proc.stderr


def test_endless_tokenizer_is_refused_without_reading_it(shared):
    """`-z /dev/zero` used to read until a MemoryError (under a 4 GB limit) or past 5 GB."""
    import resource

    def limit():  # 2 GB of address space: far more than the run needs, far less than /dev/zero
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = run_cli_env("run", STORIES260K, "-z", "/dev/zero", env={}, preexec_fn=limit)
    assert_one_line_error(proc, "/dev/zero: bad max_token_length 0")


def interrupted_before_the_entry_point(err: str) -> bool:
    """On a loaded machine SIGINT can land before llama2c.command.main runs: while CPython starts
    or runpy imports the package (whose __init__ is a library's, and installs no handler). CPython
    prints that itself: either its runpy message, or a traceback through its frozen start-up
    modules and the package's __init__ only."""
    import re

    if err.startswith("Could not import runpy module\n"):
        return True
    frames = re.findall(r'File "([^"]+)"', err)
    return bool(frames) and all(f.startswith("<frozen ") or f.endswith("llama2c/__init__.py")
                                for f in frames)


def test_ctrl_c_during_start_up_is_one_line(shared):
    """SIGINT at moments from the imports to generation: never a traceback, at most one line."""
    import signal
    import time

    for delay in (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6):
        proc = subprocess.Popen([sys.executable, "-m", "llama2c", "run", str(STORIES260K), "-z",
                                 str(TOK512), "-n", "0", "-t", "0"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1].decode()
        if interrupted_before_the_entry_point(err):
            continue  # CPython's start-up, not ours, was interrupted: nothing of ours to check
        assert "Traceback" not in err and err.count("\n") <= 1, (delay, err)
        if proc.returncode == 130:
            assert err == "llama2c: error: interrupted\n", err


def test_quantize_rejects_bad_group_sizes_and_leaves_no_temporary_file(tmp_path, shared):
    out = tmp_path / "q.bin"
    for group in ("0", "-1"):
        proc = subprocess.run([sys.executable, "-m", "llama2c.quantize", str(STORIES260K), str(out),
                               group], capture_output=True, timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err and err.count("\n") == 1, err
        assert f"group size must be a positive number of values, got {group}" in err
        assert sorted(tmp_path.iterdir()) == [], "no OUT.bin.tmp (and no OUT.bin) is left"


def write_checkpoint_for(path, config):
    from llama2c.checkpoint import random_weights, write_checkpoint

    return write_checkpoint(path, config, random_weights(config, seed=0))


def test_quantize_summary_says_larger_when_the_file_grew(tmp_path, capsys):
    """An odd hidden_dim backs the group off to 1: a 4-byte scale per 1-byte value, a file larger
    than fp32's. The summary said "0.81x smaller"."""
    from llama2c.quantize import main as quantize_main

    odd = write_checkpoint_for(tmp_path / "odd.bin", Config(8, 15, 1, 2, 2, 20, 4))
    assert quantize_main([str(odd), str(tmp_path / "q.bin"), "64"]) == 0
    line = capsys.readouterr().out
    assert "group size 1" in line and "x larger than fp32" in line and "smaller" not in line, line
