"""A plain numpy forward pass: the specification the C engine is tested against.

Readable rather than fast: float64 math, one position at a time, with a KV cache. The engine's float32
logits must match these within 1e-4 (tests/test_engine.py).
"""

from __future__ import annotations

import numpy as np

from .checkpoint import Config
from .sampler import rounded_expf


def rmsnorm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight * (x / np.sqrt(np.mean(x * x) + 1e-5))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def rope(vec: np.ndarray, pos: int, head_size: int) -> np.ndarray:
    """Rotates each (even, odd) pair of every head by pos * 10000^(-i/head_size)."""
    pairs = vec.reshape(-1, head_size // 2, 2)  # (heads, head_size/2, 2)
    freq = 1.0 / 10000.0 ** (np.arange(0, head_size, 2) / head_size)  # (head_size/2,)
    cos, sin = np.cos(pos * freq), np.sin(pos * freq)
    v0, v1 = pairs[..., 0], pairs[..., 1]
    return np.stack([v0 * cos - v1 * sin, v0 * sin + v1 * cos], axis=-1).reshape(vec.shape)


class ReferenceModel:
    """Implements `backend.Backend` in numpy, from the weights of `checkpoint.read_weights`."""

    def __init__(self, config: Config, weights: dict[str, np.ndarray],
                 quantize_group: int | None = None):
        """quantize_group: compute as llama2.c's runq.c does for an int8 (Q8_0) checkpoint, whose
        weights `weights` then holds dequantized: every matmul input is first quantized to int8
        in groups of this many values (max |x| of a group -> 127, rounding half away from zero)."""
        self.config = config
        self.quantize_group = quantize_group
        self.w = {name: np.asarray(t, np.float64) for name, t in weights.items()}
        c = config
        self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim))  # (layer, pos, kv_dim)
        self.value_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim))

    def matmul(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """w (d, n) @ x (n,), with x quantized first for an int8 model."""
        if self.quantize_group:
            groups = x.astype(np.float32).reshape(-1, self.quantize_group)
            scale = np.abs(groups).max(axis=1, keepdims=True) / np.float32(127.0)
            ratio = np.divide(groups, scale, out=np.zeros_like(groups), where=scale > 0)
            q = np.sign(ratio) * np.floor(np.abs(ratio) + np.float32(0.5))  # C's roundf
            x = (q * scale).reshape(-1).astype(np.float64)
        return w @ x

    def forward(self, token: int, pos: int) -> np.ndarray:
        c, w, mm = self.config, self.w, self.matmul
        hs = c.head_size
        kv_mul = c.n_heads // c.n_kv_heads
        x = w["token_embedding"][token].copy()  # (dim,)
        for l in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][l])
            q = rope(mm(w["wq"][l], xb), pos, hs)  # (dim,)
            self.key_cache[l, pos] = rope(mm(w["wk"][l], xb), pos, hs)  # (kv_dim,)
            self.value_cache[l, pos] = mm(w["wv"][l], xb)
            heads = []
            for h in range(c.n_heads):
                kv = slice((h // kv_mul) * hs, (h // kv_mul + 1) * hs)
                keys = self.key_cache[l, : pos + 1, kv]  # (pos+1, head_size)
                values = self.value_cache[l, : pos + 1, kv]
                att = softmax(keys @ q[h * hs:(h + 1) * hs] / np.sqrt(hs))  # (pos+1,)
                heads.append(att @ values)  # (head_size,)
            x = x + mm(w["wo"][l], np.concatenate(heads))
            xb = rmsnorm(x, w["rms_ffn"][l])
            h1, h3 = mm(w["w1"][l], xb), mm(w["w3"][l], xb)  # (hidden_dim,)
            x = x + mm(w["w2"][l], h1 / (1.0 + np.exp(-h1)) * h3)
        x = rmsnorm(x, w["rms_final"])
        return mm(w["wcls"], x).astype(np.float32)  # (vocab_size,)

    def expf(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return rounded_expf(x, out)

    def draw(self, logits: np.ndarray, temperature: float, topp: float, coin: float) -> None:
        return None  # no engine: the sampler's numpy path decides

    def argmax(self, logits: np.ndarray) -> None:
        return None

    def close(self) -> None:
        pass
