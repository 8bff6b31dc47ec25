"""llama2.c's legacy checkpoint format: the header, the tensor layout, a reader and a writer.

A legacy checkpoint is a 28-byte header of 7 little-endian int32 values

    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len

(a negative vocab_size means the classifier is unshared and stored last), followed by fp32 tensors
in the order of `tensor_shapes`. The C engine checks the same sizes; this module is the Python side
of that contract, used by the tests, the reference forward pass and `llama2c inspect`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError

HEADER = struct.Struct("<7i")

# The engine's upper bounds (wasm/run.c): far above any llama2.c model.
LIMITS = {
    "dim": 1 << 16,
    "hidden_dim": 1 << 18,
    "n_layers": 1 << 10,
    "n_heads": 1 << 16,
    "n_kv_heads": 1 << 16,
    "vocab_size": 1 << 20,
    "seq_len": 1 << 20,
}


@dataclass(frozen=True)
class Config:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.dim * self.n_kv_heads // self.n_heads

    def header(self) -> bytes:
        vocab = self.vocab_size if self.shared_classifier else -self.vocab_size
        return HEADER.pack(self.dim, self.hidden_dim, self.n_layers, self.n_heads,
                           self.n_kv_heads, vocab, self.seq_len)

    def validate(self) -> None:
        """Raises CheckpointError unless every header value is in bounds and consistent."""
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not 0 < value <= limit:
                raise CheckpointError(f"bad header: {name} = {value} (must be between 1 and {limit})")
        if self.dim % self.n_heads:
            raise CheckpointError(f"bad header: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(
                f"bad header: n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_size % 2:
            raise CheckpointError(f"bad header: head size {self.head_size} is odd (RoPE rotates pairs)")

    def tensor_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The fp32 tensors after the header, in file order, with their shapes."""
        L, d, h, kv, v = self.n_layers, self.dim, self.hidden_dim, self.kv_dim, self.vocab_size
        freq = self.seq_len * self.head_size // 2
        shapes = [
            ("token_embedding", (v, d)),
            ("rms_att", (L, d)),
            ("wq", (L, d, d)),
            ("wk", (L, kv, d)),
            ("wv", (L, kv, d)),
            ("wo", (L, d, d)),
            ("rms_ffn", (L, d)),
            ("w1", (L, h, d)),
            ("w2", (L, d, h)),
            ("w3", (L, h, d)),
            ("rms_final", (d,)),
            ("freq_cis_real", (freq,)),
            ("freq_cis_imag", (freq,)),
        ]
        if not self.shared_classifier:
            shapes.append(("wcls", (v, d)))
        return shapes

    def file_size(self) -> int:
        """The exact byte length of a legacy checkpoint with this config."""
        floats = sum(int(np.prod(shape)) for _, shape in self.tensor_shapes())
        return HEADER.size + 4 * floats

    def parameter_count(self) -> int:
        """Learned parameters, without the unused freq_cis tables."""
        return sum(int(np.prod(s)) for n, s in self.tensor_shapes() if not n.startswith("freq_cis"))


def read_config(data: bytes | memoryview, *, check_size: bool = True) -> Config:
    """Parses and validates the header of a legacy checkpoint held in `data`."""
    if len(data) < HEADER.size:
        raise CheckpointError(
            f"checkpoint is {len(data)} bytes, shorter than its {HEADER.size}-byte header")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = HEADER.unpack_from(data, 0)
    config = Config(dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len, vocab > 0)
    config.validate()
    if check_size and len(data) != config.file_size():
        expected = config.file_size()
        what = "truncated" if len(data) < expected else "extra bytes after the weights"
        raise CheckpointError(f"checkpoint size mismatch: the header implies {expected} bytes, "
                              f"the file has {len(data)} ({what})")
    return config


def read_weights(data: bytes | memoryview) -> tuple[Config, dict[str, np.ndarray]]:
    """Returns the config and read-only numpy views of every tensor (no copy)."""
    config = read_config(data)
    weights: dict[str, np.ndarray] = {}
    offset = HEADER.size
    for name, shape in config.tensor_shapes():
        count = int(np.prod(shape))
        weights[name] = np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(shape)
        offset += 4 * count
    if config.shared_classifier:
        weights["wcls"] = weights["token_embedding"]
    return config, weights


def random_weights(config: Config, seed: int = 0, scale: float = 0.1,
                   embedding_scale: float = 0.3) -> dict[str, np.ndarray]:
    """Seeded-random fp32 weights of the right shapes.

    The default scales give logits like a trained model's (standard deviation about 5, a top-p 0.9
    nucleus of a few to a few dozen tokens), so sampling costs what it costs on a real model and
    stories neither echo one token nor spread over the whole vocabulary.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in config.tensor_shapes():
        if name.startswith("rms_"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.startswith("freq_cis"):
            w = np.zeros(shape)
        elif name in ("token_embedding", "wcls"):
            w = rng.standard_normal(shape) * embedding_scale
        else:
            w = rng.standard_normal(shape) * scale
        weights[name] = w.astype(np.float32)
    return weights


def write_checkpoint(path: str | Path, config: Config, weights: dict[str, np.ndarray] | None = None,
                     seed: int = 0) -> Path:
    """Writes a legacy checkpoint; with no weights, seeded-random ones of the right shapes."""
    config.validate()
    if weights is None:
        weights = random_weights(config, seed)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(config.header())
        for name, shape in config.tensor_shapes():
            if name.startswith("freq_cis") and name not in weights:
                tensor = np.zeros(shape, np.float32)
            else:
                tensor = np.asarray(weights[name], dtype="<f4")
            if tensor.shape != shape:
                raise CheckpointError(f"tensor {name} has shape {tensor.shape}, expected {shape}")
            f.write(tensor.tobytes())
    tmp.replace(path)
    return path


# Named shapes of the real models, for tests and benchmarks that need no download.
SHAPES = {
    "stories260K": Config(64, 172, 5, 8, 4, 512, 512),
    "stories15M": Config(288, 768, 6, 6, 6, 32000, 256),
    "stories42M": Config(512, 1376, 8, 8, 8, 32000, 1024),
    "stories110M": Config(768, 2048, 12, 12, 12, 32000, 1024),
}
