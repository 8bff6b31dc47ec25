"""How the engine is compiled, and how the tests start their browser: the one home of these facts.

tasks.py, setup.py, the tests and the benchmark import from here. The browser never needs it, so
the wheel built for Pyodide leaves it out (setup.py, NATIVE_ONLY).
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path

# -- the engine ---------------------------------------------------------------------------------

ENGINE_SOURCE = Path("wasm/run.c")  # relative to the checkout
KERNEL_HEADER = Path("wasm/q8.h")  # the int8 kernel, included by run.c and by RELAXED_SOURCE

# Every build of the engine computes run.c's arithmetic: C11 at -O3, and no contraction of a * b + c
# into a fused multiply-add, which would change the last bits of every dot product.
ENGINE_CFLAGS = ["-std=c11", "-O3", "-ffp-contract=off"]
WARNINGS = ["-Wall", "-Wextra"]

# The native library that llama2c.native loads with ctypes. pip builds it through setup.py and
# `invoke native` with gcc directly, both with these flags.
LIB_NAME = "_engine" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
NATIVE_CFLAGS = [*ENGINE_CFLAGS, *WARNINGS, "-pthread", "-fvisibility=hidden", "-fPIC"]
NATIVE_LDFLAGS = ["-shared", "-pthread", "-lm"]
# run.c's plain loops: the benchmark's baseline (llama2.c's `make run`) and a sanitizer target.
SCALAR_CFLAGS = ["-DL2C_SCALAR"]


def exported_functions(source: str) -> list[str]:
    """The engine's API: every function that wasm/run.c marks with L2C_API, in source order."""
    names = re.findall(r"^L2C_API\b[^(;]*?\b(l2c_\w+)\s*\(", source, re.M)
    return list(dict.fromkeys(names))


def emcc_flags(source: str) -> list[str]:
    """Emscripten's flags for the single-thread browser engine, given run.c's text."""
    exports = [f"_{name}" for name in exported_functions(source)] + ["_malloc", "_free"]
    return [
        *ENGINE_CFLAGS, "-msimd128",
        "-s", "MODULARIZE=1", "-s", "EXPORT_ES6=1", "-s", "ENVIRONMENT=web,worker",
        "-s", "ALLOW_MEMORY_GROWTH=1", "-s", "MAXIMUM_MEMORY=4GB",
        "-s", "EXPORTED_FUNCTIONS=" + ",".join(exports),
        "-s", "EXPORTED_RUNTIME_METHODS=UTF8ToString",
        "--js-library", str(RELAXED_GLUE),  # how the engine calls the relaxed-SIMD kernel
    ]


# The threaded browser engine adds these: workers for all but the calling thread, made when the
# module starts.
# A thread beyond the pool would need a new Worker, which starts only once the calling thread
# returns to its event loop; the engine waits for its threads without returning, so `threads=16`
# on 2 cores hung the page in 6 of 17 runs. STRICT=2 makes such a pthread_create fail instead, and
# the engine runs with the threads it got (wasm/run.c set_pool_threads).
EMCC_THREAD_FLAGS = [
    "-pthread", "-Wno-pthreads-mem-growth",
    # Module.cores: the page's navigator.hardwareConcurrency, which engine.js passes in
    "-s", "PTHREAD_POOL_SIZE='Math.min(Math.max((Module.cores||navigator.hardwareConcurrency||2)"
          "-1,1),15)'",
    "-s", "PTHREAD_POOL_SIZE_STRICT=2",
]
# The two browser engines: threads need a cross-origin isolated page; plain hosts get the first.
BROWSER_ENGINES = {"llama2c-engine": [], "llama2c-engine-mt": EMCC_THREAD_FLAGS}

# The int8 kernel with relaxed SIMD (wasm/relaxed.c includes KERNEL_HEADER), which Emscripten 3.1.6
# cannot emit: clang 22 compiles it and wasm-ld 22 links it by hand, because the clang driver would
# run Debian's wasm-opt (binaryen 108) after linking, which rewrites relaxed opcodes into invalid
# code. A module with no libc, stack or data that imports the engine's memory (shared, with
# atomics, for the threaded engine); RELAXED_GLUE is the emcc JS library that calls it.
RELAXED_SOURCE = Path("wasm/relaxed.c")
RELAXED_GLUE = Path("wasm/relaxed_glue.js")
CLANG, WASM_LD = "clang-22", "wasm-ld-22"
RELAXED_CFLAGS = ["--target=wasm32", *ENGINE_CFLAGS, "-msimd128", "-mrelaxed-simd",
                  "-ffreestanding", "-nostdlib", *WARNINGS]
RELAXED_KERNELS = {  # browser engine -> (extra clang flags, extra wasm-ld flags)
    "llama2c-engine": ([], []),
    "llama2c-engine-mt": (["-matomics", "-mbulk-memory"],
                          ["--shared-memory", "--max-memory=4294967296"]),
}

# RoPE's cos and sin as glibc computes them (run.c's), written by the native engine for the
# browser's, whose libm (musl) differs in the last bit for a few percent of angles: head size ->
# positions, for the published models (stories260K: 8 and 512; stories15M: 48 and 256; stories42M
# and stories110M: 64 and 1024), 320 KB in all. Other head sizes, and positions past these, are
# computed by the browser's engine, and the page says so.
ROPE_TABLES = {8: 512, 48: 256, 64: 1024}

# -- checking builds: sanitizers, the fuzz corpus, `invoke fuzz` ---------------------------------

# Drivers that include run.c: its arithmetic, threads and warnings; each build picks its own -O.
C_COMMON = ["-std=c11", "-ffp-contract=off", "-pthread", *WARNINGS]

# AddressSanitizer and UndefinedBehaviorSanitizer, any report fatal. float-cast-overflow is not in
# gcc's or clang's "undefined" group: it catches (int8_t)roundf(NaN) and other out-of-range casts.
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
            "-g", "-O1"]

# Run-time options for sanitized programs: a failed allocation returns NULL (the engine must report
# it) instead of aborting; distinct exit codes tell a sanitizer report from the program's own.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:allocator_may_return_null=1:exitcode=86",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
}


def sanitizer_env() -> dict[str, str]:
    return {**os.environ, **SANITIZER_ENV}


# -- the browser the tests, screenshots and benchmark drive ---------------------------------------

# Debian's Chromium (Playwright never downloads a browser here). Without the background-networking
# flags it keeps trying hosts that a closed network refuses.
CHROMIUM = os.environ.get("LLAMA2C_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Debian's Firefox ESR: Playwright's Firefox is a download these machines cannot reach, so the tests
# open a harness page in it (tests/e2e/test_firefox.py).
FIREFOX = os.environ.get("LLAMA2C_FIREFOX", "/usr/bin/firefox-esr")
