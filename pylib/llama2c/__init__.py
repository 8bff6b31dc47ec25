"""llama2c: llama2.c's tokenizer, sampler and generation loop in Python and numpy.

The transformer itself runs in the C engine (wasm/run.c): natively through `llama2c.native`, in the
browser through `llama2c.browser`. Everything here is byte-for-byte compatible with llama2.c's run.c.

The names below are imported on first use, so that tools which need only a numpy-free module
(`llama2c.toolchain`, `llama2c.fetch`) can import it before numpy is installed. The generation
loop is `llama2c.generate.generate`: `llama2c.generate` is its module.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "SHAPES": "checkpoint", "Config": "checkpoint", "read_config": "checkpoint",
    "write_checkpoint": "checkpoint",
    "CheckpointError": "errors", "EngineError": "errors", "FetchError": "errors",
    "Llama2cError": "errors", "TokenizerError": "errors",
    "InputRequest": "generate", "Piece": "generate", "Stats": "generate",
    "answer_inputs": "generate", "chat": "generate",
    "Sampler": "sampler",
    "BOS": "tokenizer", "EOS": "tokenizer", "TextStream": "tokenizer", "Tokenizer": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llama2c' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
