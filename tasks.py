"""Developer tasks for llama2c-web (run `invoke --list`).

    invoke setup            everything a fresh machine lacks (idempotent)
    invoke native           the gcc-built engine for the command line and tests
    invoke fetch-model N    a model and its tokenizer into models/ (size and sha256 checked)
    invoke build            the static site in site/ (incremental)
    invoke serve            the dev server on http://127.0.0.1:8000
    invoke test             every test (does any missing setup and build first)
    invoke bench            the speed and memory tables
    invoke fuzz             a longer, coverage-guided fuzz campaign on the engine's loader

LLAMA2C_MIRROR names a local folder to take models and Pyodide wheels from instead of their
official homes (CI sets it to ../shared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

from invoke import task

ROOT = Path(__file__).resolve().parent
# Tasks import this checkout's llama2c from its source folder. An editable install made by
# `invoke setup` adds that folder to sys.path only in processes started after it, and setup goes
# on to use the package in the same process.
sys.path.insert(0, str(ROOT / "pylib"))
SITE = ROOT / "site"  # the built static site
CACHE = ROOT / ".cache"  # downloads and intermediate build products
MODELS = ROOT / "models"  # models fetched with `invoke fetch-model`

PYODIDE_VERSION = "0.27.7"
PYODIDE_NPM = CACHE / f"pyodide-{PYODIDE_VERSION}"  # the npm package's core runtime
PYODIDE_FILES = ["pyodide.mjs", "pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm",
                 "python_stdlib.zip"]
PYODIDE_FULL = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full"
# Package wheels from the full Pyodide distribution; sha256 is checked against pyodide-lock.json.
PYODIDE_WHEELS = {"numpy": ("numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl", 3_061_133)}

from llama2c.cflags import C_COMMON, C_STD  # noqa: E402 (after the sys.path line above)

EMCC_FLAGS = [
    *C_STD, "-O3", "-msimd128",
    "-s", "MODULARIZE=1", "-s", "EXPORT_ES6=1", "-s", "ENVIRONMENT=web,worker",
    "-s", "ALLOW_MEMORY_GROWTH=1", "-s", "MAXIMUM_MEMORY=4GB",
    "-s", "EXPORTED_FUNCTIONS=" + ",".join(
        f"_{name}" for name in ["l2c_check", "l2c_load", "l2c_forward", "l2c_config",
                                "l2c_shared_classifier", "l2c_format", "l2c_group_size",
                                "l2c_set_threads", "l2c_threads", "l2c_expf",
                                "l2c_free", "l2c_last_error", "l2c_last_error_code", "malloc",
                                "free"]),
    "-s", "EXPORTED_RUNTIME_METHODS=UTF8ToString",
]
# The threaded build: workers for all but the calling thread, made when the module starts.
# A thread beyond the pool would need a new Worker, which starts only once the calling thread
# returns to its event loop; the engine waits for its threads without returning, so `threads=16`
# on 2 cores hung the page in 6 of 17 runs. STRICT=2 makes such a pthread_create fail instead, and
# the engine runs with the threads it got (wasm/run.c set_pool_threads).
EMCC_THREAD_FLAGS = [
    "-pthread", "-Wno-pthreads-mem-growth",
    "-s", "PTHREAD_POOL_SIZE='Math.min(Math.max((navigator.hardwareConcurrency||2)-1,1),15)'",
    "-s", "PTHREAD_POOL_SIZE_STRICT=2",
]
# The two browser engines: threads need a cross-origin isolated page; plain hosts get the first.
ENGINES = {"llama2c-engine": [], "llama2c-engine-mt": EMCC_THREAD_FLAGS}
GCC_FLAGS = [*C_COMMON, "-O3", "-fvisibility=hidden", "-shared", "-fPIC"]

DEBIAN_PACKAGES = {"emcc": "emscripten", "chromium": "chromium"}


# -- helpers ------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"» {message}", flush=True)


def newer(target: Path, *sources: Path) -> bool:
    """True when target is missing or older than any source (make's rule)."""
    if not target.exists():
        return True
    stamp = target.stat().st_mtime
    return any(s.stat().st_mtime > stamp for s in sources)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def copy_if_newer(source: Path, target: Path) -> None:
    if newer(target, source):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def emcc_env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": "/usr/share/nodejs"}  # emcc needs acorn from here


def python312() -> str | None:
    """An interpreter matching Pyodide 0.27's Python 3.12, for byte-compiling the wheel."""
    found = shutil.which("python3.12")
    if found and subprocess.run([found, "-c", "1"], capture_output=True).returncode == 0:
        return found
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")):
        return str(candidate)
    return None


def pip_missing(modules: list[str]) -> list[str]:
    import importlib.util
    return [m for m in modules if importlib.util.find_spec(m) is None]


# -- setup --------------------------------------------------------------------------------------


@task
def setup(c):
    """Install what a fresh machine lacks: Python and Debian packages, Pyodide, numpy for Pyodide."""
    if pip_missing(["starlette", "uvicorn", "playwright", "pytest", "httpx", "matplotlib", "wheel"]) or \
            not (ROOT / "pylib/llama2c" / native_library_name()).exists():
        say("installing the llama2c package and its dev dependencies")
        c.run(f"{sys.executable} -m pip install -q -e '.[dev]'")

    missing = [pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None]
    if missing:
        command = f"apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {' '.join(missing)}"
        if os.geteuid() == 0:
            say(f"installing Debian packages: {' '.join(missing)}")
            c.run(command)
        else:
            raise SystemExit(f"missing Debian packages; run as root:\n  sudo sh -c '{command}'")

    if not (PYODIDE_NPM / "pyodide-lock.json").exists():
        say(f"fetching the Pyodide {PYODIDE_VERSION} core runtime from the npm registry")
        CACHE.mkdir(exist_ok=True)
        c.run(f"cd {CACHE} && npm pack --silent pyodide@{PYODIDE_VERSION}")
        tarball = CACHE / f"pyodide-{PYODIDE_VERSION}.tgz"
        with tarfile.open(tarball) as tar:
            tar.extractall(CACHE / "npm", filter="data")
        shutil.rmtree(PYODIDE_NPM, ignore_errors=True)
        (CACHE / "npm/package").rename(PYODIDE_NPM)
        tarball.unlink()

    fetch_pyodide_wheels()

    py312 = python312()
    if py312 is None:
        say("warning: no Python 3.12 found; the browser wheel will ship uncompiled .py files")
    elif subprocess.run([py312, "-c", "import pyodide_build"], capture_output=True).returncode:
        say("installing pyodide-build for Python 3.12 (for `pyodide py-compile`)")
        c.run(f"{py312} -m pip install -q pyodide-build==0.39.2 'pyodide-lock[wheel]'")


def fetch_pyodide_wheels() -> None:
    """The Pyodide package wheels the page needs, verified against Pyodide's own lock file."""
    from llama2c.fetch import ModelFile, fetch_file

    lock = json.loads((PYODIDE_NPM / "pyodide-lock.json").read_text())
    dest = CACHE / "pyodide-wheels"
    dest.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get("LLAMA2C_MIRROR")
    for name, (filename, size) in PYODIDE_WHEELS.items():
        entry = lock["packages"][name]
        assert entry["file_name"] == filename, f"{name}: the lock names {entry['file_name']}"
        wheel = ModelFile(filename, f"{PYODIDE_FULL}/{filename}", size, entry["sha256"])
        fetch_file(wheel, dest, Path(mirror) if mirror else None, progress=False)


# -- native engine ------------------------------------------------------------------------------


def native_library_name() -> str:
    return "_engine" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")


@task
def native(c):
    """Build the native engine library that llama2c.native loads."""
    source = ROOT / "wasm/run.c"
    target = ROOT / "pylib/llama2c" / native_library_name()
    if newer(target, source, Path(__file__)):
        say(f"gcc {source.relative_to(ROOT)} -> {target.relative_to(ROOT)}")
        c.run(f"gcc {' '.join(GCC_FLAGS)} -o {target} {source} -lm")
    return target


# -- models -------------------------------------------------------------------------------------


@task(name="fetch-model", help={"name": "stories260K, stories15M, stories42M or stories110M",
                                "from_": "a local mirror folder to copy from"})
def fetch_model(c, name, from_=None, dest=str(MODELS)):
    """Download a model and its tokenizer from their official homes into models/."""
    from llama2c.fetch import FetchError
    from llama2c.fetch import fetch_model as fetch

    try:
        for path in fetch(name, dest, mirror=from_):
            say(f"{path} ok")
    except FetchError as e:
        raise SystemExit(f"error: {e}") from None


# -- the site -----------------------------------------------------------------------------------


# The page's default model and the small one the tests use; build fetches them when missing.
DEFAULT_MODELS = ["stories15M", "stories260K"]


def fetch_default_models() -> None:
    """Fetches the default models into models/, warning (not failing) when a home is unreachable."""
    from llama2c.fetch import FetchError, fetch_model as fetch, model_files

    for name in DEFAULT_MODELS:
        if all((MODELS / f.filename).exists() for f in model_files(name)):
            continue
        try:
            fetch(name, MODELS)
        except FetchError as e:
            say(f"warning: {name} is not in the site: {e}")


@task
def build(c):
    """Assemble the static site in site/: page, worker, engine, Pyodide, numpy, llama2c, models."""
    if not (PYODIDE_NPM / "pyodide-lock.json").exists():
        setup(c)
    SITE.mkdir(exist_ok=True)
    fetch_default_models()
    build_engine(c)
    wheel = build_wheel(c)
    build_pyodide(wheel)
    for source in files_under(ROOT / "web"):
        if "screenshots" not in source.parts:  # the README's pictures, not part of the site
            copy_if_newer(source, SITE / source.relative_to(ROOT / "web"))
    for model in sorted(MODELS.glob("*.bin")) if MODELS.exists() else []:
        copy_if_newer(model, SITE / "models" / model.name)
    say(f"site ready in {SITE.relative_to(ROOT)}/ ({len(files_under(SITE))} files)")


def build_engine(c) -> None:
    source = ROOT / "wasm/run.c"
    for name, extra in ENGINES.items():
        target = SITE / f"engine/{name}.mjs"
        if newer(target, source, Path(__file__)):
            target.parent.mkdir(parents=True, exist_ok=True)
            say(f"emcc wasm/run.c -> engine/{name}.mjs")
            c.run(f"emcc {' '.join(EMCC_FLAGS + extra)} -o {target} {source}", env=emcc_env())


def build_wheel(c) -> Path:
    """The pure-Python llama2c wheel for Pyodide, byte-compiled for its Python 3.12."""
    sources = files_under(ROOT / "pylib/llama2c")
    sources = [p for p in sources if p.suffix == ".py"] + [ROOT / "pyproject.toml"]
    out = CACHE / "wheel"
    stamp = out / "built"
    if not newer(stamp, *sources):
        return next(out.glob("llama2c-*.whl"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    say("building the llama2c wheel for Pyodide")
    c.run(f"{sys.executable} -m pip wheel -q --no-deps --no-build-isolation -w {out} {ROOT}",
          env={**os.environ, "LLAMA2C_PURE": "1"})
    wheel = next(out.glob("llama2c-*.whl"))
    py312 = python312()
    if py312:
        pyodide_cli = Path(py312).parent / "pyodide"
        c.run(f"cd {out} && {pyodide_cli} py-compile {wheel.name}", hide="out")
        wheel = next(out.glob("llama2c-*.whl"))  # py-compile replaces the wheel
    stamp.touch()
    return wheel


def build_pyodide(wheel: Path) -> None:
    """The Pyodide runtime, numpy, and a pyodide-lock.json that also lists the llama2c wheel."""
    from llama2c.fetch import sha256_of

    target = SITE / "pyodide"
    target.mkdir(parents=True, exist_ok=True)
    for name in PYODIDE_FILES:
        copy_if_newer(PYODIDE_NPM / name, target / name)
    for filename, _ in PYODIDE_WHEELS.values():
        copy_if_newer(CACHE / "pyodide-wheels" / filename, target / filename)
    for old in target.glob("llama2c-*.whl"):
        if old.name != wheel.name:
            old.unlink()
    copy_if_newer(wheel, target / wheel.name)

    lock = json.loads((PYODIDE_NPM / "pyodide-lock.json").read_text())
    lock["packages"]["llama2c"] = {
        "name": "llama2c",
        "version": wheel.name.split("-")[1],
        "file_name": wheel.name,
        "install_dir": "site",
        "sha256": sha256_of(wheel),
        "package_type": "package",
        "imports": ["llama2c"],
        "depends": ["numpy"],
        "unvendored_tests": False,
        "shared_library": False,
    }
    text = json.dumps(lock, indent=1, sort_keys=True)
    lock_path = target / "pyodide-lock.json"
    if not lock_path.exists() or lock_path.read_text() != text:
        lock_path.write_text(text)


@task(help={"group_size": "values per scale (backs off to divide dim and hidden_dim)"})
def quantize(c, src, dst, group_size=64):
    """Write an int8 (Q8_0) copy of a legacy fp32 checkpoint: `invoke quantize IN.bin OUT.bin`."""
    from llama2c.quantize import main as quantize_main

    if quantize_main([src, dst, str(group_size)]) != 0:
        raise SystemExit(1)


@task
def serve(c, host="127.0.0.1", port=8000):
    """Serve site/ with the dev server (COOP/COEP, Range, CORS): `invoke build serve`."""
    from llama2c.devserver import serve as run_server

    say(f"serving {SITE.relative_to(ROOT)}/ on http://{host}:{port}/")
    run_server(SITE, host=host, port=int(port))


# Chromium as the machine has it (Debian's package); Playwright never downloads a browser here.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@task
def screenshots(c, out="web/screenshots"):
    """Screenshots of the real page (desktop and phone width, light and dark) for the README."""
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    from llama2c.devserver import create_app

    build(c)
    config = uvicorn.Config(create_app(SITE), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    query = ("model=models/stories260K.bin&tokenizer=models/tok512.bin&prompt=Once%20upon%20a%20time"
             "&temperature=0.8&seed=42&steps=200&autostart=1")
    target = ROOT / out
    target.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for device, viewport in {"desktop": (1280, 860), "phone": (390, 844)}.items():
                for scheme in ("light", "dark"):
                    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]},
                                            color_scheme=scheme)
                    page.goto(f"http://127.0.0.1:{port}/?{query}")
                    page.wait_for_function("document.body.dataset.state === 'done'",
                                           timeout=120_000)
                    path = target / f"{device}-{scheme}.png"
                    page.screenshot(path=str(path), full_page=device == "phone")
                    say(f"{path.relative_to(ROOT)}")
                    page.close()
            browser.close()
    finally:
        server.should_exit = True
        thread.join()


@task
def clean(c):
    """Remove the built site and intermediate build products (keeps downloads and models)."""
    shutil.rmtree(SITE, ignore_errors=True)
    shutil.rmtree(CACHE / "wheel", ignore_errors=True)


# -- tests --------------------------------------------------------------------------------------


@task
def test(c, k="", x=False):
    """Run every test, after any missing setup and build (-k to select, -x to stop early)."""
    setup(c)
    native(c)
    build(c)
    args = ["-q", "-rfE"] + (["-x"] if x else []) + (["-k", k] if k else [])
    c.run(f"{sys.executable} -m pytest {' '.join(args)}", pty=False)


# -- fuzzing ------------------------------------------------------------------------------------


@task(help={"minutes": "how long to run, default 10",
            "seed": "libFuzzer's random seed (0: a new one each run)"})
def fuzz(c, minutes="10", seed=0):
    """A coverage-guided libFuzzer campaign on the engine's loader, under ASan and UBSan.

    Starts from the seed checkpoints and the crashes in tests/fuzz/crashes/, and copies any new
    crash there, so the tests replay it from then on. `invoke test` runs a fixed corpus instead.
    """
    sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
    import corpus

    work = CACHE / "fuzz"
    live = work / "corpus"  # libFuzzer's growing corpus, kept between campaigns
    found = work / "found"
    for folder in (live, found):
        folder.mkdir(parents=True, exist_ok=True)
    for path in corpus.write_seeds(work / "seeds") + sorted(corpus.CRASHES.glob("*.bin")):
        shutil.copy(path, live / path.name)
    target = corpus.build_libfuzzer(work / "fuzz_loader")
    say(f"fuzzing the loader for {minutes} min (corpus in {live.relative_to(ROOT)})")
    proc = subprocess.run([str(target), f"-max_total_time={int(float(minutes) * 60)}",
                           f"-seed={int(seed)}", "-max_len=65536", "-rss_limit_mb=2048",
                           "-print_final_stats=1", f"-artifact_prefix={found}/", str(live)],
                          env=corpus.fuzz_env())
    crashes = sorted(p for p in found.iterdir() if p.is_file())
    for crash in crashes:
        shutil.copy(crash, corpus.CRASHES / f"libfuzzer-{crash.name}.bin")
        say(f"crash saved as tests/fuzz/crashes/libfuzzer-{crash.name}.bin: fix it, then describe "
            "it in tests/fuzz/crashes/README.md")
    if proc.returncode != 0 or crashes:
        raise SystemExit(1)
    say("no crash found")


# -- benchmark ----------------------------------------------------------------------------------


@task(help={"runs": "runs per measurement (the tables show the median), default 3",
            "quick": "a fast smoke run: the stories15M shape only, one run",
            "out": "folder for bench.json and bench.png, default bench-results/"})
def bench(c, runs=3, quick=False, out="bench-results"):
    """The speed and memory tables: native CLI, scalar baseline and the page, side by side."""
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from runbench import main as bench_main

    if bench_main(runs=int(runs), quick=quick, out=out) != 0:
        raise SystemExit(1)
