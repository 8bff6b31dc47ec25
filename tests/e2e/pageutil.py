"""Helpers for the end-to-end tests: paths, page URLs, state waits, and the command line oracle."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]  # the project
SITE = ROOT / "site"  # what `invoke build` writes
WEB = ROOT / "web"
MODELS = SHARED / "models"
GOLDEN = SHARED / "golden" / "stories260K"
RESULTS = ROOT / "test-results"  # screenshots of failed tests

LOAD_TIMEOUT_MS = 90_000  # a cold Pyodide start is 4-5 s; leave room for a busy machine

# URL parameters for run.c's flags (-z is the page's `tokenizer`, a URL).
FLAG_PARAMS = {"-t": "temperature", "-p": "topp", "-s": "seed", "-n": "steps", "-i": "prompt",
               "-m": "mode", "-y": "system"}

# Installed before the page's own scripts on every navigation: records each data-state the page
# goes through, and counts the pieces of text appended to #output (one text node per piece), so a
# test can wait for a transition that may be shorter than a polling interval, and know exactly
# what had been shown when Stop was clicked. Several states may change within one task (ready,
# then generating at autostart): each record's new value is the next record's old value.
PROBE_SCRIPT = """
(() => {
  const probe = window.__l2c = {
    states: [], pieces: 0, stopClicks: 0, piecesAtStop: null, textAtStop: null, stopAt: null,
  };
  new MutationObserver((records) => {
    const changes = records.filter((r) => r.type === 'attributes' && r.target === document.body);
    for (const r of records) {
      if (r.type === 'attributes') {
        const next = changes[changes.indexOf(r) + 1];
        const state = next ? next.oldValue : document.body.dataset.state;
        probe.states.push(state);
        if (state === 'generating') probe.pieces = 0;
      } else if (r.target.id === 'output') {
        for (const node of r.addedNodes) if (node.nodeType === Node.TEXT_NODE) probe.pieces += 1;
      }
    }
  }).observe(document, {
    subtree: true, childList: true, attributes: true, attributeOldValue: true,
    attributeFilter: ['data-state'],
  });
  // Capturing listener: runs before the page's own click handler requests the stop.
  document.addEventListener('click', (event) => {
    if (!event.target || event.target.id !== 'stop') return;
    probe.stopClicks += 1;
    probe.piecesAtStop = probe.pieces;
    probe.textAtStop = document.getElementById('output').textContent;
    probe.stopAt = performance.timeOrigin + performance.now();
  }, true);
})();
"""

# Evaluated in the page's Web Worker once it is ready: counts the 'piece' messages it posts, and
# how many of them it posted after Stop had been requested, by either of the page's two ways: the
# SharedArrayBuffer flag that came with 'generate' (cross-origin isolated pages), or the 'stop'
# message. worker.js looks up self.postMessage and self.onmessage at each call, so wrapping them
# sees everything. (The page's main thread gets pieces in bursts, so only the worker can tell what
# was made after the Stop.)
WORKER_PROBE_SCRIPT = """
() => {
  if (self.__l2c) return true;
  const probe = self.__l2c = {
    posted: 0, afterStop: 0, afterStopTexts: [], flag: null, stopMessage: false,
    stopMessageAt: null, stopSeen: false, usedFlag: false,
  };
  const flagged = () => probe.flag !== null && Atomics.load(probe.flag, 0) !== 0;
  // Once seen, a Stop stays seen: in chat the worker clears the flag when it has ended the reply.
  const stopped = () => (probe.stopSeen ||= probe.stopMessage || flagged());
  const post = self.postMessage.bind(self);
  self.postMessage = (message, ...rest) => {
    if (message && message.type === 'piece') {
      probe.posted += 1;
      if (stopped()) {
        probe.afterStop += 1;
        probe.afterStopTexts.push(message.text);
      }
    }
    return post(message, ...rest);
  };
  const handler = self.onmessage;
  self.onmessage = (event) => {
    const m = event.data;
    if (m && m.type === 'generate') {
      Object.assign(probe, { posted: 0, afterStop: 0, afterStopTexts: [], stopMessage: false,
        stopMessageAt: null, stopSeen: false });
      probe.flag = m.stopFlag ? new Int32Array(m.stopFlag) : null;
      probe.usedFlag = probe.flag !== null;
    }
    if (m && m.type === 'stop') {
      probe.stopMessage = true;
      probe.stopMessageAt = performance.timeOrigin + performance.now();
    }
    return handler.call(self, event);
  };
  return true;
}
"""


def page_query(params: dict[str, str]) -> str:
    """The query string for the page (spaces as %20, like a hand-written link)."""
    return urlencode(params, quote_via=quote)


def args_to_params(args: list[str]) -> dict[str, str]:
    """run.c's flag list (`-t 0 -n 64 -i text`) as the page's URL parameters."""
    assert len(args) % 2 == 0, args
    params = {}
    for flag, value in zip(args[::2], args[1::2]):
        assert flag in FLAG_PARAMS, f"no URL parameter for {flag}"
        params[FLAG_PARAMS[flag]] = value
    return params


def golden_cases() -> list[dict]:
    return json.loads((GOLDEN / "cases.json").read_text())["cases"]


def golden_text(case: dict) -> str:
    """What the page must show: run.c's exact stdout, decoded, without its final newline."""
    data = (GOLDEN / case["output"]).read_bytes()
    assert data.endswith(b"\n"), case["output"]
    return data[:-1].decode("utf-8")


@functools.cache
def cli_story(model: str, tokenizer: str, *args: str) -> str:
    """`python -m llama2c run MODEL -z TOKENIZER ARGS` stdout, decoded, minus its final newline."""
    proc = subprocess.run(
        [sys.executable, "-m", "llama2c", "run", model, "-z", tokenizer, *args],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert proc.stdout.endswith(b"\n"), proc.stdout[-100:]
    return proc.stdout[:-1].decode("utf-8")


# -- driving the page ---------------------------------------------------------------------------


def blank_page(base_url: str, test_site) -> str:
    """The URL of an empty page on the server's origin, for tests that drive engine.js directly
    (with an icon, so the browser asks for no favicon.ico)."""
    (test_site.root / "e2e-blank.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><title>engine</title>')
    return f"{base_url}/e2e-blank.html"


def state(page) -> str:
    return page.evaluate("document.body.dataset.state")


def describe(page) -> str:
    """A one-paragraph picture of the page for assertion messages."""
    info = page.evaluate("""() => ({
      state: document.body.dataset.state,
      states: window.__l2c ? window.__l2c.states : null,
      error: document.getElementById('error').textContent,
      output: document.getElementById('output').textContent.slice(0, 300),
      model: document.getElementById('model-info').textContent,
      progress: document.getElementById('progress-text').textContent,
    })""")
    return json.dumps(info, ensure_ascii=False)


def wait_for_state(page, *targets: str, since: int = 0, timeout: float = LOAD_TIMEOUT_MS) -> str:
    """Waits until the page, after its first `since` recorded states, reaches one of `targets` or
    `error` (which always ends the wait); fails unless it is one of `targets`, returns it."""
    terminal = list(targets) + ([] if "error" in targets else ["error"])
    handle = page.wait_for_function(
        """([since, terminal]) => {
          const seen = window.__l2c.states.slice(since).filter((s) => terminal.includes(s));
          return seen.length ? seen[0] : null;
        }""",
        arg=[since, terminal], timeout=timeout, polling=50)
    reached = handle.json_value()
    assert reached in targets, f"the page reached {reached!r}, expected {targets}: {describe(page)}"
    return reached


def wait_until(page, expression: str, arg=None, timeout_s: float = 120.0):
    """Evaluates `expression` (a function of `arg`, which may be async) every 0.2 s until its value
    is truthy, and returns that value. For async checks: page.wait_for_function takes the Promise
    an async function returns as a truthy value and returns at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        time.sleep(0.2)


def mark(page) -> int:
    """How many states the page has recorded so far (pass to wait_for_state as `since`)."""
    return page.evaluate("window.__l2c.states.length")


def open_page(page, base_url: str, params: dict[str, str], *targets: str) -> str:
    """Navigates to the page with `params` and waits for one of `targets` (default: done)."""
    page.goto(f"{base_url}/?{page_query(params)}")
    return wait_for_state(page, *(targets or ("done",)))


def click_and_wait(page, selector: str, *targets: str, timeout: float = LOAD_TIMEOUT_MS) -> str:
    since = mark(page)
    page.locator(selector).click()
    return wait_for_state(page, *targets, since=since, timeout=timeout)


def output(page) -> str:
    return page.evaluate("document.getElementById('output').textContent")


def report(page) -> dict:
    raw = page.evaluate("document.body.dataset.report")
    assert raw, f"no timing report after done: {describe(page)}"
    return json.loads(raw)
