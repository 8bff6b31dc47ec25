"""The exceptions the library raises. Each carries a one-line, human-readable message."""


class Llama2cError(Exception):
    """Base class for every error this package raises on bad input."""


class CheckpointError(Llama2cError):
    """A model file that is truncated, has extra bytes, or has an impossible header."""


class TokenizerError(Llama2cError):
    """A tokenizer file that is corrupt or does not fit the model."""


class EngineError(Llama2cError):
    """The engine refused a call: a token or position out of range, or no memory."""


class FetchError(Llama2cError):
    """A model or package file could not be downloaded, copied from a mirror, or verified."""
