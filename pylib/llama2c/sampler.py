"""run.c's sampler in numpy: xorshift64* RNG, greedy argmax, temperature, softmax, top-p.

Every operation is float32 in run.c's order, so the chosen token ids equal run.c's. Sums that run.c
accumulates in a loop use np.cumsum, which adds sequentially in float32 (np.sum would add pairwise).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ExpF = Callable[[np.ndarray, np.ndarray], np.ndarray]  # expf(x, out) -> out, elementwise float32

MASK64 = (1 << 64) - 1
_F32 = np.float32


def random_u32(state: int) -> tuple[int, int]:
    """One step of xorshift64*: returns (new_state, 32-bit output)."""
    state ^= state >> 12
    state ^= (state << 25) & MASK64
    state ^= state >> 27
    return state, ((state * 0x2545F4914F6CDD1D) & MASK64) >> 32


def rounded_expf(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """exp in float64, rounded once to float32: the correctly rounded expf.

    A stand-in for C's expf where no engine is at hand. glibc's expf (and musl's) is not correctly
    rounded in every case, so exact parity with run.c needs the engine's `expf` (backend.Backend).
    """
    np.copyto(out, np.exp(x.astype(np.float64)), casting="same_kind")
    return out


def softmax(x: np.ndarray, expf: ExpF = rounded_expf) -> np.ndarray:
    """run.c's softmax in float32: expf(x - max) / sequential sum. Returns a new array."""
    exps, total = exp_and_sum(x, expf)
    return exps / total


def exp_and_sum(x: np.ndarray, expf: ExpF = rounded_expf,
                work: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.float32]:
    """expf(x - max(x)) in float32 and its sum, added up in order as run.c's softmax does.

    `work` holds preallocated buffers, so that sampling a token allocates nothing.
    """
    n = len(x)
    work = {} if work is None else work
    if work.get("shifted") is None or len(work["shifted"]) != n:
        work.update(shifted=np.empty(n, np.float32), exps=np.empty(n, np.float32),
                    cum=np.empty(n, np.float32))
    shifted, exps, cum = work["shifted"], work["exps"], work["cum"]
    np.subtract(x, x.max(), out=shifted)
    expf(shifted, exps)
    np.cumsum(exps, out=cum)  # sequential float32 adds, like run.c's loop (np.sum is pairwise)
    return exps, cum[-1]


def sample_argmax(probabilities: np.ndarray) -> int:
    return int(np.argmax(probabilities))  # the first index of the maximum, as run.c


def sample_mult(probabilities: np.ndarray, coin: np.float32) -> int:
    """The first index whose running sum exceeds coin (the last index if rounding leaves none)."""
    cdf = np.cumsum(probabilities)
    hit = np.flatnonzero(coin < cdf)
    return int(hit[0]) if hit.size else len(probabilities) - 1


def sample_topp(probabilities: np.ndarray, topp: np.float32, coin: np.float32,
                candidates: np.ndarray | None = None) -> int:
    """Nucleus sampling with run.c's cutoff: tokens below (1 - topp) / (n - 1) cannot be chosen.

    `candidates`, when given, is a superset (in index order) of the tokens that pass the cutoff.
    """
    n = len(probabilities)
    cutoff = (_F32(1.0) - topp) / _F32(n - 1)
    if candidates is None:
        candidates = np.arange(n)
    candidates = candidates[probabilities[candidates] >= cutoff]
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


def sample_topp_exps(exps: np.ndarray, total: np.float32, topp: np.float32, coin: np.float32) -> int:
    """sample_topp on probabilities exps / total, dividing only the tokens that can pass the cutoff."""
    n = len(exps)
    cutoff = (_F32(1.0) - topp) / _F32(n - 1)
    # p >= cutoff implies exps >= cutoff * total up to rounding: keep a margin, then check exactly.
    maybe = np.flatnonzero(exps >= cutoff * total * _F32(0.999))
    probs = np.zeros(n, np.float32)
    probs[maybe] = exps[maybe] / total
    return sample_topp(probs, topp, coin, candidates=maybe)


class Sampler:
    """Chooses the next token from logits, with run.c's parameters and RNG."""

    def __init__(self, vocab_size: int, temperature: float, topp: float, rng_seed: int,
                 expf: ExpF = rounded_expf):
        self.vocab_size = vocab_size
        self.temperature = _F32(temperature)  # run.c keeps these as C floats
        self.topp = _F32(topp)
        self.rng_state = rng_seed & MASK64
        self.expf = expf  # C's expf from the engine (backend.expf), for bit-exact probabilities
        self._work: dict[str, np.ndarray] = {}  # reused buffers: sampling allocates nothing

    def random_f32(self) -> np.float32:
        """A float32 in [0, 1) from the top 24 bits of random_u32, as run.c's random_f32."""
        self.rng_state, bits = random_u32(self.rng_state)
        return _F32((bits >> 8) / 16777216.0)

    def sample(self, logits: np.ndarray) -> int:
        """The next token id. `logits` (vocab_size float32) is not modified."""
        if self.temperature == 0.0:
            return sample_argmax(logits)
        scaled = logits
        if self.temperature != 1.0:  # x / 1 is x: skip a pass over the vocabulary
            scaled = np.divide(logits, self.temperature, out=self._work.setdefault(
                "scaled", np.empty(len(logits), np.float32)))
        exps, total = exp_and_sum(scaled, self.expf, self._work)
        coin = self.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            return sample_mult(np.divide(exps, total, out=exps), coin)
        return sample_topp_exps(exps, total, self.topp, coin)
