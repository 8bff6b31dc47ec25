"""The worker's Session (pylib/llama2c/browser.py) on the native engine: the chat the page and the
widget run, line by line from `reply()`, against run.c's chat goldens; Stop in chat; the token view.

The page runs this same Session under Pyodide (tests/e2e check it there); here it is quick to test
every branch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import GOLDEN, MODELS, STORIES260K, TOK512
from llama2c import Sampler, Tokenizer, answer_inputs, chat
from llama2c.generate import generate
from llama2c.browser import Session
from llama2c.native import NativeModel
from llama2c.sampler import TOKEN_VIEW_SIZE, nucleus, softmax

CHATTY = MODELS / "chatty260K.bin"
CHAT_CASES = json.loads((GOLDEN / "chat" / "cases.json").read_text())["cases"]
FLAGS = {"-t": "temperature", "-p": "topp", "-s": "seed", "-n": "steps", "-i": "prompt",
         "-m": "mode", "-y": "system_prompt"}


def session(path=CHATTY) -> Session:
    return Session(None, TOK512.read_bytes(), model=NativeModel.open(path, threads=1))


def options(args: list[str]) -> dict[str, str]:
    return {FLAGS[flag]: value for flag, value in zip(args[::2], args[1::2])}


def run(s: Session, lines: list[str], at_once: bool = False) -> tuple[str, int]:
    """Steps `s` to the end, answering each wait with the next line; (transcript, waits)."""
    if at_once:
        s.reply("\n".join(lines))
        lines = []
    text, waits, pending = [], 0, list(lines)
    while (piece := s.step()) is not None:
        text.append(piece)
        if s.waiting is not None:
            waits += 1
            if not pending:
                break
            s.reply(pending.pop(0))
    return "".join(text), waits


@pytest.mark.parametrize("case", CHAT_CASES, ids=[c["name"] for c in CHAT_CASES])
@pytest.mark.parametrize("at_once", [False, True], ids=["typed", "piped"])
def test_chat_golden_through_replies(shared, case, at_once):
    golden = (GOLDEN / "chat" / case["output"]).read_bytes()
    s = session()
    s.start(options(case["args"]))
    text, waits = run(s, case["stdin_lines"], at_once)
    assert (text + "\n").encode() == golden
    assert waits == (0 if at_once else len(case["stdin_lines"]))


def test_a_long_reply_is_read_as_fgets_reads_it(shared):
    """A line over 511 bytes feeds two of chat's reads, as run.c's fgets(buffer, 512)."""
    long_line = "Lily and Tom " * 45
    s = session(STORIES260K)
    s.start({"mode": "chat", "temperature": "0", "steps": "400"})
    text, _ = run(s, [long_line])
    model = NativeModel.open(STORIES260K, threads=1)
    answers = iter([long_line[:511], long_line[511:]])
    turns = chat(model, Tokenizer.load(TOK512, 512), Sampler(512, 0.0, 0.9, 1, model.expf), None,
                 None, 400)
    expected = [p.text for p in answer_inputs(turns, lambda guide: next(answers, None))]
    assert text == "".join(expected)


def test_stop_ends_the_reply_and_the_chat_goes_on(shared):
    """end_turn() (the page's Stop) ends the reply before its next token: the transcript so far is
    a prefix of the unstopped one, then a newline and `User: `; the next line starts a turn."""
    case = CHAT_CASES[0]
    golden = (GOLDEN / "chat" / case["output"]).read_text()
    s = session()
    s.start(options(case["args"]))
    shown, tokens = [], 0
    s.reply(case["stdin_lines"][0])
    while tokens < 5:
        piece = s.step()
        shown.append(piece)
        tokens += s._viewable
    s.end_turn()
    assert golden.startswith("".join(shown))
    assert s.step() == "\n" and s.step() == "User: " and s.step() == "" and s.waiting == "User: "
    s.reply("Tell me more")
    assert s.step() == "Assistant: "
    rest = [s.step() for _ in range(5)]
    assert all(isinstance(piece, str) for piece in rest) and "".join(rest).strip()


def collect_views(args: dict[str, str], model=STORIES260K) -> list[tuple[str, dict | None]]:
    s = session(model)
    s.start({**args, "token_view": True})
    seen = []
    while (piece := s.step()) is not None:
        seen.append((piece, s.view()))
    return seen


def test_token_view_greedy_top_candidate_is_the_token(shared):
    seen = collect_views({"temperature": "0", "steps": "60", "prompt": "Once upon a time"})
    views = [v for _, v in seen if v is not None]
    assert len(views) >= 40  # every sampled token has one; the forced prompt tokens do not
    assert all(v is None for _, v in seen[:4])
    for v in views:
        assert v["greedy"] and v["nucleus"] is None
        assert v["candidates"][0]["id"] == v["token"]
        assert len(v["candidates"]) == TOKEN_VIEW_SIZE
        probs = [c["p"] for c in v["candidates"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_token_view_top_p_token_is_inside_the_cut(shared):
    seen = collect_views({"temperature": "1", "topp": "0.9", "seed": "7", "steps": "120"})
    views = [v for _, v in seen if v is not None]
    assert len(views) > 100
    for v in views:
        ids = [c["id"] for c in v["candidates"]]
        assert v["nucleus"] >= 1
        if v["token"] in ids:
            assert ids.index(v["token"]) < v["nucleus"]
        else:  # chosen from deeper in the nucleus than the five shown
            assert v["nucleus"] > TOKEN_VIEW_SIZE
    assert any(v["nucleus"] <= 3 for v in views)  # the cut is visible in the five shown


def test_nucleus_size_is_run_c_cut():
    p = softmax(np.array([3.0, 2.0, 1.0, 0.0, -5.0], np.float32))
    # sorted: .644, .237, .087, .032, .0002: the sum first exceeds 0.9 at the third
    assert len(nucleus(p, np.float32(0.9))[0]) == 3
    assert len(nucleus(p, np.float32(0.5))[0]) == 1


def test_the_view_costs_nothing_when_off(shared):
    """Off, the sampler never builds a view: the observe hook stays None and the story is the
    same with the view on (it only watches)."""
    model = NativeModel.open(STORIES260K, threads=1)
    tok = Tokenizer.load(TOK512, 512)
    s = session()
    s.start({"temperature": "1", "seed": "3", "steps": "50"})
    assert s.view() is None
    plain = "".join(p.text for p in generate(model, tok, Sampler(512, 1.0, 0.9, 3, model.expf),
                                             None, 50))
    assert "".join(piece for piece, _ in collect_views(
        {"temperature": "1", "seed": "3", "steps": "50"})) == plain
