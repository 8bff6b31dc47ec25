"""Helpers for the widget, cache and accessibility tests: servers that count what they send, a
second origin for host pages, fresh browser contexts, and axe-core.

- `site_server`: the real dev server (llama2c.devserver.create_app on the test site) behind an ASGI
  wrapper that records every request it answered: method, path, status and the body bytes it sent.
  It is origin A, http://127.0.0.1:PORT.
- `host_server`: origin B, http://localhost:PORT (another origin: another host name), serving the
  HTML pages a test registers with `host_server.add(name, html)`. No COOP/COEP, no CORS: a page
  anyone could write.
- `fresh_context(**options)`: a new browser context (empty HTTP cache, empty Cache Storage), closed
  after the test; `open_tab(request, context)` a tab in it whose browser errors fail the test, as in
  conftest.py.
- `axe_script`: the path of axe.min.js from the npm registry's axe-core (AXE_VERSION), installed into
  .cache/node (git-ignored) on first use.

Import the fixtures into a test module (`from .widget_util import site_server  # noqa: F401`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ConsoleLog
from .pageutil import LOAD_TIMEOUT_MS, PROBE_SCRIPT, ROOT

NODE_PREFIX = ROOT / ".cache" / "node"  # git-ignored; `npm install --prefix` puts packages here
AXE_VERSION = "4.14.1"  # pinned: a new axe release adds rules, which would change what passes
AXE_SPEC = f"axe-core@{AXE_VERSION}"
AXE_PACKAGE = NODE_PREFIX / "node_modules" / "axe-core"
AXE_SCRIPT = AXE_PACKAGE / "axe.min.js"
AXE_INSTALL = ["npm", "install", "--prefix", str(NODE_PREFIX), "--no-save", "--no-audit",
               "--no-fund", "--no-package-lock", AXE_SPEC]


# -- a server that counts what it sends -----------------------------------------------------------


@dataclass
class Entry:
    """One request the server answered."""

    method: str
    path: str
    status: int = 0
    sent: int = 0  # body bytes
    headers: dict[str, str] = field(default_factory=dict)  # the request's
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def __repr__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} ({self.sent} bytes)"


class RequestLog:
    """Every request the wrapped app answered, in order (appended by the server's thread)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def mark(self) -> int:
        return len(self.entries)

    def since(self, mark: int = 0, path: str | None = None) -> list[Entry]:
        return [e for e in self.entries[mark:] if path is None or e.path == path]

    def summary(self, mark: int = 0) -> str:
        return "\n  ".join(map(repr, self.entries[mark:])) or "(no requests)"


class CountingApp:
    """ASGI wrapper: records each HTTP request with the status and body bytes actually sent."""

    def __init__(self, app, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = Entry(scope["method"], "/" + scope["path"].lstrip("/"),
                      headers={k.decode("latin-1"): v.decode("latin-1")
                               for k, v in scope["headers"]})
        self.log.entries.append(entry)

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            elif message["type"] == "http.response.body":
                entry.sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":  # not offered by uvicorn; in case
                entry.sent += os.path.getsize(message["path"])
            await send(message)

        await self.app(scope, receive, counting_send)


class ThreadServer:
    """uvicorn running `app` in a daemon thread on 127.0.0.1 and a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True, name=f"server-{self.port}")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("a test server did not start", pytrace=False)
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@dataclass
class SiteServer:
    base: str  # http://127.0.0.1:PORT
    log: RequestLog

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


@pytest.fixture(scope="session")
def site_server(test_site) -> SiteServer:
    """Origin A: the dev server app on the test site, with a log of every request it answered."""
    from llama2c.devserver import create_app

    log = RequestLog()
    server = ThreadServer(CountingApp(create_app(test_site.root), log))
    yield SiteServer(f"http://127.0.0.1:{server.port}", log)
    server.close()


class HostServer:
    """Origin B: serves registered HTML pages, nothing else (404 for the rest)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.log = RequestLog()
        self.server = ThreadServer(CountingApp(self._app, self.log))
        self.base = f"http://localhost:{self.server.port}"  # not 127.0.0.1: another origin

    async def _app(self, scope, receive, send) -> None:
        html = self.pages.get(scope["path"].lstrip("/"))
        body = (html if html is not None else "not found").encode()
        await send({"type": "http.response.start", "status": 200 if html is not None else 404,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def add(self, name: str, html: str) -> str:
        """Serves `html` at /name; returns its URL."""
        self.pages[name] = html
        return f"{self.base}/{name}"


@pytest.fixture(scope="session")
def host_server() -> HostServer:
    host = HostServer()
    yield host
    host.server.close()


def host_page(title: str, body: str, head: str = "") -> str:
    """A minimal, valid host page (no favicon request)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<link rel="icon" href="data:,"><title>{title}</title>{head}</head>\n'
            f"<body>\n{body}\n</body></html>\n")


# -- browser contexts and tabs --------------------------------------------------------------------


@pytest.fixture
def fresh_context(browser):
    """fresh_context(**new_context_options): a new context (no cache of any kind), with the page
    state probe of pageutil installed; closed after the test."""
    made = []

    def make(**options):
        options.setdefault("viewport", {"width": 1100, "height": 900})
        context = browser.new_context(**options)
        context.add_init_script(PROBE_SCRIPT)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def open_tab(request, context, name: str = "tab"):
    """A new tab whose console is watched like conftest's `page`: browser errors fail the test and
    the console is attached to the report (and a failed test leaves a screenshot)."""
    page = context.new_page()
    log = ConsoleLog(page)
    request.node.__dict__.setdefault("l2c_pages", []).append((name, page, log))
    return page, log


# -- widgets --------------------------------------------------------------------------------------

# Installed in a host page before the widgets upgrade: records every widget event by element id.
EVENTS_SCRIPT = """
<script>
  window.__events = {};
  for (const el of document.querySelectorAll('llama2c-story')) {
    const log = window.__events[el.id] = [];
    for (const type of ['progress', 'token', 'done', 'error']) {
      el.addEventListener(type, (event) => log.push({ type, detail: JSON.parse(JSON.stringify(
        event.detail, (key, value) => (key === 'report' ? undefined : value))) }));
    }
  }
</script>"""


def widget_tag(id_: str, attributes: dict[str, str]) -> str:
    from html import escape

    attrs = " ".join(f'{name}="{escape(value)}"' if value != "" else name
                     for name, value in attributes.items())
    return f'<llama2c-story id="{id_}" {attrs}></llama2c-story>'


def wait_for_widgets(target, ids: list[str], timeout: float = LOAD_TIMEOUT_MS) -> dict[str, str]:
    """Waits until every widget is done or in error (on a page or a frame); their states."""
    target.wait_for_function(
        """(ids) => ids.every((id) => {
          const el = document.getElementById(id);
          return el && ['done', 'error'].includes(el.dataset.state);
        })""", arg=ids, timeout=timeout, polling=50)
    return target.evaluate("""(ids) => Object.fromEntries(ids.map((id) => {
      const el = document.getElementById(id);
      return [id, el.dataset.state];
    }))""", ids)


def widget_info(target, id_: str) -> dict:
    """A widget's state, text and what its shadow DOM shows."""
    return target.evaluate("""(id) => {
      const el = document.getElementById(id);
      const root = el.shadowRoot;
      return {
        state: el.state, dataState: el.dataset.state, text: el.text,
        shown: root.querySelector('.story').textContent,
        error: root.querySelector('.error').hidden ? null
          : root.querySelector('.error').textContent,
      };
    }""", id_)


# -- axe-core -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe.min.js of AXE_VERSION: the existing install in .cache/node, or `npm install` of it
    there. A failed install fails the tests (it is not a reason to skip accessibility)."""
    if installed_axe_version() != AXE_VERSION or not AXE_SCRIPT.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not installed: it is needed to install axe-core "
                        f"(`{' '.join(AXE_INSTALL)}`)", pytrace=False)
        NODE_PREFIX.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([npm, *AXE_INSTALL[1:]], check=False, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0 or installed_axe_version() != AXE_VERSION:
            pytest.fail(f"could not install axe-core with `{' '.join(AXE_INSTALL)}` "
                        f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return AXE_SCRIPT


def installed_axe_version() -> str | None:
    try:
        return json.loads((AXE_PACKAGE / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def run_axe(target, axe_path: Path, context: str | None = None) -> dict:
    """Injects axe-core into a page or frame and runs it; the results' violations and counts."""
    if not target.evaluate("typeof window.axe !== 'undefined'"):
        target.add_script_tag(path=str(axe_path))
    return target.evaluate("""async (context) => {
      const results = await axe.run(context || document, { resultTypes: ['violations'] });
      return {
        version: axe.version,
        passes: results.passes.length,
        violations: results.violations.map((v) => ({
          id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
          nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })),
        })),
      };
    }""", context)


def serious(results: dict) -> list[dict]:
    return [v for v in results["violations"] if v["impact"] in ("serious", "critical")]


def format_violations(violations: list[dict]) -> str:
    return json.dumps(violations, indent=2, ensure_ascii=False)
