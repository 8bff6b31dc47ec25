"""Chat as a conversation, in the page and the widget: every multi-turn golden of run.c
(../shared/golden/chat, with chatty260K, a model that ends its replies) three ways, Stop in the
middle of a reply, and "New chat".

The transcript is what `llama2c run -m chat` prints with the same lines on standard input, one per
read: the guides (`User: `, `Assistant: `) and the model's words, never the typed lines.
"""

from __future__ import annotations

import json

import pytest

from llama2c.browser import Session
from llama2c.native import NativeModel

from .pageutil import (LOAD_TIMEOUT_MS, MODELS, SHARED, WORKER_PROBE_SCRIPT, mark, open_page,
                       output, page_query, wait_for_state)
from .widget_util import host_page, widget_tag

CHAT_GOLDEN = SHARED / "golden" / "chat"
CHAT_CASES = json.loads((CHAT_GOLDEN / "cases.json").read_text())["cases"]
FLAGS = {"-t": "temperature", "-p": "topp", "-s": "seed", "-n": "steps", "-i": "prompt",
         "-m": "mode", "-y": "system"}
CHATTY = {"model": "models/chatty260K.bin", "tokenizer": "models/tok512.bin"}


def params(case: dict) -> dict[str, str]:
    args = case["args"]
    return {FLAGS[flag]: value for flag, value in zip(args[::2], args[1::2])}


def golden(case: dict) -> str:
    data = (CHAT_GOLDEN / case["output"]).read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].decode("utf-8")


@pytest.fixture(scope="module")
def chatty(test_site) -> dict[str, str]:
    test_site.add(MODELS / "chatty260K.bin")
    return CHATTY


def test_every_chat_case_asks_for_every_line():
    """The goldens are multi-turn: each has more lines than one, and one has no system prompt."""
    assert len(CHAT_CASES) >= 2
    assert all(len(case["stdin_lines"]) > 2 and case["turns"] > 2 for case in CHAT_CASES)
    assert any("-y" not in case["args"] for case in CHAT_CASES)


@pytest.mark.parametrize("case", CHAT_CASES, ids=[c["name"] for c in CHAT_CASES])
def test_chat_golden_through_chatinput(page, dev_server, chatty, case):
    lines = "\n".join(case["stdin_lines"])
    open_page(page, dev_server, {**chatty, **params(case), "chatinput": lines, "autostart": "1"})
    assert output(page) == golden(case)


@pytest.mark.parametrize("case", CHAT_CASES, ids=[c["name"] for c in CHAT_CASES])
def test_chat_golden_typed_into_the_input_box(page, dev_server, chatty, case):
    page.goto(f"{dev_server}/?{page_query({**chatty, **params(case), 'autostart': '1'})}")
    since = 0
    for line in case["stdin_lines"]:
        wait_for_state(page, "waiting", since=since)
        since = mark(page)
        box = page.locator("#chat-input")
        assert box.is_enabled() and page.locator("#chat-guide").text_content() in (
            "User:", "Enter system prompt (optional):")
        box.fill(line)
        box.press("Enter")
    wait_for_state(page, "done", since=since)
    assert output(page) == golden(case)


@pytest.mark.parametrize("case", CHAT_CASES, ids=[c["name"] for c in CHAT_CASES])
def test_chat_golden_through_the_widget_reply(page, dev_server, test_site, chatty, case):
    """The widget's reply(text): the same transcript as the command line and the page."""
    body = "\n".join([widget_tag("chat", {**chatty, **params(case)}),
                      '<script type="module" src="llama2c-widget.js"></script>'])
    (test_site.root / "e2e-chat-reply.html").write_text(host_page("chat", body))
    page.goto(f"{dev_server}/e2e-chat-reply.html")
    result = page.evaluate("""async (lines) => {
      await customElements.whenDefined('llama2c-story');
      const el = document.getElementById('chat');
      const states = [];
      let text = await el.generate();
      for (const line of lines) {
        states.push(el.state);
        text = await el.reply(line);
      }
      return { text, states, final: el.state, shown: el.shadowRoot.querySelector('.story').textContent };
    }""", case["stdin_lines"])
    assert result["states"] == ["waiting"] * len(case["stdin_lines"]), result
    assert result["final"] == "done"
    assert result["text"] == golden(case)
    assert result["shown"] == golden(case)


def native_chat(model: str, prompt: str, steps: str, stop_after: str, line: str) -> tuple[str, str]:
    """The Session on the native engine: chat without -y, stdin "" then the stop, then `line`.
    Returns (text up to the stop, the whole transcript)."""
    s = Session(None, (MODELS / "tokenizer.bin").read_bytes(),
                model=NativeModel.open(model, threads=1))
    s.start({"mode": "chat", "prompt": prompt, "temperature": "0", "steps": steps})
    text = ""
    s.reply("")  # the system prompt, read first
    while text != stop_after:
        piece = s.step()
        assert piece is not None and stop_after.startswith(text + piece), (text, piece)
        text += piece
    s.end_turn()
    s.reply(line)
    whole = text
    while (piece := s.step()) is not None:
        whole += piece
    return text, whole


def test_stop_ends_a_reply_and_the_chat_goes_on(page, dev_server, random15m):
    """Stop in a reply: at most one more token, then chat asks `User: `; the transcript up to there
    is a prefix of the unstopped one; the next line starts the next turn, exactly as the Session
    on the native engine continues after the same stop."""
    # stories15M-shaped with random weights: slow enough to stop, and its replies never end
    settings = {"model": random15m["model"], "tokenizer": random15m["tokenizer"], "mode": "chat",
                "prompt": "Once upon a time", "temperature": "0", "steps": "100", "chatinput": ""}
    full = open_page(page, dev_server, {**settings, "autostart": "1"}, "done") and output(page)
    page.goto(f"{dev_server}/?{page_query(settings)}")
    wait_for_state(page, "ready")
    workers = [w for w in page.workers if w.url.endswith("/worker.js")]
    assert len(workers) == 1 and workers[0].evaluate(WORKER_PROBE_SCRIPT) is True
    since = mark(page)
    page.locator("#generate").click()
    page.wait_for_function("() => window.__l2c.pieces >= 8", polling="raf",
                           timeout=LOAD_TIMEOUT_MS)
    page.locator("#stop").click()
    wait_for_state(page, "waiting", since=since)
    probe = page.evaluate("window.__l2c")
    worker = workers[0].evaluate("self.__l2c")
    stopped = output(page)
    assert stopped.endswith("\nUser: ")
    reply = stopped[: -len("\nUser: ")]
    assert reply.startswith(probe["textAtStop"])
    assert full.startswith(reply) and len(reply) < len(full), "Stop did not end the reply early"
    # After the Stop: at most the token being computed, then the newline and the guide.
    tokens_after = worker["afterStopTexts"][:-2]
    assert worker["afterStopTexts"][-2:] == ["\n", "User: "], worker
    assert len(tokens_after) <= 1, worker
    assert page.evaluate("document.activeElement.id") == "chat-input"

    since = mark(page)
    page.locator("#chat-input").fill("Tell me more")
    page.locator("#chat-input").press("Enter")
    wait_for_state(page, "done", since=since)
    at_stop, whole = native_chat(random15m["path"], "Once upon a time", "100", reply,
                                 "Tell me more")
    assert at_stop == reply
    assert output(page) == whole
    assert "\nUser: Assistant: " in output(page)[len(reply):]


def test_new_chat_starts_again(page, dev_server, chatty):
    case = CHAT_CASES[0]
    first = case["stdin_lines"][0]
    page.goto(f"{dev_server}/?{page_query({**chatty, **params(case), 'chatinput': first, 'autostart': '1'})}")
    wait_for_state(page, "waiting")
    once = output(page)
    assert golden(case).startswith(once) and once.endswith("User: ")
    since = mark(page)
    page.locator("#new-chat").click()
    wait_for_state(page, "waiting", since=since)
    assert output(page) == once  # the same seed and line: the same first turn, from the start
