"""Firefox too: Debian's firefox-esr runs a golden story through the page, a multi-turn chat
through the page, and a golden story through the widget.

Playwright cannot drive this Firefox (its own Firefox is a download these machines cannot reach),
so a harness page on the site's origin does the driving: it opens the real page in an iframe (and
then the widget), waits for each to finish, and POSTs what each wrote to a small collector on
127.0.0.1, while `firefox-esr --headless` has it open. Firefox does not exit by itself: the test
ends it when the harness says it is finished, or after a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from llama2c.toolchain import FIREFOX

from .conftest import stop_process
from .pageutil import MODELS, SHARED, golden_cases, golden_text, page_query
from .widget_util import ThreadServer, widget_tag

TIMEOUT_SECONDS = int(os.environ.get("L2C_FF_TIMEOUT", 420))  # three Pyodide starts on a busy two-core machine, with room to spare
CASES = {case["name"]: case for case in golden_cases()}
STORY_CASE = CASES["topp_t0.8_p0.9_s42_n128"]
STORY = {"model": "models/stories260K.bin", "tokenizer": "models/tok512.bin",
         "temperature": "0.8", "topp": "0.9", "seed": "42", "steps": "128",
         "prompt": "Once upon a time"}
CHAT_CASE = json.loads((SHARED / "golden" / "chat" / "cases.json").read_text())["cases"][1]
CHAT = {"model": "models/chatty260K.bin", "tokenizer": "models/tok512.bin", "mode": "chat",
        "temperature": "0.8", "topp": "0.9", "seed": "42", "steps": "300",
        "chatinput": "\n".join(CHAT_CASE["stdin_lines"])}
assert CHAT_CASE["args"] == ["-m", "chat", "-t", "0.8", "-p", "0.9", "-s", "42", "-n", "300"]

# Quiet first start: no first-run pages, reports or update checks in the throwaway profile.
PREFS = """
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.update.enabled", false);
user_pref("browser.aboutwelcome.enabled", false);
"""


class Collector:
    """Takes POST /report bodies (JSON) from the harness page: another origin, so CORS allows it."""

    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.finished = threading.Event()
        self.server = ThreadServer(self)  # the collector is its own ASGI app
        self.url = f"http://127.0.0.1:{self.server.port}/report"

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            report = json.loads(body)
            self.reports.append(report)
            if report.get("name") == "finished":
                self.finished.set()
        await send({"type": "http.response.start", "status": 204,
                    "headers": [(b"access-control-allow-origin", b"*"),
                                (b"access-control-allow-headers", b"content-type")]})
        await send({"type": "http.response.body", "body": b""})


def harness(collector: str) -> str:
    """The harness page: the page in an iframe (a story, then a chat), then the widget."""
    story = f"./?{page_query({**STORY, 'autostart': '1'})}"
    chat = f"./?{page_query({**CHAT, 'autostart': '1'})}"
    widget = widget_tag("story", {k: v for k, v in STORY.items()})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Firefox harness</title></head>
<body>
<iframe id="frame" width="900" height="600" title="the page"></iframe>
{widget}
<script type="module">
  const report = (name, data) => fetch({json.dumps(collector)}, {{
    method: 'POST', mode: 'cors', headers: {{ 'Content-Type': 'text/plain' }},
    body: JSON.stringify({{ name, ...data }}) }});
  addEventListener('error', (e) => report('error', {{ message: String(e.message) }}));
  addEventListener('unhandledrejection', (e) => report('error', {{ message: String(e.reason) }}));
  await report('started', {{}});

  function runPage(url) {{
    return new Promise((resolve) => {{
      const frame = document.getElementById('frame');
      frame.onload = () => {{
        const poll = setInterval(() => {{
          const doc = frame.contentDocument;
          const state = doc && doc.body && doc.body.dataset.state;
          if (state === 'done' || state === 'error') {{
            clearInterval(poll);
            resolve({{ state, text: doc.getElementById('output').textContent,
                       error: doc.getElementById('error').textContent }});
          }}
        }}, 100);
      }};
      frame.src = url;
    }});
  }}

  await report('story', await runPage({json.dumps(story)}));
  await report('chat', await runPage({json.dumps(chat)}));
  document.getElementById('frame').remove();
  await import('./llama2c-widget.js');
  const el = document.getElementById('story');
  try {{
    const text = await el.generate();
    await report('widget', {{ state: el.state, text }});
  }} catch (e) {{
    await report('widget', {{ state: el.state, error: e.message }});
  }}
  await report('finished', {{ userAgent: navigator.userAgent }});
</script>
</body></html>
"""


def test_firefox_writes_the_goldens(dev_server, test_site, tmp_path):
    if not os.access(FIREFOX, os.X_OK):
        pytest.fail(f"{FIREFOX} not found: `apt-get install -y firefox-esr` (invoke setup does)",
                    pytrace=False)
    test_site.add(MODELS / "chatty260K.bin")
    collector = Collector()
    (test_site.root / "e2e-firefox.html").write_text(harness(collector.url))
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "user.js").write_text(PREFS)
    log = tmp_path / "firefox.log"
    with log.open("wb") as out:
        firefox = subprocess.Popen(
            ["timeout", str(TIMEOUT_SECONDS), FIREFOX, "--headless", "--no-remote", "--profile",
             str(profile), f"{dev_server}/e2e-firefox.html"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"})
        try:
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while not collector.finished.wait(1):
                if firefox.poll() is not None or time.monotonic() > deadline:
                    break
        finally:
            stop_process(firefox, 20)
            collector.server.close()
    reports = {r["name"]: r for r in collector.reports}
    tail = log.read_text(errors="replace")[-2000:]
    assert "finished" in reports, f"the harness did not finish: {collector.reports}\n{tail}"
    assert "error" not in reports, reports["error"]
    assert "Firefox/" in reports["finished"]["userAgent"]
    assert reports["story"]["state"] == "done", reports["story"]
    assert reports["story"]["text"] == golden_text(STORY_CASE)
    chat_golden = (SHARED / "golden" / "chat" / CHAT_CASE["output"]).read_bytes()[:-1].decode()
    assert reports["chat"]["state"] == "done", reports["chat"]
    assert reports["chat"]["text"] == chat_golden
    assert reports["widget"] == {"name": "widget", "state": "done",
                                 "text": golden_text(STORY_CASE)}, reports["widget"]
    Path(tmp_path / "reports.json").write_text(json.dumps(collector.reports, indent=1))
