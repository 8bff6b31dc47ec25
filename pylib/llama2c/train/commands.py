"""The training half of the command line; llama2c.cli hands these commands over unchanged.

    llama2c data tinystories [--data DIR] [--from DIR] [--force]
    llama2c data text FILE... [--data DIR] [--force]
    llama2c vocab --size N [--data DIR] [--force]
    llama2c pretokenize --vocab-size N [--data DIR] [--force]
    llama2c train [--preset 260K|15M|42M|110M|tiny] [--data DIR] [--out DIR] [--KNOB VALUE ...]
    llama2c export CKPT OUT.bin [--version 0|2] [--tokenizer TOK.bin] [--site] [--force]

Every error is a TrainError (or another Llama2cError) that llama2c.cli prints as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .util import TrainError

DATA_DIR = "data"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a one-line TrainError instead of usage text and exit 2."""

    def error(self, message: str):
        raise TrainError(f"{self.prog}: {message}")


def needs_torch() -> None:
    try:
        import sentencepiece  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise TrainError(f"training needs the train extra ({e.name} is missing): "
                         "pip install -e '.[train]'") from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def main(command: str, argv: list[str]) -> int:
    started = time.monotonic()
    if command == "data":
        parser = Parser(prog="llama2c data")
        parser.add_argument("source", choices=["tinystories", "text"])
        parser.add_argument("files", nargs="*")
        parser.add_argument("--data", default=DATA_DIR)
        parser.add_argument("--from", dest="mirror")
        parser.add_argument("--force", action="store_true")
        a = parser.parse_args(argv)
        from . import data
        if a.source == "tinystories":
            if a.files:
                raise TrainError("data tinystories takes no FILE arguments")
            shards, docs = data.tinystories(a.data, a.mirror, a.force)
        else:
            shards, docs = data.text_corpus(a.files, a.data, a.force)
        print(f"wrote {data.corpus_dir(a.data)}: {docs:,} documents in {shards} shards "
              f"(shard 0 is validation)")
    elif command == "vocab":
        parser = Parser(prog="llama2c vocab")
        parser.add_argument("--size", type=int, required=True)
        parser.add_argument("--data", default=DATA_DIR)
        parser.add_argument("--from", dest="mirror")
        parser.add_argument("--force", action="store_true")
        a = parser.parse_args(argv)
        needs_torch()
        from .vocab import train_vocab
        for path in train_vocab(a.data, a.size, a.force, a.mirror):
            print(f"wrote {path}")
    elif command == "pretokenize":
        parser = Parser(prog="llama2c pretokenize")
        parser.add_argument("--vocab-size", type=int, required=True)
        parser.add_argument("--data", default=DATA_DIR)
        parser.add_argument("--workers", type=int, default=0)
        parser.add_argument("--force", action="store_true")
        a = parser.parse_args(argv)
        needs_torch()
        from .pretokenize import pretokenize, shards_dir
        meta = pretokenize(a.data, a.vocab_size, a.force, a.workers or None)
        print(f"wrote {shards_dir(a.data, a.vocab_size)}: {meta['tokens']['val.bin']:,} validation "
              f"and {sum(meta['tokens'].values()) - meta['tokens']['val.bin']:,} training tokens")
    elif command == "train":
        needs_torch()
        from .loop import PRESETS, config_fields, make_config, train
        parser = Parser(prog="llama2c train")
        parser.add_argument("--preset", choices=list(PRESETS))
        parser.add_argument("--data", default=DATA_DIR)
        parser.add_argument("--out", default="out")
        parser.add_argument("--quiet", action="store_true")
        for name, kind, _ in config_fields():
            parser.add_argument(f"--{name}", type=_bool if kind is bool else kind, default=None)
        a = vars(parser.parse_args(argv))
        overrides = {name: a[name] for name, _, _ in config_fields() if a[name] is not None}
        config = make_config(a["preset"], overrides)
        last = train(config, a["data"], a["out"], progress=not a["quiet"])
        import os
        if os.environ.get("RANK", "0") == "0":
            print(f"iteration {last['iter']}: train loss {last['train_loss']:.4f}, "
                  f"val loss {last['val_loss']:.4f}; checkpoints in {a['out']}")
    elif command == "export":
        parser = Parser(prog="llama2c export")
        parser.add_argument("checkpoint")
        parser.add_argument("out")
        parser.add_argument("--version", type=int, default=0, choices=[0, 2])
        parser.add_argument("--tokenizer")
        parser.add_argument("--group-size", type=int, default=64)
        parser.add_argument("--site", action="store_true")
        parser.add_argument("--force", action="store_true")
        a = parser.parse_args(argv)
        needs_torch()
        from .export import default_tokenizer, export
        tokenizer = a.tokenizer or default_tokenizer(Path(a.checkpoint))
        for path in export(a.checkpoint, a.out, version=a.version, tokenizer=tokenizer,
                           force=a.force, site=a.site, group_size=a.group_size):
            print(f"wrote {path}")
    else:
        raise TrainError(f"unknown command {command!r}")
    print(f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return 0
