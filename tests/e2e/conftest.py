"""Fixtures for the end-to-end tests: Chromium, a copy of the built site, and the two servers.

- `test_site`: a temporary folder mirroring site/ through hard links, where tests may add models.
- `dev_server`: the real dev server (llama2c.devserver.create_app under uvicorn, COOP/COEP).
- `static_server`: `python -m http.server`, a plain static host without any special header.
- `page` / `static_page`: a fresh tab on each server. Every console error, uncaught page or worker
  error, crash or dialog fails the test unless the test declared it with `console.expect(...)`;
  a failed test leaves a screenshot in test-results/<test name>.png.

Chromium is Debian's /usr/bin/chromium (Playwright's own browsers are never downloaded).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llama2c.toolchain import CHROMIUM, CHROMIUM_ARGS
from llama2c.checkpoint import SHAPES, write_checkpoint

from .pageutil import MODELS, PROBE_SCRIPT, RESULTS, ROOT, SITE, WEB



# -- the built site -----------------------------------------------------------------------------


def site_problem() -> str | None:
    """Why site/ cannot be tested as the current sources' build, or None."""
    needed = ["index.html", "app.js", "worker.js", "engine.js", "engine/llama2c-engine.mjs",
              "engine/llama2c-engine.wasm", "pyodide/pyodide.mjs", "pyodide/pyodide-lock.json",
              "models/stories260K.bin", "models/tok512.bin"]
    missing = [name for name in needed if not (SITE / name).is_file()]
    if missing:
        return f"site/ is not built (missing {', '.join(missing)})"
    stale = [f"web/{p.name}" for p in sorted(WEB.iterdir())
             if p.is_file() and (not (SITE / p.name).is_file()
                                 or (SITE / p.name).read_bytes() != p.read_bytes())]
    engine = SITE / "engine/llama2c-engine.mjs"
    for source in ["wasm/run.c", "wasm/q8.h", "wasm/relaxed.c", "wasm/relaxed_glue.js"]:
        if (ROOT / source).stat().st_mtime > engine.stat().st_mtime:
            stale.append(source)
    wheels = sorted((SITE / "pyodide").glob("llama2c-*.whl"))
    if not wheels:
        return "site/ is not built (no llama2c wheel in site/pyodide)"
    built = wheels[0].stat().st_mtime
    stale += [f"pylib/llama2c/{p.name}" for p in sorted((ROOT / "pylib/llama2c").glob("*.py"))
              if p.stat().st_mtime > built]
    if stale:
        return f"site/ is older than its sources ({', '.join(stale)})"
    return None


LINK_ABOVE = 1 << 20  # files this large are hard-linked into the test site, smaller ones copied


class TestSite:
    """A temporary copy of site/ that tests may add files to.

    Small files (the page, the worker, the engine, the llama2c wheel, the Pyodide lock) are copied,
    so they stay a consistent snapshot even if `invoke build` runs meanwhile: it rewrites files in
    place, which a hard link would show. Large ones (the Pyodide runtime, numpy, models) are
    hard-linked, falling back to a copy, and `check_unchanged` fails if any changed.
    """

    def __init__(self, root: Path):
        self.root = root
        self.models = root / "models"
        self.linked: dict[Path, tuple[int, int]] = {}

    @classmethod
    def mirror(cls, source: Path, root: Path) -> TestSite:
        site = cls(root)
        for path in sorted(source.rglob("*")):
            target = root / path.relative_to(source)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            elif path.stat().st_size < LINK_ABOVE:
                shutil.copy2(path, target)
            elif link_or_copy(path, target):
                site.linked[target] = _signature(target)
        site.models.mkdir(exist_ok=True)
        return site

    def check_unchanged(self) -> None:
        changed = [str(p.relative_to(self.root)) for p, sig in self.linked.items()
                   if _signature(p) != sig]
        if changed:
            pytest.fail(f"site/ was rebuilt during the test run ({', '.join(changed)} changed "
                        "under the test site's hard links): run the tests again", pytrace=False)

    def add(self, source: Path, name: str | None = None) -> str:
        """Puts `source` in the site's models/ folder; returns its URL path relative to the page."""
        target = self.models / (name or source.name)
        if not target.exists():
            link_or_copy(Path(source), target)
        return f"models/{target.name}"

    def write(self, name: str, data: bytes) -> str:
        """Writes models/NAME (a new file: never through a hard link into site/)."""
        target = self.models / name
        target.unlink(missing_ok=True)
        target.write_bytes(data)
        return f"models/{name}"


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-links `source` to `target`, or copies it; True for a link."""
    try:
        os.link(source, target)
        return True
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)
        return False


@pytest.fixture(scope="session")
def test_site(tmp_path_factory) -> TestSite:
    problem = site_problem()
    if problem:
        pytest.fail(f"{problem}: run `LLAMA2C_MIRROR=../shared invoke build` first", pytrace=False)
    if not (MODELS / "tokenizer.bin").is_file():
        pytest.fail(f"reference models missing in {MODELS} (set LLAMA2C_SHARED)", pytrace=False)
    return TestSite.mirror(SITE, tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def random15m(test_site) -> dict[str, str]:
    """A stories15M-shaped checkpoint with random weights in the test site, and its tokenizer."""
    path = test_site.models / "random15M.bin"
    write_checkpoint(path, SHAPES["stories15M"], seed=15)
    return {"model": test_site.add(path), "tokenizer": test_site.add(MODELS / "tokenizer.bin"),
            "path": str(path)}


# -- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dev_server(test_site) -> str:
    """The real dev server (uvicorn + llama2c.devserver.create_app) in a thread; its base URL."""
    import uvicorn

    from llama2c.devserver import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(test_site.root), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="devserver")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the dev server did not start", pytrace=False)
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


@pytest.fixture(scope="session")
def static_server(test_site) -> str:
    """`python -m http.server` in the test site: no COOP/COEP, no CORS; its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=test_site.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://...) ..."
        match = re.search(r"port (\d+)", line)
        if not match:
            pytest.fail(f"http.server did not start: {line!r}", pytrace=False)
        base = f"http://127.0.0.1:{match.group(1)}"
        # Drain its stdout so the server never blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield base
    finally:
        stop_process(proc, 10)


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Ends a process this test run started: SIGTERM, then SIGKILL after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `apt-get install -y chromium` "
                    "(never `playwright install`)", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _context(browser):
    # One context per server for the whole session: its HTTP cache keeps Pyodide warm.
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.add_init_script(PROBE_SCRIPT)
    return context


@pytest.fixture(scope="session")
def dev_context(browser, dev_server):
    context = _context(browser)
    yield context
    context.close()


@pytest.fixture(scope="session")
def static_context(browser, static_server):
    context = _context(browser)
    yield context
    context.close()


class ConsoleLog:
    """Everything a tab reported. Errors fail the test unless declared with `expect`."""

    def __init__(self, page):
        self.lines: list[str] = []  # every message, for the report
        self.errors: list[str] = []  # unexpected problems
        self.expected: list[tuple[re.Pattern, str]] = []
        self.matched: list[str] = []
        self.reported = 0  # errors already turned into a failure
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._problem(f"uncaught error: {error}"))
        page.on("crash", lambda _: self._problem("the tab crashed"))
        page.on("dialog", self._dialog)

    def expect(self, pattern: str, why: str) -> None:
        """Declares that console errors matching `pattern` are part of this test (`why`)."""
        self.expected.append((re.compile(pattern), why))

    def _console(self, message) -> None:
        where = message.location.get("url", "") if message.location else ""
        line = f"console.{message.type}: {message.text}" + (f"  [{where}]" if where else "")
        self.lines.append(line)
        if message.type in ("error", "assert"):
            self._problem(line, logged=True)

    def _dialog(self, dialog) -> None:
        self._problem(f"unexpected {dialog.type} dialog: {dialog.message!r}")
        dialog.dismiss()

    def _problem(self, line: str, logged: bool = False) -> None:
        if not logged:
            self.lines.append(line)
        for pattern, why in self.expected:
            if pattern.search(line):
                self.matched.append(f"{line}  (expected: {why})")
                return
        self.errors.append(line)


def _open(request, context, name: str):
    request.getfixturevalue("test_site").check_unchanged()
    page = context.new_page()
    log = ConsoleLog(page)
    request.node.__dict__.setdefault("l2c_pages", []).append((name, page, log))
    return page, log


@pytest.fixture
def _dev_tab(request, dev_context):
    page, log = _open(request, dev_context, "page")
    yield page, log
    _close(page, log)


@pytest.fixture
def page(_dev_tab):
    """A new tab on the dev server's context; base URL in `dev_server`."""
    return _dev_tab[0]


@pytest.fixture
def console(_dev_tab) -> ConsoleLog:
    """The console of `page`: `console.expect(pattern, why)` allows an error this test causes."""
    return _dev_tab[1]


@pytest.fixture
def static_page(request, static_context):
    """A new tab on the plain static server's context."""
    page, log = _open(request, static_context, "static_page")
    yield page
    _close(page, log)


def _close(page, log: ConsoleLog) -> None:
    late = log.errors[log.reported:]
    page.close()
    if late:
        pytest.fail("browser errors after the test body:\n  " + "\n  ".join(late), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    pages = item.__dict__.get("l2c_pages", [])
    if report.when != "call" or not pages:
        return
    problems = []
    for name, page, log in pages:
        if log.lines:
            report.sections.append((f"browser console ({name})", "\n".join(log.lines)))
        if log.matched:
            report.sections.append((f"expected browser errors ({name})", "\n".join(log.matched)))
        problems += [f"{name}: {line}" for line in log.errors]
        log.reported = len(log.errors)
    if problems and report.passed:
        report.outcome = "failed"
        report.longrepr = ("the test passed, but the browser reported errors:\n  "
                           + "\n  ".join(problems))
    if report.failed:
        RESULTS.mkdir(exist_ok=True)
        safe = re.sub(r"[^\w.\-\[\]]+", "_", item.name)
        for name, page, _ in pages:
            path = RESULTS / (f"{safe}.png" if len(pages) == 1 else f"{safe}.{name}.png")
            try:
                page.screenshot(path=str(path), full_page=True)
                report.sections.append(("screenshot", str(path)))
            except Exception as e:  # the tab may have crashed
                report.sections.append(("screenshot", f"failed: {e}"))
