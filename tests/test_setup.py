"""`invoke setup` as a newcomer meets it: a new virtual environment and a fresh copy of the checkout.

The environment is made once per test session (about 30 s with pip's download cache) and shared by
the tests below. The copy holds what git tracks plus untracked files it does not ignore, so it has
nothing a previous build left behind (no site/, .cache/, models/ or compiled engine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED

SETUP_TIMEOUT = 900  # seconds; a first setup here takes about 30 s, apt and PyPI permitting


def checkout_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


class Newcomer:
    """A fresh copy of the checkout and a new virtual environment beside it."""

    def __init__(self, home: Path):
        self.checkout = home / "llama2c-web"
        self.venv = home / "venv"
        for name in checkout_files():
            target = self.checkout / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(self.venv),
                   LLAMA2C_MIRROR=str(SHARED))
        env.update(extra)
        return env

    def run(self, command: str, **extra_env: str) -> subprocess.CompletedProcess:
        """A shell command in the checkout with the environment activated; output as text."""
        return subprocess.run(command, shell=True, cwd=self.checkout, env=self.env(**extra_env),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SETUP_TIMEOUT)


@pytest.fixture(scope="session")
def newcomer(tmp_path_factory) -> tuple[Newcomer, subprocess.CompletedProcess]:
    """The newcomer after the README's set-up command (without build and serve), run once."""
    person = Newcomer(tmp_path_factory.mktemp("newcomer"))
    first = person.run("python3 -m pip install -q invoke==3.0.3 && invoke setup")
    return person, first


def test_setup_finishes_in_one_run(newcomer):
    person, first = newcomer
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert "Traceback" not in output
    # The package it installed is this checkout's, importable in a new process, engine included.
    probe = person.run("python -c 'import llama2c, llama2c.native as n; "
                       "print(llama2c.__file__); print(n.__name__)'")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[0].startswith(str(person.checkout / "pylib/llama2c")), probe.stdout
    assert (person.checkout / ".cache/pyodide-0.27.7/pyodide-lock.json").is_file()
    wheels = list((person.checkout / ".cache/pyodide-wheels").glob("numpy-*.whl"))
    assert len(wheels) == 1, wheels


def test_setup_again_skips_every_step(newcomer):
    person, first = newcomer
    assert first.returncode == 0, first.stdout + first.stderr
    again = person.run("invoke setup")
    assert again.returncode == 0, again.stdout + again.stderr
    steps = [line for line in again.stdout.splitlines() if line.startswith("» ")]
    assert steps, again.stdout
    assert all(line.startswith(("» skipped: ", "» warning: ")) for line in steps), again.stdout
    skipped = "\n".join(steps)
    for what in ("llama2c[", "Debian packages", "Pyodide 0.27.7 runtime"):
        assert what in skipped, again.stdout


def test_setup_without_network_or_mirror_says_what_to_do(newcomer, tmp_path):
    """With the numpy wheel gone, no mirror and no route out (a proxy on a closed local port),
    setup stops with one line that names the missing file and the mirror variable."""
    person, first = newcomer
    assert first.returncode == 0, first.stdout + first.stderr
    shutil.rmtree(person.checkout / ".cache/pyodide-wheels")
    closed = "http://127.0.0.1:9"  # the discard port; nothing listens there
    offline = person.run("invoke setup", LLAMA2C_MIRROR=str(tmp_path), https_proxy=closed,
                         http_proxy=closed, HTTPS_PROXY=closed, HTTP_PROXY=closed)
    assert offline.returncode == 1, offline.stdout + offline.stderr
    assert "Traceback" not in offline.stderr
    errors = [line for line in offline.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, offline.stderr
    assert "numpy-2.0.2" in errors[0] and "LLAMA2C_MIRROR" in errors[0], errors[0]
    # It recovers when the mirror is back: nothing was left half-written.
    assert person.run("invoke setup").returncode == 0


def test_compiled_wheels_are_the_same_bytes_every_build(tmp_path):
    """`invoke build` byte-compiles the wheels it ships (tasks.py_compile); two builds of the same
    wheel, seconds apart, must give the same bytes: their sha256 names the page's offline copy
    and Python snapshot, which a rebuilt but unchanged site must not throw away."""
    import hashlib
    import time

    import invoke

    sys.path.insert(0, str(ROOT))
    import tasks

    source = ROOT / ".cache" / "pyodide-wheels" / tasks.PYODIDE_WHEELS["numpy"][0]
    assert source.exists(), "run `invoke setup` first"
    assert tasks.python312(), "no Python 3.12: the wheels ship uncompiled (invoke setup warned)"
    digests = []
    for build in ("a", "b"):
        (tmp_path / build).mkdir()
        shutil.copy(source, tmp_path / build / source.name)
        context = invoke.Context(invoke.Config(overrides={"run": {"in_stream": False}}))
        compiled = tasks.py_compile(context, tmp_path / build / source.name)
        assert compiled.read_bytes() != source.read_bytes()  # it did compile
        digests.append(hashlib.sha256(compiled.read_bytes()).hexdigest())
        time.sleep(1.1)  # zip dates have a resolution of 2 s, pyc timestamps of 1 s
    assert digests[0] == digests[1]
