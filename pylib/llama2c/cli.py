"""The command line: `llama2c run` behaves like llama2.c's ./run; `llama2c inspect` checks a model.

    llama2c run MODEL [-t T] [-p P] [-s SEED] [-n STEPS] [-i PROMPT] [-z TOKENIZER] [-m MODE] [-y SYS]

Flags, defaults and clamping follow run.c's main(); numbers are parsed with C's atof/atoi rules.
Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import BinaryIO

from .errors import CheckpointError, Llama2cError
from .generate import Stats, read_line, story
from .params import Settings
from .tokenizer import Tokenizer

USAGE = """\
Usage:   llama2c run <checkpoint> [options]
Example: llama2c run model.bin -n 256 -i "Once upon a time"
Options:
  -t <float>  temperature in [0,inf], default 1.0
  -p <float>  p value in top-p (nucleus) sampling in [0,1] default 0.9
  -s <int>    random seed, default time(NULL)
  -n <int>    number of steps to run for, default 256. 0 = max_seq_len
  -i <string> input prompt
  -z <string> optional path to custom tokenizer
  -m <string> mode: generate|chat, default: generate
  -y <string> (optional) system prompt in chat mode

       llama2c inspect <checkpoint> [-z tokenizer]

Train your own (needs `pip install -e '.[train]'`; see llama2c/train/commands.py):
       llama2c data tinystories | data text FILE...
       llama2c vocab --size N
       llama2c pretokenize --vocab-size N
       llama2c train [--preset 260K|15M|42M|110M|tiny] [--KNOB VALUE ...]
       llama2c export CKPT OUT.bin [--version 0|2] [--site] [--force]
"""

TRAIN_COMMANDS = ("data", "vocab", "pretokenize", "train", "export")


class UsageError(Exception):
    """Bad arguments: one line, then a pointer to --help."""


class HelpRequested(Exception):
    """-h or --help among the arguments: print the usage and succeed."""


@dataclass
class RunArgs:
    checkpoint: str
    settings: Settings
    tokenizer: str = "tokenizer.bin"


_FLAGS = {"-t": "temperature", "-p": "topp", "-s": "seed", "-n": "steps", "-i": "prompt",
          "-m": "mode", "-y": "system_prompt", "-z": "tokenizer"}


def parse_run_args(argv: list[str]) -> RunArgs:
    """run.c's argument loop: `-x value` pairs after the checkpoint, then its clamping."""
    if not argv or argv[0] in ("-h", "--help"):
        if argv:
            raise HelpRequested
        raise UsageError("missing the checkpoint path")
    values: dict[str, str] = {}
    rest = argv[1:]
    for i in range(0, len(rest), 2):
        flag = rest[i]
        if flag in ("-h", "--help"):
            raise HelpRequested
        if flag not in _FLAGS:
            raise UsageError(f"unknown option {flag!r}")
        if i + 1 >= len(rest):
            raise UsageError(f"option {flag} needs a value")
        values[_FLAGS[flag]] = rest[i + 1]
    tokenizer = values.pop("tokenizer", "tokenizer.bin")
    try:
        settings = Settings.parse(**values)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return RunArgs(argv[0], settings, tokenizer)


def _stdin_line(guide: str) -> str | None:
    """The next line of standard input as run.c reads it (None at end of input, or without one)."""
    return read_line(sys.stdin.buffer) if sys.stdin else None


def run(args: RunArgs, out: BinaryIO) -> Stats:
    """Loads the model and tokenizer and streams the story to `out`, as run.c's main() does."""
    from .native import NativeModel  # the ctypes engine; imported here so the package stays light

    with NativeModel.open(args.checkpoint) as model:
        tokenizer = Tokenizer.load(args.tokenizer, model.config.vocab_size)
        stats = Stats()

        def read_input(guide: str) -> str | None:
            out.flush()  # the guide reaches the terminal before the read, as after run.c's printf
            return _stdin_line(guide)

        for piece in story(model, tokenizer, args.settings, read_input, stats):
            out.write(piece.data)
            out.flush()
        out.write(b"\n")
        out.flush()
        return stats


# -- inspect ------------------------------------------------------------------------------------


def inspect(path: str, tokenizer_path: str | None) -> int:
    """Prints a checkpoint's header, format, parameter count, size and the engine's verdict."""
    from .native import NativeModel

    try:
        size = os.path.getsize(path)
    except OSError as e:  # the words `run` uses for the same file
        raise CheckpointError(f"cannot open model {path}: {e.strerror or e}") from None
    print(f"file:        {path}")
    print(f"size:        {size:,} bytes")
    try:
        model = NativeModel.open(path, threads=1)  # the engine validates every size
    except Llama2cError as e:
        print(f"valid:       no ({e})")
        return 1
    with model:
        c = model.config
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                     "seq_len"):
            print(f"{name + ':':<13}{getattr(c, name)}")
        fmt = model.format if model.format == "fp32" else f"int8 (Q8_0, groups of {model.group_size})"
        print(f"format:      {fmt}")
        print(f"classifier:  {'shared with the token embedding' if c.shared_classifier else 'unshared'}")
        print(f"parameters:  {c.parameter_count():,}")
        print("valid:       yes")
        if tokenizer_path:
            Tokenizer.load(tokenizer_path, c.vocab_size)
            print(f"tokenizer:   {tokenizer_path} fits ({c.vocab_size} tokens)")
    return 0


def _inspect_args(argv: list[str]) -> tuple[str, str | None]:
    if not argv or argv[0].startswith("-"):
        raise UsageError("inspect needs a checkpoint path")
    if len(argv) == 1:
        return argv[0], None
    if len(argv) == 3 and argv[1] == "-z":
        return argv[0], argv[2]
    raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (only -z TOKENIZER)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if command == "run":
            args = parse_run_args(rest)
            if sys.stdout is None:
                raise UsageError("standard output is closed")
            stats = run(args, sys.stdout.buffer)
            if args.settings.mode == "generate" and stats.tokens_per_second is not None:
                print(f"achieved tok/s: {stats.tokens_per_second:f}", file=sys.stderr)
            return 0
        if command == "inspect":
            return inspect(*_inspect_args(rest))
        if command in TRAIN_COMMANDS:  # the training half; imports torch only when it needs it
            from .train.commands import main as train_main
            return train_main(command, rest)
        if command in ("-h", "--help", "help"):
            return _usage()
        raise UsageError(f"unknown command {command!r}" if command else "missing a command")
    except HelpRequested:
        return _usage()
    except UsageError as e:
        _error(f"{e} (see `llama2c --help`)")
        return 1
    except BrokenPipeError:
        return 1
    except (Llama2cError, OSError) as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _usage() -> int:
    """Prints the usage on stdout; with stdout closed (`llama2c --help >&-`), says so instead."""
    if sys.stdout is None:
        _error("standard output is closed: cannot print the usage")
        return 1
    sys.stdout.write(USAGE)
    return 0


def _error(message: str) -> None:
    if sys.stderr is not None:
        print(f"llama2c: error: {message}", file=sys.stderr)
