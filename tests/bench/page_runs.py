"""The page's side: the built site served on 127.0.0.1 (a plain static server and the dev server),
driven in Debian's Chromium through Playwright, with probes for timing and memory."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from conftest import process_tree

from .common import (
    PAGE_TIMEOUT_MS,
    PROMPT,
    SEED,
    SITE,
    STEPS,
    TEMPERATURE,
    TOPP,
    BenchError,
    checkout_env,
)
from .models import Model

# -- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on 127.0.0.1 (always stopped by `stop`)."""

    def __init__(self, name: str, command_for_port, cwd: Path):
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen(command_for_port(self.port), cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=checkout_env())
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the {name} exited at start (status {self.proc.returncode})")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BenchError(f"the {name} did not start on port {self.port}") from None
                time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def static_server(site: Path) -> Server:
    return Server("static server (python -m http.server)",
                  lambda port: [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                str(port)], site)


def dev_server(site: Path) -> Server:
    return Server("dev server (llama2c.devserver, COOP/COEP)",
                  lambda port: [sys.executable, "-m", "llama2c.devserver", str(site), "--host",
                                "127.0.0.1", "--port", str(port)], site)


def link_site(target: Path, models: list[Model]) -> dict[str, str]:
    """site/ as hard links in `target`, plus the models; returns model key -> URL path."""
    for source in sorted(SITE.rglob("*")):
        dest = target / source.relative_to(SITE)
        if source.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            link_or_copy(source, dest)
    (target / "models").mkdir(exist_ok=True)
    urls = {}
    for model in models:
        for path in (model.path, model.tokenizer):
            name = f"bench-{path.name}" if path == model.path else path.name
            dest = target / "models" / name
            if not dest.exists():
                link_or_copy(path, dest)
        urls[model.key] = f"models/bench-{model.path.name}"
        urls[model.key + ":tokenizer"] = f"models/{model.tokenizer.name}"
    return urls


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# -- the browser --------------------------------------------------------------------------------

# Installed before the page's scripts: when data-state first becomes ready, when #generate is
# clicked, and when the first text lands in #output after each click (and after navigation).
PROBE = """
(() => {
  const b = window.__bench = { readyAt: null, firstTextAt: null, clicks: [], firsts: [],
                               waiting: false };
  new MutationObserver((records) => {
    const now = performance.now();
    const states = records.filter((r) => r.type === 'attributes' && r.target === document.body);
    states.forEach((r, i) => {  // each record holds the state before it: recover the sequence
      const state = i + 1 < states.length ? states[i + 1].oldValue : document.body.dataset.state;
      if (state === 'ready' && b.readyAt === null) b.readyAt = now;
    });
    for (const r of records) {
      if (r.type !== 'childList' || !r.target || r.target.id !== 'output') continue;
      for (const node of r.addedNodes) {
        if (node.nodeType !== Node.TEXT_NODE || !node.data) continue;
        if (b.firstTextAt === null) b.firstTextAt = now;
        if (b.waiting) { b.firsts.push(now); b.waiting = false; }
      }
    }
  }).observe(document, { subtree: true, childList: true, attributes: true,
                         attributeFilter: ['data-state'], attributeOldValue: true });
  document.addEventListener('click', (event) => {
    if (event.target && event.target.id === 'generate') {
      b.clicks.push(performance.now());
      b.waiting = true;
    }
  }, true);
})();
"""

# Put before worker.js by a Playwright route in the speed and memory contexts (never in the load
# timing ones: routing turns the HTTP cache off): records every WebAssembly.Memory the worker makes
# or gets from an instance, tagged by who made it, so the benchmark can read their sizes. The
# product itself is unchanged; the engine's module lives in worker.js's module scope, out of reach.
WORKER_HOOK = r"""
// -- added by the llama2c benchmark: records the worker's WebAssembly memories --
(() => {
  const memories = [];
  const Memory = WebAssembly.Memory;
  const who = () => {
    const stack = new Error().stack || '';
    return /llama2c-engine/.test(stack) ? 'engine' : /pyodide/.test(stack) ? 'pyodide' : 'other';
  };
  const note = (m, tag) => {
    if (m instanceof Memory && !memories.some((e) => e.m === m)) memories.push({ m, tag });
  };
  WebAssembly.Memory = new Proxy(Memory, {
    construct(target, args) { const m = new target(...args); note(m, who()); return m; },
  });
  const scan = (result, tag) => {
    const instance = result && (result.instance || result);
    if (instance && instance.exports) for (const v of Object.values(instance.exports)) note(v, tag);
    return result;
  };
  for (const name of ['instantiate', 'instantiateStreaming']) {
    const original = WebAssembly[name];
    WebAssembly[name] = function (...args) {
      const tag = who();
      return original.apply(this, args).then((r) => scan(r, tag));
    };
  }
  self.__benchMemories = () => memories.map((e) => [e.tag, e.m.buffer.byteLength]);
})();
"""


def instrument(context) -> None:
    """Serves worker.js with WORKER_HOOK in front of it, in this browser context."""
    def handler(route):
        response = route.fetch()
        route.fulfill(response=response, body=WORKER_HOOK + response.text())
    context.route("**/worker.js", handler)


WAIT_SETTLED = "['ready', 'done', 'error'].includes(document.body.dataset.state)"
WAIT_DONE = ("(document.body.dataset.state === 'done' && !!document.body.dataset.report) || "
             "document.body.dataset.state === 'error'")


def page_url(base: str, model_url: str, tokenizer_url: str, threads: str | None = None,
             steps: int = STEPS, autostart: bool = False) -> str:
    params = {"model": model_url, "tokenizer": tokenizer_url, "prompt": PROMPT,
              "temperature": TEMPERATURE, "topp": TOPP, "steps": str(steps), "seed": SEED}
    if threads is not None:
        params["threads"] = threads
    if autostart:
        params["autostart"] = "1"
    return f"{base}/?{urlencode(params, quote_via=quote)}"


class Tab:
    """A page with its console errors collected."""

    def __init__(self, context):
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                     if m.type in ("error", "assert") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("crash", lambda _: self.errors.append("the tab crashed"))

    def check(self, what: str) -> None:
        state = self.page.evaluate("document.body.dataset.state")
        if state == "error":
            message = self.page.text_content("#error") or ""
            raise BenchError(f"{what}: the page shows an error: {message.strip()}\n"
                             + "\n".join(self.errors[-5:]))

    def load(self, url: str, what: str) -> dict:
        self.page.goto(url)
        self.page.wait_for_function(WAIT_SETTLED, timeout=PAGE_TIMEOUT_MS, polling=50)
        self.check(what)
        return self.probe()

    def probe(self) -> dict:
        return self.page.evaluate("window.__bench")

    def generate(self, temperature: str, what: str) -> tuple[dict, float]:
        """Clicks Generate with this temperature; (the report, ms from the click to first text)."""
        if self.page.input_value("#temperature") != temperature:
            self.page.fill("#temperature", temperature)
        self.page.evaluate("delete document.body.dataset.report")
        self.page.click("#generate")
        self.page.wait_for_function(WAIT_DONE, timeout=PAGE_TIMEOUT_MS, polling=50)
        self.check(what)
        report = json.loads(self.page.evaluate("document.body.dataset.report"))
        probe = self.probe()
        ttft = None
        if len(probe["firsts"]) == len(probe["clicks"]):
            ttft = probe["firsts"][-1] - probe["clicks"][-1]
        return report, ttft

    def wasm_memories(self) -> dict[str, float]:
        """MB of the worker's WebAssembly memories by maker (engine, pyodide), when instrumented."""
        for worker in self.page.workers:
            if worker.url.split("?")[0].endswith("/worker.js"):
                sizes = worker.evaluate("self.__benchMemories ? self.__benchMemories() : []")
                out: dict[str, float] = {}
                for tag, size in sizes:
                    out[tag] = out.get(tag, 0.0) + size / 1e6
                return out
        return {}

    def memory(self) -> dict:
        return {**renderer_memory(), "wasm_mb": self.wasm_memories()}

    def engine_label(self) -> str:
        return (self.page.text_content("#engine") or "").strip()

    def close(self) -> None:
        try:
            self.page.close()
        except Exception:
            pass


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS in kB, and whether pid is a Chromium renderer."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {m.group(1): int(m.group(2))
              for m in re.finditer(r"^(VmHWM|VmRSS):\s+(\d+) kB", status, re.M)}
    values["renderer"] = any(b"--type=renderer" in arg for arg in cmdline) and \
        not any(b"--top-chrome-webui" in arg for arg in cmdline)  # not the browser's own UI
    return values


def tab_renderer() -> int | None:
    """The renderer of the tab under test: the largest of Chromium's live renderers (the benchmark
    keeps one tab open at a time; the others are at most a small spare renderer)."""
    best, best_hwm = None, -1
    for pid in process_tree(os.getpid()):
        status = proc_status(pid)
        if status.get("renderer") and status.get("VmHWM", -1) > best_hwm:
            best, best_hwm = pid, status["VmHWM"]
    return best


def renderer_memory() -> dict:
    """The tab's renderer process: peak and current resident memory (MB)."""
    pid = tab_renderer()
    status = proc_status(pid) if pid else {}
    return {"renderer_peak_mb": status["VmHWM"] / 1024 if "VmHWM" in status else None,
            "renderer_rss_mb": status["VmRSS"] / 1024 if "VmRSS" in status else None}
