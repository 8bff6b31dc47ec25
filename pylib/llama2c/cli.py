"""The command line: `llama2c run` behaves like llama2.c's ./run; `llama2c inspect` checks a model.

    llama2c run MODEL [-t T] [-p P] [-s SEED] [-n STEPS] [-i PROMPT] [-z TOKENIZER] [-m MODE] [-y SYS]

Flags, defaults and clamping follow run.c's main(); numbers are parsed with C's atof/atoi rules.
Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import Llama2cError
from .generate import Stats, answer_inputs, chat, generate
from .sampler import Sampler
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
"""


class UsageError(Exception):
    pass


# -- C number parsing (run.c uses atof and atoi) ------------------------------------------------

_C_SPACE = " \t\n\v\f\r"
_FLOAT = re.compile(r"[+-]?(?:inf(?:inity)?|nan|0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?\d+)?"
                    r"|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)", re.IGNORECASE)
_INT = re.compile(r"[+-]?\d+")


def c_atof(text: str) -> float:
    """C's atof: the longest numeric prefix after whitespace, 0.0 if there is none."""
    match = _FLOAT.match(text.lstrip(_C_SPACE))
    if not match:
        return 0.0
    number = match.group(0)
    if "x" in number.lower():
        sign = -1.0 if number.startswith("-") else 1.0
        body = number.lstrip("+-")
        if "p" not in body.lower():
            body += "p0"
        return sign * float.fromhex(body)
    # an exponent without digits ("1e") is not part of the number
    return float(re.sub(r"[eE][+-]?$", "", number))


def c_atoi(text: str) -> int:
    """glibc's atoi: (int) strtol(text, NULL, 10), which saturates at 64 bits, then wraps to 32."""
    match = _INT.match(text.lstrip(_C_SPACE))
    if not match:
        return 0
    value = max(-(1 << 63), min((1 << 63) - 1, int(match.group(0))))
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


# -- run ----------------------------------------------------------------------------------------


@dataclass
class RunArgs:
    checkpoint: str
    tokenizer: str = "tokenizer.bin"
    temperature: float = 1.0
    topp: float = 0.9
    seed: int = 0
    steps: int = 256
    prompt: str | None = None
    mode: str = "generate"
    system_prompt: str | None = None


def parse_run_args(argv: list[str]) -> RunArgs:
    """run.c's argument loop: `-x value` pairs after the checkpoint, then its clamping."""
    if not argv or argv[0] in ("-h", "--help"):
        raise UsageError("missing the checkpoint path" if not argv else "help")
    args = RunArgs(checkpoint=argv[0])
    rest = argv[1:]
    for i in range(0, len(rest), 2):
        flag = rest[i]
        if flag in ("-h", "--help"):
            raise UsageError("help")
        if len(flag) != 2 or flag[0] != "-" or flag[1] not in "tpsnizmy":
            raise UsageError(f"unknown option {flag!r}")
        if i + 1 >= len(rest):
            raise UsageError(f"option {flag} needs a value")
        value = rest[i + 1]
        if flag == "-t":
            args.temperature = c_atof(value)
        elif flag == "-p":
            args.topp = c_atof(value)
        elif flag == "-s":
            args.seed = c_atoi(value) & ((1 << 64) - 1)  # int to unsigned long long
        elif flag == "-n":
            args.steps = c_atoi(value)
        elif flag == "-i":
            args.prompt = value
        elif flag == "-z":
            args.tokenizer = value
        elif flag == "-m":
            args.mode = value
        elif flag == "-y":
            args.system_prompt = value
    if args.mode not in ("generate", "chat"):
        raise UsageError(f"unknown mode: {args.mode} (use generate or chat)")
    # run.c's parameter validation and overrides
    if args.seed == 0:
        args.seed = int(time.time()) & 0xFFFFFFFF
    if args.temperature < 0.0:
        args.temperature = 0.0
    if args.topp < 0.0 or args.topp > 1.0 or math.isnan(args.topp):
        args.topp = 0.9
    if args.steps < 0:
        args.steps = 0
    return args


def _stdin_line(guide: str) -> str | None:
    """run.c's read_stdin: fgets of up to 511 bytes, newline stripped; None at end of input."""
    stdin = sys.stdin.buffer if sys.stdin else None
    line = stdin.readline(511) if stdin else b""
    if not line:
        return None
    return line.removesuffix(b"\n").decode("utf-8", "surrogateescape")


def run(args: RunArgs, out: BinaryIO) -> Stats:
    """Loads the model and tokenizer and streams the story to `out`, as run.c's main() does."""
    from .native import NativeModel  # the ctypes engine; imported here so the package stays light

    with NativeModel.open(args.checkpoint) as model:
        tokenizer = Tokenizer.load(args.tokenizer, model.config.vocab_size)
        sampler = Sampler(model.config.vocab_size, args.temperature, args.topp, args.seed)
        stats = Stats()
        if args.mode == "generate":
            pieces = generate(model, tokenizer, sampler, args.prompt, args.steps, stats)
        else:
            turns = chat(model, tokenizer, sampler, args.prompt, args.system_prompt, args.steps,
                         stats)
            pieces = answer_inputs(turns, lambda guide: (out.flush(), _stdin_line(guide))[1])
        for piece in pieces:
            out.write(piece.data)
            out.flush()
        out.write(b"\n")
        out.flush()
        return stats


# -- inspect ------------------------------------------------------------------------------------


def inspect(path: str, tokenizer_path: str | None) -> int:
    """Prints a checkpoint's header, parameter count, size and validation result."""
    from .checkpoint import HEADER, read_config

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    print(f"file:        {path}")
    print(f"size:        {size:,} bytes")
    if len(head) == HEADER.size:
        names = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
        for name, value in zip(names, HEADER.unpack(head)):
            print(f"{name + ':':<13}{value}")
    config = read_config(head, check_size=False)
    print(f"classifier:  {'shared with the token embedding' if config.shared_classifier else 'unshared'}")
    print(f"parameters:  {config.parameter_count():,}")
    print(f"expected:    {config.file_size():,} bytes")
    if size != config.file_size():
        what = "truncated" if size < config.file_size() else "extra bytes after the weights"
        print(f"valid:       no ({what})")
        return 1
    print("valid:       yes")
    if tokenizer_path:
        Tokenizer.load(tokenizer_path, config.vocab_size)
        print(f"tokenizer:   {tokenizer_path} fits ({config.vocab_size} tokens)")
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
            stats = run(args, sys.stdout.buffer)
            if args.mode == "generate" and stats.tokens_per_second is not None:
                print(f"achieved tok/s: {stats.tokens_per_second:f}", file=sys.stderr)
            return 0
        if command == "inspect":
            return inspect(*_inspect_args(rest))
        if command in ("-h", "--help", "help"):
            sys.stdout.write(USAGE)
            return 0
        raise UsageError(f"unknown command {command!r}" if command else "missing a command")
    except UsageError as e:
        if str(e) == "help":
            sys.stdout.write(USAGE)
            return 0
        print(f"llama2c: error: {e} (see `llama2c --help`)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except (Llama2cError, OSError) as e:
        print(f"llama2c: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
