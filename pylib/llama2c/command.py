"""The `llama2c` command's entry point (and `python -m llama2c`'s).

It imports the command line (and numpy with it) only inside main(), so that Ctrl-C during start-up
ends in one line, as it does later, not in a traceback from the middle of an import.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        if sys.stderr is not None:
            print("llama2c: error: interrupted", file=sys.stderr)
        return 130
