"""The `llama2c` command's entry point (and `python -m llama2c`'s).

Ctrl-C during start-up ends in one line, as it does later. While the command line (and numpy with
it) is imported, SIGINT exits at once: an interrupt inside numpy's import would otherwise come out
as numpy's own multi-line ImportError, and an import half done has nothing to clean up. From then
on Ctrl-C is a KeyboardInterrupt, which cli.main turns into the same line.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = b"llama2c: error: interrupted\n"


def _interrupted_while_starting(signum, frame) -> None:
    os.write(2, INTERRUPTED)
    os._exit(130)


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from .cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return cli_main()
    except KeyboardInterrupt:
        if sys.stderr is not None:
            print("llama2c: error: interrupted", file=sys.stderr)
        return 130
