"""The speed and memory benchmark behind `invoke bench`: everything measured side by side, in one run.

    invoke bench [--runs N] [--quick] [--out DIR]

What it measures (medians of N runs; every speed also as a ratio to the scalar baseline):

- native: the installed `llama2c run` command line (tok/s parsed from its stderr), threads
  automatic and LLAMA2C_THREADS=1, fp32 and int8; the baseline is the same engine (wasm/run.c)
  compiled here with run.c's plain loops (-DL2C_SCALAR, gcc -O3: llama2.c's `make run`) and used
  through LLAMA2C_ENGINE with one thread. Sampling (-t 1 -p 0.9 -s 42) and greedy (-t 0).
- page: the built site in Debian's headless Chromium through Playwright, on a plain static server
  (no COOP/COEP: the single-thread engine) and on the dev server (COOP/COEP: the threaded engine).
  tok/s and forward() time come from the page's report; the time per token spent outside forward()
  (Python loop, sampler, messages) from the worker's loop_ms.
- time to first token, page load to ready (cold and warm) and warm load to first token;
- peak memory: ru_maxrss of the command line; VmHWM of the tab's renderer process (the page, its
  worker and the engine's threads live there) and the size of the WebAssembly memory.

Models are generated in a temporary folder (random weights of the real shapes: speed does not depend
on the values), plus real models found in models/. Nothing is written into site/: the page is
served from a temporary folder of hard links.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[2]
PYLIB = ROOT / "pylib"
SITE = ROOT / "site"
MODELS = ROOT / "models"
SHARED = Path(os.environ.get("LLAMA2C_SHARED", ROOT.parent / "shared")).resolve()
CHROMIUM = os.environ.get("LLAMA2C_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCALAR_FLAGS = ["-std=c11", "-O3", "-DL2C_SCALAR", "-ffp-contract=off", "-pthread", "-shared",
                "-fPIC"]

PROMPT = "Once upon a time"
STEPS = 256
TEMPERATURE = "1.0"
TOPP = "0.9"
SEED = "42"
GREEDY = "0"
MODEL_SEEDS = {"stories15M": 15, "stories42M": 42, "stories110M": 110}

NATIVE_TIMEOUT = 600  # seconds for one command line run
PAGE_TIMEOUT_MS = 180_000  # one page load or one generation


class BenchError(Exception):
    """A problem that stops the benchmark, with a message saying what to do."""


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"» [{time.monotonic() - _T0:4.0f} s] {message}", flush=True)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# This checkout's llama2c package, here and in every subprocess (the installed `llama2c` command
# imports it too), whatever checkout `pip install -e` last pointed at.
if str(PYLIB) not in sys.path[:1]:
    sys.path.insert(0, str(PYLIB))


def checkout_env(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(PYLIB)] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


# -- preflight ----------------------------------------------------------------------------------


def site_problems() -> tuple[list[str], list[str]]:
    """(missing files that make the site unusable, sources newer than the build)."""
    needed = ["index.html", "app.js", "worker.js", "engine.js", "engine/llama2c-engine.mjs",
              "engine/llama2c-engine.wasm", "engine/llama2c-engine-mt.mjs",
              "engine/llama2c-engine-mt.wasm", "pyodide/pyodide.mjs", "pyodide/pyodide-lock.json"]
    missing = [name for name in needed if not (SITE / name).is_file()]
    stale = []
    if not missing:
        for source in sorted((ROOT / "web").iterdir()):
            built = SITE / source.name
            if source.is_file() and (not built.is_file() or built.read_bytes() != source.read_bytes()):
                stale.append(f"web/{source.name}")
        if (ROOT / "wasm/run.c").stat().st_mtime > (SITE / "engine/llama2c-engine.mjs").stat().st_mtime:
            stale.append("wasm/run.c (engine)")
        wheels = sorted((SITE / "pyodide").glob("llama2c-*.whl"))
        if not wheels:
            missing.append("pyodide/llama2c-*.whl")
        else:
            built = wheels[0].stat().st_mtime
            stale += [f"pylib/llama2c/{p.name}" for p in sorted((ROOT / "pylib/llama2c").glob("*.py"))
                      if p.stat().st_mtime > built]
    return missing, stale


def find_cli() -> list[str]:
    """The installed `llama2c` command, beside this interpreter first (no pyenv shim in between)."""
    beside = Path(sys.executable).parent / "llama2c"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("llama2c")
    if found:
        return [found]
    return [sys.executable, "-m", "llama2c"]


def tokenizer_for(vocab_size: int) -> Path | None:
    names = ["tokenizer.bin"] if vocab_size == 32000 else [f"tok{vocab_size}.bin"]
    for folder in (MODELS, SHARED / "models"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def preflight(notes: list[str]) -> dict:
    import llama2c.native

    missing, stale = site_problems()
    if missing:
        raise BenchError(f"site/ is not built (missing {', '.join(missing)}): run "
                         "`LLAMA2C_MIRROR=../shared invoke build` first")
    if stale:
        notes.append(f"site/ is older than its sources ({', '.join(stale)}); the page rows measure "
                     "the old build: run `invoke build`")
    installed = subprocess.run([sys.executable, "-c", "import llama2c; print(llama2c.__file__)"],
                               capture_output=True, text=True, cwd="/",
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    location = installed.stdout.strip()
    if not location.startswith(str(PYLIB)):
        notes.append(f"the installed llama2c package is {location or 'missing'}, not this checkout: "
                     f"the benchmark runs this checkout's ({PYLIB}) through PYTHONPATH")
    engine = Path(llama2c.native.__file__).with_name(llama2c.native.LIB_NAME)
    if not engine.is_file():
        raise BenchError(f"the native engine {engine} is not built: run `invoke native`")
    if (ROOT / "wasm/run.c").stat().st_mtime > engine.stat().st_mtime:
        notes.append(f"{engine.name} is older than wasm/run.c: the native rows measure the old "
                     "build: run `invoke native`")
    if not os.access(CHROMIUM, os.X_OK):
        raise BenchError(f"{CHROMIUM} not found: `apt-get install -y chromium` "
                         "(never `playwright install`)")
    if shutil.which("gcc") is None:
        raise BenchError("gcc not found (needed for the scalar baseline)")
    try:
        import matplotlib  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as e:
        raise BenchError(f"{e.name} is not installed: run `invoke setup`") from None
    if tokenizer_for(32000) is None:
        raise BenchError(f"no 32000-token tokenizer.bin in {MODELS} or {SHARED / 'models'} "
                         "(set LLAMA2C_SHARED)")
    return {"engine_so": str(engine), "cli": find_cli(), "installed_llama2c": location}


# -- models -------------------------------------------------------------------------------------


@dataclass
class Model:
    key: str  # "stories15M fp32"
    path: Path
    tokenizer: Path
    format: str  # fp32 | int8
    baseline: str  # key of the fp32 model whose scalar run is this one's baseline
    real: bool = False
    threads_auto: int | None = None  # what LLAMA2C_THREADS=0 picks for it natively
    mb: float = 0.0  # file size in MB

    def __post_init__(self) -> None:
        self.mb = self.path.stat().st_size / 1e6


def make_models(folder: Path, shapes: list[str], memory_only: list[str],
                with_real: bool = True) -> tuple[list[Model], list[Model]]:
    """(speed models, models only for the memory table): generated fp32 + int8, then real ones."""
    from llama2c.checkpoint import SHAPES, read_config, write_checkpoint
    from llama2c.quantize import quantize_checkpoint

    tokenizer = tokenizer_for(32000)
    speed, memory = [], []
    for shape in shapes + memory_only:
        started = time.perf_counter()
        fp32 = folder / f"{shape}-fp32.bin"
        write_checkpoint(fp32, SHAPES[shape], seed=MODEL_SEEDS[shape])
        key = f"{shape} fp32"
        if shape in memory_only:
            memory.append(Model(key, fp32, tokenizer, "fp32", key))
            say(f"generated {fp32.name} ({fp32.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s")
            continue
        int8 = folder / f"{shape}-int8.bin"
        quantize_checkpoint(fp32, int8)
        speed += [Model(key, fp32, tokenizer, "fp32", key),
                  Model(f"{shape} int8", int8, tokenizer, "int8", key)]
        say(f"generated {fp32.name} and {int8.name} in {time.perf_counter() - started:.1f} s")
    for path in sorted(MODELS.glob("*.bin")) if MODELS.is_dir() and with_real else []:
        if path.name.startswith("tok"):
            continue
        try:
            with path.open("rb") as f:
                config = read_config(f.read(28), check_size=False)
        except Exception:
            continue
        if path.stat().st_size != config.file_size():
            continue  # not a legacy fp32 checkpoint (or an int8 one): leave it out
        tok = tokenizer_for(config.vocab_size)
        if tok is None:
            say(f"skipping models/{path.name}: no tokenizer for vocab {config.vocab_size}")
            continue
        key = f"{path.stem} real"
        speed.append(Model(key, path, tok, "fp32", key, real=True))
    return speed, memory


def compile_scalar(folder: Path) -> Path:
    target = folder / "scalar-engine.so"
    command = ["gcc", *SCALAR_FLAGS, "-o", str(target), str(ROOT / "wasm/run.c"), "-lm"]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise BenchError(f"compiling the scalar baseline failed:\n{' '.join(command)}\n{proc.stderr}")
    return target


# -- native runs --------------------------------------------------------------------------------


@dataclass
class ProcResult:
    returncode: int
    stdout: bytes
    stderr: str
    maxrss_kb: int
    wall: float
    first_byte: float | None  # seconds from spawn to the first byte on stdout


# Runs argv[2:] as its child and writes the child's ru_maxrss (kB) to argv[1]. A child forked
# straight from the benchmark would report the benchmark's own peak RSS (Linux carries the peak of
# the memory image an exec replaces over into ru_maxrss), so a small `python -S` forks it instead.
RSS_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""


def run_measured(command: list[str], env: dict[str, str], timeout: float = NATIVE_TIMEOUT) -> ProcResult:
    """Runs a command; its peak RSS comes from wait4() in a small wrapper process, the time to its
    first output byte (wrapper start-up included, about 10 ms) from a reader thread."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", RSS_WRAPPER, rss.name, *command],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=env)
        chunks: list[bytes] = []
        first: list[float] = []

        def read() -> None:
            while True:
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    return
                if not first:
                    first.append(time.perf_counter() - started)
                chunks.append(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        timed_out = reader.is_alive()
        if timed_out:
            kill_tree(proc.pid)
        proc.wait()
        wall = time.perf_counter() - started
        reader.join(5)
        proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        if timed_out:
            raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(command)}")
        text = rss.read().strip()
    return ProcResult(proc.returncode, b"".join(chunks), stderr, int(text) if text else 0, wall,
                      first[0] if first else None)


def kill_tree(pid: int) -> None:
    """Kills a process we started and its descendants (children first found, then the parent)."""
    for child in process_tree(pid):
        try:
            os.kill(child, 9)
        except OSError:
            pass
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def native_env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMA2C_ENGINE", "LLAMA2C_THREADS")}
    env.update({k: v for k, v in extra.items() if v is not None})
    return checkout_env(env)


def cli_run(cli: list[str], model: Model, temperature: str, env: dict[str, str],
            steps: int = STEPS) -> dict:
    command = [*cli, "run", str(model.path), "-z", str(model.tokenizer), "-t", temperature,
               "-p", TOPP, "-s", SEED, "-n", str(steps), "-i", PROMPT]
    result = run_measured(command, env)
    match = re.search(r"achieved tok/s: ([0-9.]+)", result.stderr)
    if result.returncode != 0 or not match:
        raise BenchError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n"
                         f"{result.stderr.strip()[-2000:]}")
    return {"tokps": float(match.group(1)), "maxrss_mb": result.maxrss_kb / 1024,
            "first_byte_ms": None if result.first_byte is None else result.first_byte * 1e3,
            "wall_s": result.wall}


# In-process: the same loop the command line runs, timed from the inside (time outside forward(),
# time to the first piece after the model is loaded).
INPROCESS = r"""
import json, sys, time
from llama2c.generate import Stats, generate
from llama2c.native import NativeModel
from llama2c.sampler import Sampler
from llama2c.tokenizer import Tokenizer
path, tokenizer_path, prompt, steps, temperature, topp, seed = sys.argv[1:8]
t0 = time.perf_counter()
model = NativeModel.open(path)
tokenizer = Tokenizer.load(tokenizer_path, model.config.vocab_size)
t1 = time.perf_counter()
sampler = Sampler(model.config.vocab_size, float(temperature), float(topp), int(seed))
stats = Stats()
first = None
tokens = 0
start = time.perf_counter()
for piece in generate(model, tokenizer, sampler, prompt, int(steps), stats):
    if first is None and piece.data:
        first = time.perf_counter() - start
    tokens += piece.token >= 0
loop = time.perf_counter() - start
print(json.dumps({"load_ms": (t1 - t0) * 1e3, "first_piece_ms": first * 1e3, "loop_ms": loop * 1e3,
                  "forward_ms": stats.forward_seconds * 1e3, "forward_calls": stats.forward_calls,
                  "sample_ms": getattr(stats, "sample_seconds", float("nan")) * 1e3,
                  "tokens": tokens, "tokps": stats.tokens_per_second, "threads": model.threads}))
"""


def inprocess_run(model: Model, temperature: str, env: dict[str, str]) -> dict:
    command = [sys.executable, "-c", INPROCESS, str(model.path), str(model.tokenizer), PROMPT,
               str(STEPS), temperature, TOPP, SEED]
    result = run_measured(command, env)
    if result.returncode != 0:
        raise BenchError(f"the in-process native run failed:\n{result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def auto_threads(model: Model) -> int:
    code = ("import sys; from llama2c.native import NativeModel; "
            "print(NativeModel.open(sys.argv[1]).threads)")
    proc = subprocess.run([sys.executable, "-c", code, str(model.path)], capture_output=True,
                          text=True, env=native_env(), timeout=120)
    return int(proc.stdout.strip()) if proc.returncode == 0 else 0


# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    model: Model
    engine: str  # shown in the tables
    kind: str  # native | page
    samples: dict[str, list] = field(default_factory=dict)  # tokps, greedy, ... one value per run
    info: dict = field(default_factory=dict)

    def add(self, name: str, value) -> None:
        self.samples.setdefault(name, []).append(value)

    def med(self, name: str) -> float | None:
        return median(self.samples.get(name, []))


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


def process_tree(root_pid: int) -> list[int]:
    """Every descendant of root_pid (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


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


# -- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, runs: int, quick: bool, out: Path):
        self.runs = runs
        self.quick = quick
        self.out = out
        self.notes: list[str] = []
        self.rows: list[Row] = []
        self.load_rows: list[dict] = []
        self.memory_rows: list[dict] = []
        self.ttft_rows: list[dict] = []
        self.info: dict = {}
        self.timings: dict[str, float] = {}

    # rows
    def row(self, model: Model, engine: str, kind: str) -> Row:
        for row in self.rows:
            if row.model.key == model.key and row.engine == engine:
                return row
        row = Row(model, engine, kind)
        self.rows.append(row)
        return row

    def run(self) -> None:
        started = time.perf_counter()
        self.info.update(preflight(self.notes))
        self.info["loadavg_start"] = os.getloadavg()
        shapes = ["stories15M"] if self.quick else ["stories15M", "stories42M"]
        memory_only = [] if self.quick else ["stories110M"]
        with tempfile.TemporaryDirectory(prefix="llama2c-bench-") as tmp:
            tmp = Path(tmp)
            (tmp / "models").mkdir()
            t = time.perf_counter()
            self.models, self.memory_models = make_models(tmp / "models", shapes, memory_only,
                                                          with_real=not self.quick)
            self.scalar = compile_scalar(tmp)
            self.timings["models"] = time.perf_counter() - t
            for model in self.models + self.memory_models:
                model.threads_auto = auto_threads(model)
            t = time.perf_counter()
            self.native()
            self.timings["native"] = time.perf_counter() - t
            self.info["loadavg_after_native"] = os.getloadavg()
            t = time.perf_counter()
            self.pages(tmp / "site")
            self.timings["page"] = time.perf_counter() - t
        self.info["loadavg_end"] = os.getloadavg()
        self.timings["total"] = time.perf_counter() - started

    # native
    def native(self) -> None:
        cli = self.info["cli"]
        say(f"native: {' '.join(cli)} run ... ({self.runs} run{'s' * (self.runs > 1)}, "
            f"{STEPS} steps)")
        for run in range(self.runs):
            for model in self.models:
                auto = f"native CLI, auto ({model.threads_auto} thread{'s' * (model.threads_auto != 1)})"
                configs = [(auto, native_env()), ("native CLI, 1 thread", native_env(LLAMA2C_THREADS="1"))]
                if model.format == "fp32":
                    configs.insert(0, ("native scalar -O3 (baseline)",
                                       native_env(LLAMA2C_ENGINE=str(self.scalar), LLAMA2C_THREADS="1")))
                for engine, env in configs:
                    row = self.row(model, engine, "native")
                    sampled = cli_run(cli, model, TEMPERATURE, env)
                    greedy = cli_run(cli, model, GREEDY, env)
                    row.add("tokps", sampled["tokps"])
                    row.add("greedy", greedy["tokps"])
                    row.add("maxrss_mb", sampled["maxrss_mb"])
                    row.add("first_byte_ms", sampled["first_byte_ms"])
                # the same loop in-process, timed from the inside (overhead and first token)
                inside = inprocess_run(model, TEMPERATURE, native_env())
                row = self.row(model, auto, "native")
                row.add("inprocess", inside)
            say(f"native run {run + 1}/{self.runs} done")
        for model in self.memory_models:
            result = cli_run(cli, model, TEMPERATURE, native_env())
            self.memory_rows.append({"model": model.key, "engine": f"native CLI, auto "
                                     f"({model.threads_auto} threads)", "peak_mb": result["maxrss_mb"],
                                     "end_mb": None,
                                     "wasm_mb": None, "file_mb": model.mb, "tokps": result["tokps"]})

    # pages
    def pages(self, site: Path) -> None:
        from playwright.sync_api import sync_playwright

        site.mkdir()
        urls = link_site(site, self.models + self.memory_models)
        servers: list[Server] = []
        try:
            static = static_server(site)
            servers.append(static)
            dev = dev_server(site)
            servers.append(dev)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    self.info["chromium"] = browser.version
                    self.page_speed(browser, urls, static, dev)
                    self.page_load(browser, urls, static, dev)
                    self.page_memory(browser, urls, dev)
                finally:
                    browser.close()
        finally:
            for server in servers:
                server.stop()

    def page_speed(self, browser, urls: dict, static: Server, dev: Server) -> None:
        # (name, server, threads URL parameter, which models). threads=2 forces the threaded engine;
        # "auto" shows what the page picks by itself on this machine.
        setups = [("page static", static, None, self.models),
                  ("page COOP/COEP threads=2", dev, "2", self.models),
                  ("page COOP/COEP auto", dev, None, self.models[:1])]
        for name, server, threads, models in setups:
            context = browser.new_context()
            context.add_init_script(PROBE)
            instrument(context)
            try:
                for model in models:
                    what = f"{name} {model.key}"
                    say(f"{what}: loading")
                    tab = Tab(context)
                    try:
                        tab.load(page_url(server.base, urls[model.key],
                                          urls[model.key + ":tokenizer"], threads), what)
                        label = tab.engine_label()
                        row = self.row(model, f"{name}: {label}", "page")
                        row.info["engine_text"] = label
                        row.info["server"] = server.name
                        # Greedy on the page too where it is cheap (all but the 42M shape).
                        greedy = not model.key.startswith("stories42M")
                        for _ in range(self.runs):
                            report, ttft = tab.generate(TEMPERATURE, what)
                            row.add("tokps", report["tokps"])
                            row.add("report", report)
                            row.add("ttft_ms", ttft)
                            if greedy:
                                report, _ = tab.generate(GREEDY, what)
                                row.add("greedy", report["tokps"])
                        row.info.update(tab.memory())
                        if tab.errors:
                            self.notes.append(f"{what}: browser errors: {'; '.join(tab.errors[:3])}")
                    finally:
                        tab.close()
            finally:
                context.close()

    def page_load(self, browser, urls: dict, static: Server, dev: Server) -> None:
        model = self.models[0]  # stories15M fp32
        setups = [("page static", static), ("page COOP/COEP", dev)]
        for name, server in setups[1:] if self.quick else setups:
            entry = {"server": name, "model": model.key, "cold_ms": [], "warm_ms": [],
                     "warm_first_ms": []}
            url = page_url(server.base, urls[model.key], urls[model.key + ":tokenizer"])
            for run in range(self.runs):
                context = browser.new_context()  # a fresh context: empty HTTP and code caches
                context.add_init_script(PROBE)
                tab = Tab(context)
                try:
                    what = f"{name} load"
                    entry["cold_ms"].append(tab.load(url, what)["readyAt"])
                    tab.page.reload()
                    tab.page.wait_for_function(WAIT_SETTLED, timeout=PAGE_TIMEOUT_MS, polling=50)
                    tab.check(what)
                    entry["warm_ms"].append(tab.probe()["readyAt"])
                    tab.page.goto(url + "&autostart=1")
                    tab.page.wait_for_function("window.__bench.firstTextAt !== null || "
                                               "document.body.dataset.state === 'error'",
                                               timeout=PAGE_TIMEOUT_MS, polling=20)
                    tab.check(what)
                    entry["warm_first_ms"].append(tab.probe()["firstTextAt"])
                    entry["engine_text"] = tab.engine_label()
                finally:
                    tab.close()
                    context.close()
            say(f"{name}: load to ready cold {median(entry['cold_ms']):.0f} ms, warm "
                f"{median(entry['warm_ms']):.0f} ms")
            self.load_rows.append(entry)

    def page_memory(self, browser, urls: dict, dev: Server) -> None:
        """The page's memory for the models that are only in the memory table (one run each)."""
        for model in self.memory_models:
            context = browser.new_context()
            context.add_init_script(PROBE)
            instrument(context)
            tab = Tab(context)
            what = f"page COOP/COEP {model.key}"
            try:
                say(f"{what}: loading (memory)")
                tab.load(page_url(dev.base, urls[model.key], urls[model.key + ":tokenizer"]), what)
                report, _ = tab.generate(TEMPERATURE, what)
                memory = tab.memory()
                self.memory_rows.append({
                    "model": model.key, "engine": f"page COOP/COEP: {tab.engine_label()}",
                    "peak_mb": memory["renderer_peak_mb"], "end_mb": memory["renderer_rss_mb"],
                    "file_mb": model.mb,
                    "wasm_mb": memory["wasm_mb"], "tokps": report["tokps"]})
            finally:
                tab.close()
                context.close()

    # -- tables ---------------------------------------------------------------------------------

    def baseline(self, model: Model, name: str) -> float | None:
        for row in self.rows:
            if row.model.key == model.baseline and row.engine.startswith("native scalar"):
                return row.med(name)
        return None

    def tables(self) -> str:
        lines = []
        w_model = max(len(r.model.key) for r in self.rows) + 2
        w_engine = max(len(r.engine) for r in self.rows) + 2

        def fmt(value, spec=".1f", width=8):
            return f"{'–' if value is None else format(value, spec):>{width}}"

        lines.append(f"Speed: tokens/s, median of {self.runs} (prompt {PROMPT!r}, {STEPS} steps, "
                     f"-t {TEMPERATURE} -p {TOPP} -s {SEED}; greedy = -t 0)")
        lines.append(f"{'model':<{w_model}}{'engine':<{w_engine}}{'tok/s':>8}{'x scalar':>10}"
                     f"{'range':>14}{'greedy':>9}{'x scalar':>10}")
        for row in self.rows:
            tokps, greedy = row.med("tokps"), row.med("greedy")
            base, base_greedy = self.baseline(row.model, "tokps"), self.baseline(row.model, "greedy")
            values = row.samples.get("tokps", [])
            spread = f"{min(values):.0f}-{max(values):.0f}" if values else "–"
            lines.append(
                f"{row.model.key:<{w_model}}{row.engine:<{w_engine}}{fmt(tokps)}"
                f"{fmt(tokps / base if tokps and base else None, '.2f', 10)}{spread:>14}"
                f"{fmt(greedy, '.1f', 9)}"
                f"{fmt(greedy / base_greedy if greedy and base_greedy else None, '.2f', 10)}")

        lines.append("")
        lines.append("Time per token outside forward() (Python loop, sampler, copy, messages), "
                     "sampling, median")
        lines.append("  (ms per token: the whole loop; forward = inside forward(); outside = the rest, of "
                     "which sample = the sampler")
        lines.append("   and other = decoding, the generator, posting pieces and yielding to events)")
        lines.append(f"{'model':<{w_model}}{'engine':<{w_engine + 13}}{'ms/token':>9}{'forward':>9}"
                     f"{'outside':>9}{'outside %':>10}{'sample':>8}{'other':>8}")
        for row in self.rows:
            if row.kind == "page":
                reports = [r for r in row.samples["report"] if "loop_ms" in r]
            elif "inprocess" in row.samples:
                reports = row.samples["inprocess"]
            else:
                continue
            name = row.engine + (" [in-process]" if row.kind == "native" else "")
            if not reports:
                lines.append(f"{row.model.key:<{w_model}}{name:<{w_engine + 13}}   (the page's "
                             "report has no loop_ms: rebuild the site)")
                continue
            parts = [overhead(r) for r in reports]
            per, fwd, out, pct, sample, other = (median([p[i] for p in parts]) for i in range(6))
            lines.append(f"{row.model.key:<{w_model}}{name:<{w_engine + 13}}{fmt(per, '.2f', 9)}"
                         f"{fmt(fwd, '.2f', 9)}{fmt(out, '.2f', 9)}{fmt(pct, '.1f', 9)}%"
                         f"{fmt(sample, '.2f', 8)}{fmt(other, '.2f', 8)}")

        lines.append("")
        lines.append("Time to first token, ms, median (page: click on Generate -> first text in "
                     "#output;")
        lines.append("  native CLI: process start -> first byte on stdout, Python start and model "
                     "load included;")
        lines.append("  native in-process: generate() start -> first piece, model already loaded)")
        lines.append(f"{'model':<{w_model}}{'engine':<{w_engine + 14}}{'TTFT ms':>9}")
        for row in self.rows:
            if row.kind == "page":
                lines.append(f"{row.model.key:<{w_model}}{row.engine:<{w_engine + 14}}"
                             f"{fmt(row.med('ttft_ms'), '.1f', 9)}")
            elif "inprocess" in row.samples:
                lines.append(f"{row.model.key:<{w_model}}{(row.engine + ' [CLI]'):<{w_engine + 14}}"
                             f"{fmt(row.med('first_byte_ms'), '.1f', 9)}")
                first = median([r["first_piece_ms"] for r in row.samples["inprocess"]])
                lines.append(f"{row.model.key:<{w_model}}{(row.engine + ' [in-process]'):<{w_engine + 14}}"
                             f"{fmt(first, '.1f', 9)}")

        lines.append("")
        lines.append(f"Page load, ms from navigation start, median of {self.runs} "
                     f"({self.models[0].key}, {self.models[0].mb:.0f} MB model + 32000-token "
                     "tokenizer)")
        lines.append(f"{'server':<18}{'engine':<36}{'cold->ready':>12}{'warm->ready':>12}"
                     f"{'warm->1st token':>16}")
        for entry in self.load_rows:
            lines.append(f"{entry['server']:<18}{entry.get('engine_text', ''):<36}"
                         f"{fmt(median(entry['cold_ms']), '.0f', 12)}"
                         f"{fmt(median(entry['warm_ms']), '.0f', 12)}"
                         f"{fmt(median(entry['warm_first_ms']), '.0f', 16)}")

        lines.append("")
        lines.append("Peak memory, MB (native: ru_maxrss of the CLI process; page: VmHWM of the tab's "
                     "renderer process,")
        lines.append("  which holds the page, its worker, Pyodide and the engine's threads, and its "
                     "RSS at the end; wasm = the")
        lines.append("  size of the engine's and Pyodide's WebAssembly memories at the end; all after "
                     f"{STEPS}-step generations)")
        lines.append(f"{'model':<{w_model}}{'engine':<{w_engine}}{'file':>6}{'peak RSS':>10}"
                     f"{'RSS at end':>12}{'engine wasm':>13}{'Pyodide wasm':>14}{'tok/s':>8}")
        memory = []
        for row in self.rows:
            if row.kind == "native" and row.engine.startswith("native CLI, auto"):
                memory.append({"model": row.model.key, "engine": row.engine,
                               "file_mb": row.model.mb, "peak_mb": max(row.samples["maxrss_mb"]),
                               "end_mb": None, "wasm_mb": None, "tokps": row.med("tokps")})
            elif row.kind == "page":
                memory.append({"model": row.model.key, "engine": row.engine,
                               "file_mb": row.model.mb, "peak_mb": row.info.get("renderer_peak_mb"),
                               "end_mb": row.info.get("renderer_rss_mb"),
                               "wasm_mb": row.info.get("wasm_mb"), "tokps": row.med("tokps")})
        memory += self.memory_rows
        order = list(dict.fromkeys(m["model"] for m in memory))
        self.memory_table = sorted(memory, key=lambda m: (order.index(m["model"]),
                                                          not m["engine"].startswith("native")))
        for m in self.memory_table:
            wasm = m["wasm_mb"] or {}
            lines.append(f"{m['model']:<{w_model}}{m['engine']:<{w_engine}}{fmt(m['file_mb'], '.0f', 6)}"
                         f"{fmt(m['peak_mb'], '.0f', 10)}{fmt(m['end_mb'], '.0f', 12)}"
                         f"{fmt(wasm.get('engine'), '.0f', 13)}"
                         f"{fmt(wasm.get('pyodide'), '.0f', 14)}{fmt(m['tokps'], '.1f')}")
        return "\n".join(lines)

    # -- outputs --------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        rows = []
        for row in self.rows:
            rows.append({
                "model": row.model.key, "engine": row.engine, "kind": row.kind,
                "format": row.model.format, "real_model": row.model.real,
                "model_mb": row.model.mb, "tokps": row.med("tokps"), "greedy_tokps": row.med("greedy"),
                "x_scalar": ratio(row.med("tokps"), self.baseline(row.model, "tokps")),
                "greedy_x_scalar": ratio(row.med("greedy"), self.baseline(row.model, "greedy")),
                "ttft_ms": row.med("ttft_ms"), "samples": row.samples, "info": row.info,
            })
        data = {
            "runs": self.runs, "quick": self.quick, "prompt": PROMPT, "steps": STEPS,
            "temperature": TEMPERATURE, "topp": TOPP, "seed": SEED,
            "machine": {"nproc": os.cpu_count(), "uname": " ".join(os.uname()),
                        "python": sys.version.split()[0]},
            "git": git_describe(), "info": self.info, "notes": self.notes,
            "timings_s": self.timings, "rows": rows, "load": self.load_rows,
            "memory": self.memory_table, "tables": text,
        }
        (self.out / "bench.json").write_text(json.dumps(data, indent=1, default=str))
        self.chart()

    def chart(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401

        rows = [r for r in self.rows if r.med("tokps")]
        labels = [f"{r.model.key} | {r.engine}" for r in rows]
        values = [r.med("tokps") for r in rows]
        ratios = [ratio(r.med("tokps"), self.baseline(r.model, "tokps")) for r in rows]
        colors = ["#4c72b0" if r.kind == "native" and not r.engine.startswith("native scalar")
                  else "#999999" if r.kind == "native" else "#dd8452" for r in rows]
        fig, ax = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.6))
        y = list(range(len(rows)))[::-1]
        ax.barh(y, values, color=colors)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(10 ** math.floor(math.log10(min(values))), max(values) * 2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel(f"tokens/s (median of {self.runs}, {STEPS} steps, sampling; log scale); "
                      "in brackets: x the scalar baseline")
        for yy, value, r in zip(y, values, ratios):
            text = f"{value:.0f}" + (f"  ({r:.2f}x)" if r else "")
            ax.text(value * 1.03, yy, text, va="center", fontsize=7)
        ax.set_title("llama2c-web: native (blue), scalar baseline (grey), page (orange)")
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.out / "bench.png", dpi=110)
        plt.close(fig)


def overhead(report: dict) -> tuple:
    """Per token, from a report: (ms in all, in forward, outside forward, % outside, in the
    sampler, other), the last two None when the report has no sample_ms."""
    tokens = report["tokens"]
    per = report["loop_ms"] / tokens
    outside = (report["loop_ms"] - report["forward_ms"]) / tokens
    sample = report.get("sample_ms")
    sample = None if sample is None or sample != sample else sample / tokens  # missing or NaN
    return (per, report["forward_ms"] / tokens, outside, 100 * outside / per, sample,
            None if sample is None else outside - sample)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def git_describe() -> str:
    proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                          text=True)
    return proc.stdout.strip()


def main(runs: int = 3, quick: bool = False, out: str | Path = "bench-results",
         train: bool = False) -> int:
    if train:  # `invoke bench --train`: the training table (tests/bench/train_bench.py)
        from train_bench import table
        print("\n".join(table(max(1, int(runs)))))
        return 0
    out = Path(out)
    if not out.is_absolute():
        out = ROOT / out
    runs = max(1, int(runs))
    if quick:
        runs = 1
    bench = Bench(runs, quick, out)
    try:
        bench.run()
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from playwright.sync_api import Error as PlaywrightError

        if not isinstance(e, PlaywrightError):
            raise
        print(f"bench: error: the browser failed: {str(e).strip()}", file=sys.stderr)
        return 1
    text = bench.tables()
    print()
    print(text)
    print()
    load = bench.info
    print(f"1-minute load average {load['loadavg_start'][0]:.2f} at the start, "
          f"{load['loadavg_after_native'][0]:.2f} after the native rows, "
          f"{load['loadavg_end'][0]:.2f} at the end ({os.cpu_count()} CPUs); "
          f"took {bench.timings['total']:.0f} s (models {bench.timings['models']:.0f}, "
          f"native {bench.timings['native']:.0f}, page {bench.timings['page']:.0f})")
    for note in bench.notes:
        print(f"note: {note}")
    bench.write(text)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()
    sys.exit(main(args.runs, args.quick, args.out))
