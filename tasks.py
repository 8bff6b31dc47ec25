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
import re
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

from llama2c.fetch import MIRROR_ENV  # noqa: E402
from llama2c.toolchain import (BROWSER_ENGINES, CHROMIUM, CHROMIUM_ARGS, CLANG,  # noqa: E402
                               ENGINE_SOURCE, KERNEL_HEADER, LIB_NAME, NATIVE_CFLAGS,
                               NATIVE_LDFLAGS, RELAXED_CFLAGS, RELAXED_GLUE, RELAXED_KERNELS,
                               RELAXED_SOURCE, ROPE_TABLES, WASM_LD, emcc_flags)
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


class SetupError(SystemExit):
    """A set-up step that cannot work here: one line that says what to do."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def run_step(c, command: str, failed: str, env: dict[str, str] | None = None) -> None:
    """Runs a set-up command, showing its output; a failure becomes one line saying what to do."""
    if c.run(command, warn=True, env=env or {}).failed:
        raise SetupError(failed)


# -- setup --------------------------------------------------------------------------------------

# Debian packages the build, the tests and `invoke fuzz` need, keyed by a command each provides
# (or a file, for a library).
DEBIAN_PACKAGES = {"emcc": "emscripten", "chromium": "chromium", "firefox-esr": "firefox-esr",
                   "npm": "npm", CLANG: "clang-22", WASM_LD: "lld-22",
                   "/usr/lib/llvm-22/lib/clang/22/include/fuzzer/FuzzedDataProvider.h":
                       "libclang-rt-22-dev"}  # libFuzzer's runtime
# What `pip install -e` adds to the package: the build, serve and test tools, and PyTorch and
# sentencepiece for training (pinned in pyproject.toml: an unpinned torch pulls a 3 GB CUDA build).
PIP_EXTRAS = ("dev", "train")
EXTRAS = ",".join(PIP_EXTRAS)


def project_requirements() -> list[str]:
    """What pyproject.toml asks for, with PIP_EXTRAS: the checkout's wishes, not what an earlier
    install recorded."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: no TOML reader; always install
        return ["tomllib"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return project.get("dependencies", []) + [r for e in PIP_EXTRAS for r in extras.get(e, [])]


def python_ready() -> bool:
    """True when this interpreter has llama2c installed from this checkout, its extras and the
    native engine built from the current run.c."""
    import importlib.metadata

    # Look where pip installs, not in pylib/: its llama2c.egg-info (written by an editable
    # install) has no record of where the package was installed from.
    installed = [p for p in sys.path if Path(p).resolve() != ROOT / "pylib"]
    dist = next(iter(importlib.metadata.distributions(name="llama2c", path=installed)), None)
    if dist is None:
        return False
    where = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if where != ROOT.as_uri():
        return False  # installed from another checkout, or not editable
    for requirement in project_requirements():
        try:
            importlib.metadata.distribution(re.match(r"[\w.-]+", requirement).group())
        except importlib.metadata.PackageNotFoundError:
            return False
    return not newer(ROOT / "pylib/llama2c" / LIB_NAME, ROOT / ENGINE_SOURCE, ROOT / KERNEL_HEADER)


def setup_python(c) -> None:
    if python_ready():
        say(f"skipped: llama2c[{EXTRAS}] is already installed from this checkout")
        return
    if sys.prefix == sys.base_prefix and (Path(sysconfig.get_path("stdlib")) /
                                          "EXTERNALLY-MANAGED").exists():
        raise SetupError(f"{sys.executable} is managed by Debian (PEP 668); make a virtual "
                         "environment first: python3 -m venv ~/.venvs/llama2c && "
                         ". ~/.venvs/llama2c/bin/activate")
    say(f"installing llama2c[{EXTRAS}] from this checkout (pip install -e)")
    run_step(c, f"{sys.executable} -m pip install -q -e '{ROOT}[{EXTRAS}]'",
             "pip could not install the package and its tools (see above); check that PyPI "
             "is reachable, then run `invoke setup` again")


def setup_debian(c) -> None:
    missing = sorted({pkg for what, pkg in DEBIAN_PACKAGES.items()
                      if not (Path(what).exists() if what.startswith("/") else shutil.which(what))})
    if not missing:
        say(f"skipped: Debian packages already installed ({', '.join(sorted(set(DEBIAN_PACKAGES.values())))})")
        return
    command = ("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
               + " ".join(missing))
    if os.geteuid() == 0:
        prefix = ""
    elif shutil.which("sudo"):
        prefix = "sudo "
        command = f"sh -c '{command}'"
    else:
        raise SetupError(f"Debian packages missing ({' '.join(missing)}) and no root or sudo "
                         f"here; have an administrator run: {command}")
    say(f"installing Debian packages: {' '.join(missing)}")
    run_step(c, prefix + command,
             f"apt-get could not install {' '.join(missing)} (see above); check the network "
             "and Debian's package sources, then run `invoke setup` again")


def setup_pyodide_runtime(c) -> None:
    if (PYODIDE_NPM / "pyodide-lock.json").exists():
        say(f"skipped: the Pyodide {PYODIDE_VERSION} runtime is already in {PYODIDE_NPM.relative_to(ROOT)}/")
        return
    say(f"fetching the Pyodide {PYODIDE_VERSION} core runtime from the npm registry")
    CACHE.mkdir(exist_ok=True)
    run_step(c, f"cd {CACHE} && npm pack --silent pyodide@{PYODIDE_VERSION}",
             f"npm could not fetch pyodide@{PYODIDE_VERSION} (see above); check that the npm "
             "registry is reachable, then run `invoke setup` again")
    tarball = CACHE / f"pyodide-{PYODIDE_VERSION}.tgz"
    with tarfile.open(tarball) as tar:
        tar.extractall(CACHE / "npm", filter="data")
    shutil.rmtree(PYODIDE_NPM, ignore_errors=True)
    (CACHE / "npm/package").rename(PYODIDE_NPM)
    tarball.unlink()


def setup_pyodide_wheels() -> None:
    """The Pyodide package wheels the page needs, verified against Pyodide's own lock file."""
    from llama2c.fetch import FetchError, ModelFile, fetch_file

    lock = json.loads((PYODIDE_NPM / "pyodide-lock.json").read_text())
    dest = CACHE / "pyodide-wheels"
    dest.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get(MIRROR_ENV)
    for name, (filename, size) in PYODIDE_WHEELS.items():
        entry = lock["packages"][name]
        assert entry["file_name"] == filename, f"{name}: the lock names {entry['file_name']}"
        wheel = ModelFile(filename, f"{PYODIDE_FULL}/{filename}", size, entry["sha256"])
        try:
            fetch_file(wheel, dest, Path(mirror) if mirror else None, progress=True)
        except FetchError as e:
            raise SetupError(f"{e}") from None


def setup_pyodide_build(c) -> None:
    py312 = python312()
    if py312 is None:
        say("warning: no Python 3.12 found; the browser wheel will ship uncompiled .py files")
    elif subprocess.run([py312, "-c", "import pyodide_build"], capture_output=True).returncode:
        say("installing pyodide-build for Python 3.12 (for `pyodide py-compile`)")
        run_step(c, f"{py312} -m pip install -q pyodide-build==0.39.2 'pyodide-lock[wheel]'",
                 f"pip could not install pyodide-build into {py312} (see above); check that "
                 "PyPI is reachable, then run `invoke setup` again")
    else:
        say(f"skipped: pyodide-build is already installed for {py312}")


@task
def setup(c):
    """Install what a fresh machine lacks (idempotent: says what it skipped)."""
    setup_python(c)
    setup_debian(c)
    setup_pyodide_runtime(c)
    setup_pyodide_wheels()
    setup_pyodide_build(c)


# -- native engine ------------------------------------------------------------------------------


@task
def native(c):
    """Build the native engine library that llama2c.native loads."""
    source = ROOT / ENGINE_SOURCE
    target = ROOT / "pylib/llama2c" / LIB_NAME
    if newer(target, source, ROOT / KERNEL_HEADER, ROOT / "pylib/llama2c/toolchain.py"):
        say(f"gcc {ENGINE_SOURCE} -> {target.relative_to(ROOT)}")
        c.run(f"gcc {' '.join(NATIVE_CFLAGS)} -o {target} {source} {' '.join(NATIVE_LDFLAGS)}")
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
    build_pyodide(build_wheel(c), build_numpy(c))
    for source in files_under(ROOT / "web"):
        copy_if_newer(source, SITE / source.relative_to(ROOT / "web"))
    for model in sorted(MODELS.glob("*.bin")) if MODELS.exists() else []:
        copy_if_newer(model, SITE / "models" / model.name)
    write_model_index()
    write_offline_list()
    say(f"site ready in {SITE.relative_to(ROOT)}/ ({len(files_under(SITE))} files)")


def write_model_index() -> None:
    """site/models/index.json, the page's model list; says which model the page opens on."""
    from llama2c.catalog import write_index

    (SITE / "models").mkdir(exist_ok=True)
    index = write_index(SITE / "models")
    for line in index["skipped"]:
        say(f"warning: not in the model list: {line}")
    names = ", ".join(m["name"] for m in index["models"]) or "none"
    say(f"models in the site: {names}; the page opens on {index['default'] or 'no model'}")


def write_offline_list() -> None:
    """site/offline.json: what web/sw.js keeps for offline use, under a version of this build."""
    from llama2c.catalog import write_offline_list as write

    say(f"offline copy: version {write(SITE)['version']}")


def build_engine(c) -> None:
    source = ROOT / ENGINE_SOURCE
    flags = emcc_flags(source.read_text())
    inputs = [source, ROOT / KERNEL_HEADER, ROOT / RELAXED_GLUE, ROOT / "pylib/llama2c/toolchain.py"]
    for name, extra in BROWSER_ENGINES.items():
        target = SITE / f"engine/{name}.mjs"
        if newer(target, *inputs):
            target.parent.mkdir(parents=True, exist_ok=True)
            say(f"emcc {ENGINE_SOURCE} -> engine/{name}.mjs")
            with c.cd(str(ROOT)):  # the flags name files relative to the checkout
                c.run(f"emcc {' '.join(flags + extra)} -o {target} {source}", env=emcc_env())
        build_relaxed_kernel(c, name)
    build_rope_tables(c)


def build_rope_tables(c) -> None:
    """engine/rope-<head size>.bin: (positions, head_size / 2, 2) float32 cos, sin, written by the
    native engine (glibc's cosf and sinf, as run.c); and engine/rope.json, {head size: positions},
    the list the page reads first."""
    library = native(c)
    index = SITE / "engine/rope.json"
    text = json.dumps({str(k): v for k, v in ROPE_TABLES.items()})
    if not index.exists() or index.read_text() != text:
        index.write_text(text)
    for head_size, positions in ROPE_TABLES.items():
        target = SITE / f"engine/rope-{head_size}.bin"
        if newer(target, library):
            from llama2c.native import rope_table

            target.write_bytes(rope_table(head_size, positions).astype("<f4").tobytes())


def build_relaxed_kernel(c, engine: str) -> None:
    """wasm/relaxed.c -> engine/<engine>-relaxed.wasm, for that engine's memory."""
    source = ROOT / RELAXED_SOURCE
    target = SITE / f"engine/{engine}-relaxed.wasm"
    if not newer(target, source, ROOT / KERNEL_HEADER, ROOT / "pylib/llama2c/toolchain.py"):
        return
    cflags, ldflags = RELAXED_KERNELS[engine]
    obj = CACHE / f"{engine}-relaxed.o"
    obj.parent.mkdir(parents=True, exist_ok=True)
    say(f"{CLANG} {RELAXED_SOURCE} -> engine/{target.name}")
    c.run(f"{CLANG} {' '.join(RELAXED_CFLAGS + cflags)} -c {source} -o {obj}")
    c.run(f"{WASM_LD} --no-entry --import-memory {' '.join(ldflags)} {obj} -o {target}")


def build_wheel(c) -> Path:
    """The pure-Python llama2c wheel for Pyodide, byte-compiled for its Python 3.12."""
    sources = files_under(ROOT / "pylib/llama2c")
    sources = [p for p in sources if p.suffix == ".py"] + [ROOT / "pyproject.toml", ROOT / "setup.py"]
    out = CACHE / "wheel"
    stamp = out / "built"
    if not newer(stamp, *sources):
        return next(out.glob("llama2c-*.whl"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # setuptools reuses build/lib, where an earlier build may have left modules the browser does
    # not get (setup.py, NATIVE_ONLY)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    say("building the llama2c wheel for Pyodide")
    c.run(f"{sys.executable} -m pip wheel -q --no-deps --no-build-isolation -w {out} {ROOT}",
          env={**os.environ, "LLAMA2C_PURE": "1"})
    wheel = py_compile(c, next(out.glob("llama2c-*.whl")))
    stamp.touch()
    return wheel


def py_compile(c, wheel: Path) -> Path:
    """Replaces `wheel`'s .py files with .pyc for Pyodide's Python 3.12 (`pyodide py-compile`,
    Pyodide's own tool), so the browser does not compile them at every start. Without a Python
    3.12 (`invoke setup` warned), the wheel stays as it is.

    The same sources give the same bytes: SOURCE_DATE_EPOCH makes the .pyc files hash-based (not
    stamped with the time of the build), and the entries' dates are fixed. A rebuilt site then
    keeps its wheels' sha256, which name the page's offline copy and Python snapshot."""
    py312 = python312()
    if py312:
        c.run(f"cd {wheel.parent} && {Path(py312).parent / 'pyodide'} py-compile {wheel.name}",
              hide="out", env={"SOURCE_DATE_EPOCH": "315532800"})  # 1980-01-01, zip's first day
    # py-compile replaces the wheel; a pure one's tag becomes cp312 (llama2c-...-cp312-none-any)
    compiled = next(wheel.parent.glob(f"{wheel.name.split('-')[0]}-*.whl"))
    undate_zip(compiled)
    return compiled


def undate_zip(path: Path) -> None:
    """Rewrites the zip at `path` with every entry dated 1980-01-01 (its order and compression
    kept): py-compile dates the entries it writes with the time of the build."""
    import zipfile

    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    temporary = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(temporary, "w") as target:
        for info, data in entries:
            info.date_time = (1980, 1, 1, 0, 0, 0)
            target.writestr(info, data, compress_type=info.compress_type)
    temporary.replace(path)


def build_numpy(c) -> Path:
    """numpy's wheel for the site: the pinned one from Pyodide's distribution (its sha256 checked
    by `invoke setup`), byte-compiled. Its import in the page took 0.37 s from .py files and 0.21 s
    from .pyc (six paired rounds in Chromium's worker), on every visit."""
    filename, _ = PYODIDE_WHEELS["numpy"]
    source = CACHE / "pyodide-wheels" / filename
    out = CACHE / "numpy-pyc"
    compiled = out / filename
    stamp = out / "built"  # after py-compile: a copy it did not finish is compiled again
    if newer(stamp, source):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.copy2(source, compiled)
        py_compile(c, compiled)
        stamp.touch()
    return compiled


def build_pyodide(wheel: Path, numpy: Path) -> None:
    """The Pyodide runtime, numpy, and a pyodide-lock.json that also lists the llama2c wheel (and
    the sha256 of the numpy wheel the site holds: web/worker.js checks both)."""
    from llama2c.fetch import sha256_of

    target = SITE / "pyodide"
    target.mkdir(parents=True, exist_ok=True)
    for name in PYODIDE_FILES:
        copy_if_newer(PYODIDE_NPM / name, target / name)
    copy_if_newer(numpy, target / numpy.name)
    for old in target.glob("llama2c-*.whl"):
        if old.name != wheel.name:
            old.unlink()
    copy_if_newer(wheel, target / wheel.name)

    lock = json.loads((PYODIDE_NPM / "pyodide-lock.json").read_text())
    lock["packages"]["numpy"]["sha256"] = sha256_of(numpy)
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


@task
def screenshots(c, out="docs/screenshots"):
    """Screenshots of the real page for the README: a story (desktop and phone width, light and
    dark), a multi-turn chat with chatty260K, and the token view."""
    import tempfile
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    from llama2c.catalog import write_index
    from llama2c.devserver import create_app

    build(c)
    # The chat needs chatty260K, a test model that ends its replies: served from a copy of the site.
    mirror = Path(os.environ.get(MIRROR_ENV, ROOT.parent / "shared"))
    chatty = mirror / "models" / "chatty260K.bin"
    if not chatty.is_file():
        raise SystemExit(f"error: {chatty} is missing (set LLAMA2C_MIRROR to ../shared)")
    root = Path(tempfile.mkdtemp(prefix="llama2c-screens-"))
    shutil.copytree(SITE, root, dirs_exist_ok=True)
    shutil.copy2(chatty, root / "models" / chatty.name)
    write_index(root / "models")
    config = uvicorn.Config(create_app(root), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    model = "model=models/stories260K.bin&tokenizer=models/tok512.bin"
    story = f"{model}&prompt=Once%20upon%20a%20time&temperature=0.8&seed=42&steps=200"
    chat = ("model=models/chatty260K.bin&tokenizer=models/tok512.bin&mode=chat&temperature=0.8"
            "&topp=0.9&seed=11&steps=400&system=You%20are%20a%20storyteller."
            "&chatinput=Hi%20there%0ATell%20me%20about%20a%20cat%0AWhat%20next%3F&autostart=1")
    target = ROOT / out
    target.mkdir(parents=True, exist_ok=True)

    def shoot(browser, name, query, viewport, scheme="light", wait="done", token_view=False,
              full_page=False):
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]},
                                color_scheme=scheme)
        page.goto(f"{base}/?{query}")
        if token_view:
            page.wait_for_function("document.body.dataset.state === 'ready'", timeout=120_000)
            page.locator("#token-view").check()
            page.locator("#generate").click()
        page.wait_for_function(f"document.body.dataset.state === '{wait}'", timeout=120_000)
        if token_view:
            page.locator("#token-panel").scroll_into_view_if_needed()
        path = target / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        say(f"{path.relative_to(ROOT)}")
        page.close()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for device, viewport in {"desktop": (1280, 860), "phone": (390, 844)}.items():
                for scheme in ("light", "dark"):
                    shoot(browser, f"{device}-{scheme}", f"{story}&autostart=1", viewport, scheme,
                          full_page=device == "phone")
            shoot(browser, "chat", chat, (1280, 860), wait="waiting")
            shoot(browser, "token-view", story.replace("steps=200", "steps=40"), (1280, 860),
                  token_view=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join()
        shutil.rmtree(root, ignore_errors=True)


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
    args = ["-q", "-ra"] + (["-x"] if x else []) + (["-k", k] if k else [])
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
            "out": "folder for bench.json and bench.png, default bench-results/",
            "targets_only": "only the issue-13 target table (paired ratios), with --runs rounds",
            "train": "the training table instead: llama2c train vs plain PyTorch loops"})
def bench(c, runs=3, quick=False, out="bench-results", targets_only=False, train=False):
    """The speed and memory tables: native CLI, scalar baseline and the page, side by side."""
    sys.path.insert(0, str(ROOT / "tests"))
    from bench.runbench import main as bench_main

    if bench_main(runs=int(runs), quick=quick, out=out, targets_only=targets_only,
                  train=train) != 0:
        raise SystemExit(1)


# -- train your own (llama2c data / vocab / pretokenize / train / export) -----------------------


def llama2c_cli(c, *args) -> None:
    """Runs one `llama2c` training command in this interpreter's environment."""
    import shlex
    c.run(" ".join([sys.executable, "-m", "llama2c", *map(shlex.quote, map(str, args))]), pty=False)


@task(name="data", help={"source": "tinystories, or text (then --files 'a.txt b.jsonl')",
                         "from_": "a local folder holding TinyStories_all_data.tar.gz"})
def data_task(c, source, files="", data="data", from_=None, force=False):
    """A corpus in data/corpus: `invoke data tinystories` or `invoke data text --files FILE`."""
    args = ["data", source, *files.split(), "--data", data]
    llama2c_cli(c, *args, *(["--from", from_] if from_ else []), *(["--force"] if force else []))


@task(help={"size": "vocabulary size; 32000 takes the Llama 2 tokenizer"})
def vocab(c, size, data="data", force=False):
    """A sentencepiece BPE vocabulary: data/tokN.model and data/tokN.bin."""
    llama2c_cli(c, "vocab", "--size", size, "--data", data, *(["--force"] if force else []))


@task(name="pretokenize")
def pretokenize_task(c, vocab_size, data="data", force=False):
    """uint16 token shards in data/tokN/ (BOS before each document; shard 0 is validation)."""
    llama2c_cli(c, "pretokenize", "--vocab-size", vocab_size, "--data", data,
                *(["--force"] if force else []))


@task(name="train", help={"preset": "260K, 15M, 42M, 110M or tiny",
                          "args": "more knobs, e.g. '--max_iters 2000 --batch_size 64'"})
def train_task(c, preset="tiny", data="data", out="out", args=""):
    """Train (or resume) with PyTorch; checkpoints, history.csv and loss.png in OUT."""
    llama2c_cli(c, "train", "--preset", preset, "--data", data, "--out", out, *args.split())


@task(name="export", help={"version": "0: fp32 (default), 2: int8",
                           "site": "write into models/ for `invoke build serve`"})
def export_task(c, checkpoint, out, version=0, tokenizer=None, site=False, force=False):
    """A checkpoint (ours or llama2.c's ckpt.pt) as a model file run.c reads, tokenizer beside it."""
    llama2c_cli(c, "export", checkpoint, out, "--version", version,
                *(["--tokenizer", tokenizer] if tokenizer else []), *(["--site"] if site else []),
                *(["--force"] if force else []))
