"""How the C engine is compiled: one home for the flags that tasks.py (the native library, the
WebAssembly engines, `invoke fuzz`) and the tests (sanitizers, fuzz corpus, verdicts) share.

The engine's arithmetic must match run.c's, so every build keeps C11 and no fused multiply-add.
"""

from __future__ import annotations

import os

# Every build of wasm/run.c, gcc's and emcc's: C11, and run.c's arithmetic (no FMA contraction).
C_STD = ["-std=c11", "-ffp-contract=off"]

# Native builds of wasm/run.c and its test drivers: also threads and warnings.
C_COMMON = [*C_STD, "-pthread", "-Wall", "-Wextra"]

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
