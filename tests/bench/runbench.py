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
  worker and the engine's threads live there) and the size of the WebAssembly memory;
- issue 13's target table, every ratio paired (targets.py).

Models are generated in a temporary folder (random weights of the real shapes: speed does not depend
on the values), plus real models found in models/. Nothing is written into site/: the page is
served from a temporary folder of hard links.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llama2c.toolchain import CHROMIUM, CHROMIUM_ARGS, ENGINE_SOURCE

from . import server_bench, tables, targets, token_view, train_bench
from .common import (
    GREEDY,
    PYLIB,
    ROOT,
    SHARED,
    SITE,
    STEPS,
    TEMPERATURE,
    BenchError,
    Row,
    median,
    say,
)
from .models import MODELS, Model, compile_scalar, make_models, tokenizer_for
from .native_runs import auto_threads, cli_run, find_cli, inprocess_run, native_env
from .page_runs import (
    PAGE_TIMEOUT_MS,
    PROBE,
    WAIT_SETTLED,
    Server,
    Tab,
    dev_server,
    instrument,
    link_site,
    page_url,
    static_server,
)

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
        if (ROOT / ENGINE_SOURCE).stat().st_mtime > (SITE / "engine/llama2c-engine.mjs").stat().st_mtime:
            stale.append("wasm/run.c (engine)")
        wheels = sorted((SITE / "pyodide").glob("llama2c-*.whl"))
        if not wheels:
            missing.append("pyodide/llama2c-*.whl")
        else:
            built = wheels[0].stat().st_mtime
            stale += [f"pylib/llama2c/{p.name}" for p in sorted((ROOT / "pylib/llama2c").glob("*.py"))
                      if p.stat().st_mtime > built]
    return missing, stale


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
    if (ROOT / ENGINE_SOURCE).stat().st_mtime > engine.stat().st_mtime:
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


# -- the benchmark ----------------------------------------------------------------------------


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
            say("the dev server under load")
            self.server_load = server_bench.measure(tmp / "site")
            say("the token view's cost")
            self.token_view = token_view.measure(self.runs, tokenizer_for(32000))
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


def main(runs: int = 3, quick: bool = False, out: str | Path = "bench-results",
         targets_only: bool = False, train: bool = False) -> int:
    if train:  # `invoke bench --train`: the training table (train_bench.py)
        print("\n".join(train_bench.table(max(1, int(runs)))))
        return 0
    out = Path(out)
    if not out.is_absolute():
        out = ROOT / out
    runs = max(1, int(runs))
    if quick:
        runs = 1
    bench = Bench(runs, quick, out)
    try:
        if not targets_only:
            bench.run()
        target_lines = targets.main(rounds=runs, out=out)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from playwright.sync_api import Error as PlaywrightError

        if not isinstance(e, PlaywrightError):
            raise
        print(f"bench: error: the browser failed: {str(e).strip()}", file=sys.stderr)
        return 1
    print()
    print("Targets (issue 13), paired rounds alternating their order: median of the per-round "
          "ratios (range)")
    print("\n".join(target_lines))
    print(f"wrote {out / 'targets.json'}")
    if targets_only:
        return 0
    text = tables.tables(bench)
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
    tables.write(bench, text)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    import argparse  # python -m bench.runbench, from tests/

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--targets-only", action="store_true")
    args = parser.parse_args()
    sys.exit(main(args.runs, args.quick, args.out, args.targets_only))
