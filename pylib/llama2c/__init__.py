"""llama2c: llama2.c's tokenizer, sampler and generation loop in Python and numpy.

The transformer itself runs in the C engine (wasm/run.c): natively through `llama2c.native`, in the
browser through `llama2c.browser`. Everything here is byte-for-byte compatible with llama2.c's run.c.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it. They are imported on first use (PEP 562), so that importing a
# submodule, such as the command line's entry point (llama2c.command), does not import numpy first.
_EXPORTS = {
    "SHAPES": "checkpoint", "Config": "checkpoint", "read_config": "checkpoint",
    "write_checkpoint": "checkpoint",
    "CheckpointError": "errors", "EngineError": "errors", "Llama2cError": "errors",
    "TokenizerError": "errors",
    "InputRequest": "generate", "Piece": "generate", "Stats": "generate",
    "answer_inputs": "generate", "chat": "generate", "generate": "generate",
    "Sampler": "sampler",
    "BOS": "tokenizer", "EOS": "tokenizer", "TextStream": "tokenizer", "Tokenizer": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llama2c' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    # Bind every name the module exports: importing llama2c.generate set the package's `generate`
    # to the submodule, and the name means the function, as it did before imports were lazy.
    for exported, home in _EXPORTS.items():
        if home == _EXPORTS[name]:
            globals()[exported] = getattr(module, exported)
    return globals()[name]
