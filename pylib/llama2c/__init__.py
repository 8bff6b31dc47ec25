"""llama2c: llama2.c's tokenizer, sampler and generation loop in Python and numpy.

The transformer itself runs in the C engine (wasm/run.c): natively through `llama2c.native`, in the
browser through `llama2c.browser`. Everything here is byte-for-byte compatible with llama2.c's run.c.
"""

from .checkpoint import SHAPES, Config, read_config, write_checkpoint
from .errors import CheckpointError, EngineError, Llama2cError, TokenizerError
from .generate import InputRequest, Piece, Stats, answer_inputs, chat, generate
from .sampler import Sampler
from .tokenizer import BOS, EOS, TextStream, Tokenizer

__version__ = "0.1.0"

__all__ = [
    "BOS", "EOS", "SHAPES", "CheckpointError", "Config", "EngineError", "InputRequest",
    "Llama2cError", "Piece", "Sampler", "Stats", "TextStream", "Tokenizer", "TokenizerError",
    "answer_inputs", "chat", "generate", "read_config", "write_checkpoint",
]
