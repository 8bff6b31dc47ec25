"""run.c's sampler in numpy: xorshift64* RNG, greedy argmax, temperature, softmax, top-p.

Every operation is float32 in run.c's order, so the chosen token ids equal run.c's. Sums that run.c
accumulates in a loop use np.cumsum, which adds sequentially in float32 (np.sum would add pairwise).
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
_F32 = np.float32


def random_u32(state: int) -> tuple[int, int]:
    """One step of xorshift64*: returns (new_state, 32-bit output)."""
    state ^= state >> 12
    state ^= (state << 25) & MASK64
    state ^= state >> 27
    return state, ((state * 0x2545F4914F6CDD1D) & MASK64) >> 32


def softmax(x: np.ndarray) -> np.ndarray:
    """run.c's softmax in float32: exp(x - max) / sequential sum. Returns a new array."""
    shifted = x - x.max()
    # expf, correctly rounded: evaluate in float64, round once to float32.
    e = np.exp(shifted.astype(np.float64)).astype(np.float32)
    total = np.cumsum(e)[-1]
    return e / total


def sample_argmax(probabilities: np.ndarray) -> int:
    return int(np.argmax(probabilities))  # the first index of the maximum, as run.c


def sample_mult(probabilities: np.ndarray, coin: np.float32) -> int:
    """The first index whose running sum exceeds coin (the last index if rounding leaves none)."""
    cdf = np.cumsum(probabilities)
    hit = np.flatnonzero(coin < cdf)
    return int(hit[0]) if hit.size else len(probabilities) - 1


def sample_topp(probabilities: np.ndarray, topp: np.float32, coin: np.float32) -> int:
    """Nucleus sampling with run.c's cutoff: tokens below (1 - topp) / (n - 1) cannot be chosen."""
    n = len(probabilities)
    cutoff = (_F32(1.0) - topp) / _F32(n - 1)
    candidates = np.flatnonzero(probabilities >= cutoff)
    if candidates.size == 0:
        return sample_argmax(probabilities)
    probs = probabilities[candidates]
    order = np.argsort(-probs, kind="stable")  # descending; ties keep index order (glibc qsort)
    probs, candidates = probs[order], candidates[order]
    cumulative = np.cumsum(probs)
    over = np.flatnonzero(cumulative > topp)
    last = int(over[0]) if over.size else len(probs) - 1  # truncate where the sum exceeds topp
    r = coin * cumulative[last]
    hit = np.flatnonzero(r < cumulative[: last + 1])
    return int(candidates[hit[0]] if hit.size else candidates[last])


class Sampler:
    """Chooses the next token from logits, with run.c's parameters and RNG."""

    def __init__(self, vocab_size: int, temperature: float, topp: float, rng_seed: int):
        self.vocab_size = vocab_size
        self.temperature = _F32(temperature)  # run.c keeps these as C floats
        self.topp = _F32(topp)
        self.rng_state = rng_seed & MASK64

    def random_f32(self) -> np.float32:
        """A float32 in [0, 1) from the top 24 bits of random_u32, as run.c's random_f32."""
        self.rng_state, bits = random_u32(self.rng_state)
        return _F32((bits >> 8) / 16777216.0)

    def sample(self, logits: np.ndarray) -> int:
        """The next token id. `logits` (vocab_size float32) is not modified."""
        if self.temperature == 0.0:
            return sample_argmax(logits)
        probabilities = softmax(logits / self.temperature)
        coin = self.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            return sample_mult(probabilities, coin)
        return sample_topp(probabilities, self.topp, coin)
