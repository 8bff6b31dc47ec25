"""run.c's sampler in numpy: xorshift64* RNG, greedy argmax, temperature, softmax, top-p.

Every operation is float32 in run.c's order, so the chosen token ids equal run.c's. Sums that run.c
accumulates in a loop use np.cumsum, which adds sequentially in float32 (np.sum would add pairwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

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
    shifted = (x - x.max()).astype(np.float32)
    exps = expf(shifted, np.empty_like(shifted))
    return exps / np.cumsum(exps)[-1]  # cumsum adds in order, like run.c's loop


# An exp this far below an earlier term of a sequential float32 sum cannot change the sum:
# exp(-17.5) = 2.5e-8 is under half an ulp of anything at least that earlier term (> 2^-25 of it).
NEGLIGIBLE = _F32(-17.5)
# ...as long as that earlier term is a normal float far from underflow (exp(-60) = 8.8e-27).
TINY = _F32(-60.0)
# A left-out token's probability is below exp(NEGLIGIBLE) = 2.5e-8; this bound has a margin.
LEFT_OUT_PROBABILITY = _F32(2.6e-8)


def softmax_terms(x: np.ndarray, expf: ExpF, work: dict[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """The tokens whose exp can matter, their expf(x - max), and run.c's softmax denominator.

    run.c sums exp(x_i - max) in index order in float32. A term smaller than half an ulp of the
    running sum leaves it unchanged, to the bit; the running sum is at least every earlier term, so
    a token whose logit is NEGLIGIBLE below the largest one before it can be left out exactly (the
    rounding of x - max moves the comparison by ~1e-6, far inside the margin of NEGLIGIBLE).
    Its probability is then below LEFT_OUT_PROBABILITY: it can neither pass a top-p cutoff above
    that nor be where a cumulative sum first exceeds a coin. Returns (indices, exps, total).
    Four passes over the vocabulary; the exps are computed for the kept tokens only. When every
    token is kept, two (its max and min).
    """
    n = len(x)
    if work.get("prefix") is None or len(work["prefix"]) != n:
        work.update(prefix=np.empty(n, np.float32), threshold=np.empty(max(n - 1, 0), np.float32),
                    keep=np.empty(n, bool), every=np.arange(n))
    top = x.max()
    if x.min() >= top + NEGLIGIBLE:
        # No logit is NEGLIGIBLE below the largest, so none below any running max: every token is
        # kept (flat logits, as early in training or at a high temperature), without the passes.
        # With top-p's single pass below: a flat 32000-token sample 1.46 -> 1.05 ms natively, and
        # flat stories in the page 1.07x the tokens/s (six paired runs, 0.95-1.08).
        kept = np.subtract(x, top)
        exps = expf(kept, np.empty_like(kept))
        return work["every"], exps, np.cumsum(exps)[-1]
    prefix, threshold, keep = work["prefix"], work["threshold"], work["keep"]
    np.maximum.accumulate(x, out=prefix)  # prefix[i] = the largest logit up to i
    top = prefix[-1]  # run.c's max_val
    keep[0] = True
    np.add(prefix[:-1], NEGLIGIBLE, out=threshold)
    np.greater_equal(x[1:], threshold, out=keep[1:])
    # While every earlier term is tiny, leave nothing out. prefix never decreases, so that stretch
    # is everything up to the first index where it reaches top + TINY.
    keep[1:int(np.searchsorted(prefix, top + TINY)) + 1] = True
    indices = np.flatnonzero(keep)
    kept = np.subtract(x[indices], top)  # x - max_val in float32, as run.c
    exps = expf(kept, np.empty_like(kept))
    return indices, exps, np.cumsum(exps)[-1]


def sample_argmax(probabilities: np.ndarray) -> int:
    return int(np.argmax(probabilities))  # the first index of the maximum, as run.c


def sample_mult(probabilities: np.ndarray, coin: np.float32,
                indices: np.ndarray | None = None, n: int | None = None) -> int:
    """The first index whose running sum exceeds coin (the last index if rounding leaves none).

    With `indices`, probabilities are those tokens' only (the others cannot change the sum).
    """
    cdf = np.cumsum(probabilities)  # non-decreasing
    hit = int(np.searchsorted(cdf, coin, side="right"))  # the first index with coin < cdf
    if indices is None:
        return hit if hit < len(cdf) else len(probabilities) - 1
    return int(indices[hit]) if hit < len(cdf) else n - 1


def argsort_descending(values: np.ndarray) -> np.ndarray:
    """np.argsort(-values, kind="stable") for non-negative float32 values: descending, ties in
    index order (run.c's qsort keeps them so). The bits of a non-negative float sort as its value
    does, so this is two stable passes of numpy's radix sort (which it uses for 16-bit keys), low
    half then high half of the inverted bits: O(n), and 6x faster than the float argsort in
    Pyodide on 20000 probabilities (1.7 ms against 11 ms, measured in node)."""
    key = np.invert(np.ascontiguousarray(values, np.float32).view(np.uint32))
    halves = key.view(np.uint16)  # little-endian: low half, high half, for each value
    order = np.argsort(halves[0::2], kind="stable")
    return order[np.argsort(halves[1::2][order], kind="stable")]


def topp_threshold(probs: np.ndarray, topp: np.float32) -> np.float32:
    """A probability t such that the candidates at or above t hold more than topp (in float64),
    found without sorting: a histogram of the probabilities by their top 12 bits (sign, exponent
    and 3 mantissa bits), summed from the largest bucket down. The tokens >= t are then a head of
    the sorted list that almost always reaches topp in run.c's float32 sum too."""
    buckets = (probs.view(np.uint32) >> 20).astype(np.intp)
    mass = np.bincount(buckets, weights=probs, minlength=1 << 12)[::-1]
    first = int(np.searchsorted(np.cumsum(mass), float(topp), side="right"))
    bucket = max((1 << 12) - 1 - first, 0)
    return np.uint32(bucket << 20).view(np.float32)


def nucleus(probabilities: np.ndarray, topp: np.float32, indices: np.ndarray | None = None,
            n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """run.c's top-p list: (ids, cdf), the candidates from the most probable down, up to and
    including the one where their running float32 sum `cdf` first exceeds topp (or all of them).

    The candidates are the tokens at or above run.c's cutoff, (1 - topp) / (n - 1), sorted by
    probability, descending, ties in index order. With no candidate, the most probable token alone
    (run.c would read outside its list). With `indices`, probabilities are those tokens' only (in
    index order), out of n. The engine's l2c_nucleus computes the same from the logits.
    """
    if indices is None:
        indices, n = np.arange(len(probabilities)), len(probabilities)
    cutoff = (_F32(1.0) - topp) / _F32(n - 1)
    # run.c sorts every candidate (every token at or above the cutoff), then sums down the sorted
    # list until it exceeds topp. Sorting only a head of the largest (with every tie of its
    # smallest) gives the same start of that list, if the sum exceeds topp within it: first every
    # token at or above a threshold estimated from a histogram of the probabilities (a few dozen
    # tokens when the distribution is peaked, most of the vocabulary when it is flat), and never
    # below the cutoff; then, if float32 rounding leaves the sum short of topp there, every
    # candidate. (Tokens below the cutoff only add to the histogram's buckets below the cutoff's,
    # so the head is the same as from the candidates' histogram, one pass and two gathers sooner.)
    floor = max(topp_threshold(probabilities, topp), cutoff)
    while True:
        head = probabilities >= floor
        head_candidates, head_probs = indices[head], probabilities[head]
        if head_probs.size == 0:  # no token reaches the cutoff
            best = int(np.argmax(probabilities))
            return indices[best:best + 1], probabilities[best:best + 1]
        order = argsort_descending(head_probs)
        head_probs, head_candidates = head_probs[order], head_candidates[order]
        cumulative = np.cumsum(head_probs)  # non-decreasing: searchsorted finds first crossings
        over = int(np.searchsorted(cumulative, topp, side="right"))  # first sum > topp
        if over < len(cumulative) or floor == cutoff:
            break
        floor = cutoff
    return head_candidates[:over + 1], cumulative[:over + 1]


def choose(ids: np.ndarray, cdf: np.ndarray, coin: np.float32) -> int:
    """run.c's draw from its top-p list: the first token whose running sum exceeds coin times the
    list's sum (the last token if rounding leaves none)."""
    r = coin * cdf[-1]
    hit = int(np.searchsorted(cdf, r, side="right"))  # first cdf > r
    return int(ids[hit] if hit < len(cdf) else ids[-1])


class EngineSampling(Protocol):
    """The sampler's vector work done by the engine where the logits are (backend.Backend has
    these): the same tokens as the numpy path, in one call each. In the page, after a forward pass
    has filled the caches, every call into numpy costs tens of microseconds."""

    def draw(self, logits: np.ndarray, temperature: float, topp: float, coin: float
             ) -> int | None:
        """choose(*nucleus(...), coin) for softmax(logits / temperature) with the engine's expf
        (wasm/run.c l2c_nucleus and l2c_choose); None leaves it to numpy."""
        ...

    def argmax(self, logits: np.ndarray) -> int | None:
        """sample_argmax(logits) (wasm/run.c l2c_argmax); None leaves it to numpy (a NaN)."""
        ...


TOKEN_VIEW_SIZE = 5  # candidates the page's token view shows per token


@dataclass
class Candidates:
    """What the sampler saw when it chose one token: the page's token view."""

    token: int  # the token it chose
    ids: list[int]  # the TOKEN_VIEW_SIZE most probable tokens, most probable first
    probabilities: list[float]  # theirs, after temperature (at temperature 1 when greedy)
    nucleus: int | None  # how many tokens top-p kept, most probable first; None: no top-p cut
    greedy: bool  # temperature 0: the most probable token is taken


def candidates(token: int, probabilities: np.ndarray, indices: np.ndarray | None,
               nucleus: int | None, greedy: bool = False) -> Candidates:
    """The token view of one sampling step, from the probabilities the sampler used."""
    top = np.argsort(-probabilities, kind="stable")[:TOKEN_VIEW_SIZE]
    ids = top if indices is None else indices[top]
    return Candidates(token, [int(i) for i in ids], [float(p) for p in probabilities[top]],
                      nucleus, greedy)


class Sampler:
    """Chooses the next token from logits, with run.c's parameters and RNG.

    `observe`, when set, is called with the `Candidates` of every sampled token (the page's token
    view); left at None it costs one comparison per token.
    """

    def __init__(self, vocab_size: int, temperature: float, topp: float, rng_seed: int,
                 expf: ExpF = rounded_expf, engine: EngineSampling | None = None):
        self.vocab_size = vocab_size
        self.temperature = _F32(temperature)  # run.c keeps these as C floats
        self.topp = _F32(topp)
        self.rng_state = rng_seed & MASK64
        self.expf = expf  # C's expf from the engine (backend.expf), for bit-exact probabilities
        # The engine's work (EngineSampling), with the same expf: greedy, and top-p where it can
        # decide (not at a cutoff so low that a token softmax_terms leaves out could pass it).
        # Its arguments as Python floats, for one cheap call.
        self.greedy = bool(self.temperature == 0.0)
        cutoff = (_F32(1.0) - self.topp) / _F32(max(vocab_size - 1, 1))
        engine_topp = vocab_size > 1 and 0 < self.topp < 1 and cutoff >= LEFT_OUT_PROBABILITY
        self.engine_argmax = engine.argmax if engine is not None else None
        self.engine_draw = engine.draw if engine is not None and engine_topp else None
        self._draw_args = (float(self.temperature), float(self.topp))
        self._work: dict[str, np.ndarray] = {}  # vocabulary-sized buffers, reused every token
        self.observe: Callable[[Candidates], None] | None = None

    def random_f32(self) -> np.float32:
        """A float32 in [0, 1) from the top 24 bits of random_u32, as run.c's random_f32."""
        self.rng_state, bits = random_u32(self.rng_state)
        return _F32((bits >> 8) / 16777216.0)

    def sample(self, logits: np.ndarray) -> int:
        """The next token id. `logits` (vocab_size float32) is not modified.

        The engine decides where it can, in one call (EngineSampling); the numpy path, the
        definition, decides the rest and whenever the token view is on. In the page, a peaked
        stories15M-shaped sample took 0.45 ms in numpy (about 30 calls, each slow after a forward
        pass has filled the caches) and takes 0.16-0.26 ms through the engine.
        """
        if self.greedy:
            token = self.engine_argmax(logits) if self.engine_argmax is not None else None
            if token is not None and self.observe is None:
                return token
            return self._sample_numpy(logits, None)
        coin = self.random_f32()
        if self.engine_draw is not None and self.observe is None:
            token = self.engine_draw(logits, *self._draw_args, float(coin))
            if token is not None:
                return token
        return self._sample_numpy(logits, coin)

    # run.c divides and exponentiates in plain IEEE floats: a tiny temperature overflows to inf and
    # inf - inf is NaN, silently. numpy would warn on stderr for each; the arithmetic is the same.
    @np.errstate(all="ignore")
    def _sample_numpy(self, logits: np.ndarray, coin: np.float32 | None) -> int:
        """The token from numpy alone: greedy (coin None), or sampled with `coin`."""
        if coin is None:
            token = sample_argmax(logits)
            if self.observe is not None:
                self.observe(candidates(token, softmax(logits, self.expf), None, None, greedy=True))
            return token
        n = len(logits)
        scaled = logits
        if self.temperature != 1.0:  # x / 1 is x: skip a pass over the vocabulary
            scaled = np.divide(logits, self.temperature, out=self._work.setdefault(
                "scaled", np.empty(len(logits), np.float32)))
        indices, exps, total = softmax_terms(scaled, self.expf, self._work)
        probabilities = exps / total
        if self.topp <= 0 or self.topp >= 1:
            token, kept = sample_mult(probabilities, coin, indices, n), None
        else:
            if (_F32(1.0) - self.topp) / _F32(n - 1) < LEFT_OUT_PROBABILITY:
                # a cutoff so low that a left-out token could pass it: take every token
                probabilities, indices = softmax(scaled, self.expf), None
            ids, cdf = nucleus(probabilities, self.topp, indices, n)
            token, kept = choose(ids, cdf, coin), len(ids)  # kept: the token view's nucleus
        if self.observe is not None:
            self.observe(candidates(token, probabilities, indices, kept))
        return token
