"""The command line and the library reproduce llama2.c's run.c byte for byte on stories260K.

The goldens in ../shared/golden/stories260K are the exact stdout of the reference run.c
(karpathy/llama2.c @ 350e04f) for `run stories260K.bin -z tok512.bin <args>`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import GOLDEN, MODELS, STORIES260K, TOK512, run_cli
from llama2c import BOS, EOS, Sampler, Stats, Tokenizer, answer_inputs, chat
from llama2c.generate import generate
from llama2c.native import NativeModel

CASES_FILE = GOLDEN / "stories260K" / "cases.json"
# Read at collection: a missing golden set is a collection error, never a silent pass.
CASES = {case["name"]: case for case in json.loads(CASES_FILE.read_text())["cases"]}
# runq.c's stdout on stories260K_q80.bin (int8), same layout
Q80_CASES = {case["name"]: case for case in
             json.loads((GOLDEN / "stories260K_q80" / "cases.json").read_text())["cases"]}
TOKS_LINE = re.compile(rb"\Aachieved tok/s: [0-9]+\.[0-9]{6}\n\Z")


def golden(name: str) -> bytes:
    return (GOLDEN / "stories260K" / CASES[name]["output"]).read_bytes()


def expects_tok_s(case: dict) -> bool:
    """run.c prints the tok/s line in generate mode only, and only when pos > 1."""
    args = case["args"]
    chat_mode = "-m" in args and args[args.index("-m") + 1] == "chat"
    return not chat_mode and case["trace"]["forwards"] > 1  # non-chat cases all carry a trace


def test_golden_set_is_complete(shared):
    names = set(CASES)
    assert len(names) >= 13
    for required in ("greedy_once_n64", "greedy_n1", "chat_greedy_sys", "greedy_once_n0",
                     "topp_t0.8_p0.9_s42_n128", "mult_t1.0_p1.0_s7_n128"):
        assert required in names
    for case in CASES.values():
        data = golden(case["name"])
        assert len(data) == case["stdout_bytes"]
        assert hashlib.sha256(data).hexdigest() == case["stdout_sha256"]


def run_golden(model: str, case: dict, threads: str, monkeypatch):
    """`llama2c run MODEL.bin -z tok512.bin ARGS` on `threads` threads: stdout must be the
    golden's, byte for byte. Returns the finished process."""
    monkeypatch.setenv("LLAMA2C_THREADS", threads)
    proc = run_cli("run", f"{model}.bin", "-z", "tok512.bin", *case["args"], cwd=MODELS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == (GOLDEN / model / case["output"]).read_bytes()  # hence its length
    return proc


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_matches_golden(shared, name, threads, monkeypatch):
    """Every golden, on one thread and on two (stories260K alone would run on one)."""
    case = CASES[name]
    proc = run_golden("stories260K", case, threads, monkeypatch)
    assert hashlib.sha256(proc.stdout).hexdigest() == case["stdout_sha256"]
    if expects_tok_s(case):
        assert TOKS_LINE.match(proc.stderr), proc.stderr
        assert float(proc.stderr.split(b":")[1]) > 0
    else:
        assert proc.stderr == b"", proc.stderr


def test_two_threads_mean_two_threads(shared, monkeypatch):
    """The goldens' "2" runs compute on two threads: LLAMA2C_THREADS=2 is not lowered here."""
    from llama2c.native import NativeModel, cores_available

    assert cores_available() >= 2, "these tests need 2 cores to run the goldens on 2 threads"
    monkeypatch.setenv("LLAMA2C_THREADS", "2")
    for model in ("stories260K.bin", "stories260K_q80.bin"):
        with NativeModel.open(MODELS / model) as engine:
            assert engine.threads == 2, model


def test_tok_s_expectations_cover_both_ways():
    """The stderr check above is exercised both ways: some cases print tok/s, some must not."""
    with_line = [n for n, c in CASES.items() if expects_tok_s(c)]
    without = [n for n, c in CASES.items() if not expects_tok_s(c)]
    assert "greedy_once_n64" in with_line
    assert {"greedy_n1", "chat_greedy_sys"} <= set(without)


def test_console_script_matches_python_m(shared):
    exe = shutil.which("llama2c")
    assert exe, "the `llama2c` console script is not installed (pip install -e .)"
    args = ["run", "stories260K.bin", "-z", "tok512.bin", *CASES["topp_t0.8_p0.9_s42_n128"]["args"]]
    script = subprocess.run([exe, *args], cwd=MODELS, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=120)
    module = run_cli(*args, cwd=MODELS)
    assert script.returncode == 0 == module.returncode, script.stderr
    assert script.stdout == module.stdout == golden("topp_t0.8_p0.9_s42_n128")
    assert TOKS_LINE.match(script.stderr)


def test_cli_identities_not_in_goldens(shared):
    """-n above seq_len is seq_len; -t 0 ignores -p and -s; -p above 1 becomes 0.9."""
    over = run_cli("run", "stories260K.bin", "-z", "tok512.bin", "-t", "0", "-n", "100000",
                   "-i", "Once upon a time", cwd=MODELS)
    assert over.stdout == golden("greedy_once_n0")
    greedy = run_cli("run", "stories260K.bin", "-z", "tok512.bin", "-t", "0", "-p", "0.3",
                     "-s", "99", "-n", "64", "-i", "Once upon a time", cwd=MODELS)
    assert greedy.stdout == golden("greedy_once_n64")
    clamped = run_cli("run", "stories260K.bin", "-z", "tok512.bin", "-t", "0.8", "-p", "7",
                      "-s", "42", "-n", "128", "-i", "Once upon a time", cwd=MODELS)
    assert clamped.stdout == golden("topp_t0.8_p0.9_s42_n128")


# -- the same identities through the library, without a subprocess ------------------------------


@pytest.fixture(scope="module")
def model(shared):
    with NativeModel.open(STORIES260K) as m:
        yield m


@pytest.fixture(scope="module")
def tok(shared):
    return Tokenizer.load(TOK512, 512)


def story(model, tok, temperature, topp, seed, prompt, steps, stats=None):
    # the engine's expf, as the command line uses: probabilities equal run.c's to the bit
    sampler = Sampler(model.config.vocab_size, temperature, topp, seed, model.expf)
    pieces = list(generate(model, tok, sampler, prompt, steps, stats))
    return b"".join(p.data for p in pieces) + b"\n", pieces


def test_library_generate_matches_goldens(model, tok):
    assert story(model, tok, 0.0, 0.9, 1, "Once upon a time", 64)[0] == golden("greedy_once_n64")
    assert story(model, tok, 0.0, 0.9, 1, "Lily met a", 64)[0] == golden("greedy_lily_n64")
    assert story(model, tok, 0.8, 0.9, 42, "Once upon a time", 128)[0] == golden(
        "topp_t0.8_p0.9_s42_n128")
    assert story(model, tok, 0.5, 0.5, 1234, "Once upon a time", 128)[0] == golden(
        "topp_t0.5_p0.5_s1234_n128")
    assert story(model, tok, 1.0, 0.9, 133742, None, 256)[0] == golden("doc_t1.0_p0.9_s133742")


def test_library_tokens_follow_trace(model, tok):
    for name in ("greedy_once_n64", "topp_t0.8_p0.9_s42_n128", "doc_t1.0_p0.9_s133742"):
        trace = CASES[name]["trace"]
        args = dict(zip(CASES[name]["args"][::2], CASES[name]["args"][1::2]))
        prompt = args.get("-i")
        assert tok.encode(prompt or "", bos=True, eos=False) == trace["prompt_tokens"]
        _, pieces = story(model, tok, float(args["-t"]), float(args.get("-p", 0.9)),
                          int(args.get("-s", 0)), prompt, int(args.get("-n", 256)))
        assert [p.token for p in pieces] == trace["next_tokens"]
        assert [p.pos for p in pieces] == list(range(1, len(pieces) + 1))


def test_steps_above_seq_len_equal_seq_len(model, tok):
    n0 = golden("greedy_once_n0")
    for steps in (0, -5, 512, 513, 10**6):
        assert story(model, tok, 0.0, 0.9, 1, "Once upon a time", steps)[0] == n0, steps


def test_generation_stops_only_on_bos(model, tok):
    stats = Stats()
    out, pieces = story(model, tok, 0.0, 0.9, 1, "Once upon a time", 0, stats)
    trace = CASES["greedy_once_n0"]["trace"]
    assert trace["stop_reason"] == "bos" and trace["next_tokens"][-1] == BOS
    assert stats.pos == trace["forwards"] == 346 < model.config.seq_len
    assert [p.token for p in pieces] == trace["next_tokens"][:-1]
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0
    assert stats.forward_calls == 346


class ScriptedModel:
    """A backend whose logits make greedy sampling pick a scripted token at each position."""

    def __init__(self, script, vocab_size=512, seq_len=64):
        from llama2c.checkpoint import Config

        self.config = Config(64, 64, 1, 8, 8, vocab_size, seq_len)
        self.script = script
        self.calls = []

    def forward(self, token, pos):
        self.calls.append((token, pos))
        logits = np.zeros(self.config.vocab_size, np.float32)
        logits[self.script[pos]] = 1.0
        return logits

    def close(self):
        pass


def test_eos_does_not_stop_generation_but_bos_does(tok):
    script = [300, EOS, 301, EOS, EOS, 302, BOS, 303, 304]
    model = ScriptedModel(script)
    stats = Stats()
    pieces = list(generate(model, tok, Sampler(512, 0.0, 0.9, 1), None, 0, stats))
    assert [p.token for p in pieces] == [300, EOS, 301, EOS, EOS, 302]
    assert stats.pos == 7  # the forward that produced BOS counts, as run.c's pos++ does
    assert model.calls == [(BOS, 0), (300, 1), (EOS, 2), (301, 3), (EOS, 4), (EOS, 5), (302, 6)]
    # EOS decodes to its piece, exactly what run.c prints for it
    assert pieces[1].data == tok.pieces[EOS]


def test_prompt_tokens_are_forced_then_sampled(tok):
    prompt = "Once upon a time"
    ids = tok.encode(prompt)
    model = ScriptedModel([7] * 64)
    pieces = list(generate(model, tok, Sampler(512, 0.0, 0.9, 1), prompt, 10))
    assert [p.token for p in pieces] == ids[1:] + [7] * (10 - len(ids) + 1)
    assert [c[0] for c in model.calls] == ids + [7] * (10 - len(ids))
    # a prompt longer than the steps is cut short: steps counts prompt tokens too
    model = ScriptedModel([7] * 64)
    pieces = list(generate(model, tok, Sampler(512, 0.0, 0.9, 1), prompt, 2))
    assert [p.token for p in pieces] == ids[1:3] and len(model.calls) == 2


def test_n1_gives_one_piece_and_no_rate(model, tok):
    stats = Stats()
    out, pieces = story(model, tok, 0.0, 0.9, 1, "Once upon a time", 1, stats)
    assert out == golden("greedy_n1")
    assert len(pieces) == 1 and stats.pos == 1 and stats.tokens_per_second is None


def test_empty_prompt_equals_no_prompt(model, tok):
    assert (story(model, tok, 0.0, 0.9, 1, "", 64)[0] == story(model, tok, 0.0, 0.9, 1, None, 64)[0]
            == golden("greedy_empty_n64"))


def test_greedy_ignores_topp_and_seed(model, tok):
    for topp, seed in ((0.9, 1), (0.1, 2), (0.0, 12345), (1.0, 2**63 + 7)):
        assert story(model, tok, 0.0, topp, seed, "Once upon a time", 64)[0] == golden(
            "greedy_once_n64")


def test_topp_zero_and_one_are_multinomial(model, tok):
    expected = golden("mult_t1.0_p1.0_s7_n128")
    assert expected == golden("topp_zero_is_mult")
    for topp in (0.0, 1.0, -0.0, 1.5):
        assert story(model, tok, 1.0, topp, 7, "Once upon a time", 128)[0] == expected, topp
    # a real top-p differs from multinomial with the same seed: the identity is not vacuous
    assert story(model, tok, 1.0, 0.5, 7, "Once upon a time", 128)[0] != expected


def test_seeds_reproduce_and_differ(model, tok):
    a = story(model, tok, 1.0, 0.9, 5, "Once upon a time", 96)[0]
    b = story(model, tok, 1.0, 0.9, 5, "Once upon a time", 96)[0]
    c = story(model, tok, 1.0, 0.9, 6, "Once upon a time", 96)[0]
    assert a == b
    assert a != c
    # the seed is a 64-bit unsigned value: only its low 64 bits matter
    d = story(model, tok, 1.0, 0.9, 5 + 2**64, "Once upon a time", 96)[0]
    assert d == a


def test_library_chat_matches_golden(model, tok):
    sampler = Sampler(512, 0.0, 0.9, 1)
    turns = chat(model, tok, sampler, "Once upon a time", "You tell stories.", 80)
    pieces = list(answer_inputs(turns, lambda guide: None))  # stdin at end of file
    assert b"".join(p.data for p in pieces) + b"\n" == golden("chat_greedy_sys")
    text = "".join(p.text for p in pieces)
    assert text.encode() == golden("chat_greedy_sys")[:-1]


def test_pieces_text_matches_bytes(model, tok):
    _, pieces = story(model, tok, 1.0, 0.9, 133742, None, 256)
    assert "".join(p.text for p in pieces).encode("utf-8") == b"".join(p.data for p in pieces)


def test_logits_are_float32_vocab_vectors(model):
    logits = model.forward(BOS, 0)
    assert logits.dtype == np.float32 and logits.shape == (512,)
    assert np.isfinite(logits).all() and logits.std() > 0.1


def test_cli_chat_reads_turns_from_stdin(model, tok):
    """Interactive chat: the system prompt and the user turn come from stdin, read as run.c's
    fgets(buffer, 512) does: at most 511 bytes a read, so a long line feeds two reads."""
    long_line = "Lily and Tom " * 45  # 585 bytes
    proc = subprocess.run(
        [sys.executable, "-m", "llama2c", "run", "stories260K.bin", "-z", "tok512.bin", "-m", "chat",
         "-t", "0", "-n", "400"], cwd=MODELS, input=long_line.encode() + b"\nignored\n",
        capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # chat prints no tok/s line

    def library(answers):
        it = iter(answers)
        turns = chat(model, tok, Sampler(512, 0.0, 0.9, 1), None, None, 400)
        return b"".join(p.data for p in answer_inputs(turns, lambda guide: next(it, None))) + b"\n"

    assert proc.stdout == library([long_line[:511], long_line[511:]])
    assert proc.stdout != library([long_line, "ignored"])  # the split is visible in the story
    assert proc.stdout.startswith(b"Enter system prompt (optional): User: Assistant: ")


# -- int8: llama2.c's runq.c on stories260K_q80.bin ---------------------------------------------


def test_q80_golden_set_is_there():
    assert len(Q80_CASES) >= 3 and any("chat" in args for args in
                                       (" ".join(c["args"]) for c in Q80_CASES.values()))


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("name", sorted(Q80_CASES))
def test_cli_matches_runq_golden(shared, name, threads, monkeypatch):
    """int8: the command line prints runq.c's exact stdout, on one thread and on two."""
    run_golden("stories260K_q80", Q80_CASES[name], threads, monkeypatch)
