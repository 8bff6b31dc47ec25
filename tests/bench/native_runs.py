"""Native runs: the installed `llama2c run` command line and the same loop in-process, each timed,
with the peak memory of the process that ran it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import process_tree

from .common import NATIVE_TIMEOUT, PROMPT, SEED, STEPS, TOPP, BenchError, checkout_env
from .models import Model


def find_cli() -> list[str]:
    """The installed `llama2c` command, beside this interpreter first (no pyenv shim in between)."""
    beside = Path(sys.executable).parent / "llama2c"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("llama2c")
    if found:
        return [found]
    return [sys.executable, "-m", "llama2c"]


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


# In-process: the same loop the command line runs (story(), whose sampler hands its vector work to
# the engine), timed from the inside (time outside forward(), time to the first piece after the
# model is loaded).
INPROCESS = r"""
import json, sys, time
from llama2c.generate import Stats, story
from llama2c.native import NativeModel
from llama2c.params import Settings
from llama2c.tokenizer import Tokenizer
path, tokenizer_path, prompt, steps, temperature, topp, seed = sys.argv[1:8]
t0 = time.perf_counter()
model = NativeModel.open(path)
tokenizer = Tokenizer.load(tokenizer_path, model.config.vocab_size)
t1 = time.perf_counter()
settings = Settings(temperature=float(temperature), topp=float(topp), seed=int(seed),
                    steps=int(steps), prompt=prompt).clamped()
stats = Stats()
first = None
tokens = 0
start = time.perf_counter()
for piece in story(model, tokenizer, settings, stats=stats):
    if first is None and piece.data:
        first = time.perf_counter() - start
    tokens += piece.token >= 0
loop = time.perf_counter() - start
print(json.dumps({"load_ms": (t1 - t0) * 1e3, "first_piece_ms": first * 1e3, "loop_ms": loop * 1e3,
                  "forward_ms": stats.forward_seconds * 1e3, "forward_calls": stats.forward_calls,
                  "sample_ms": stats.sample_seconds * 1e3,
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
