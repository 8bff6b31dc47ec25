"""The backend interface: the one thing the generation loop needs from an engine.

Two backends implement it: `native.NativeModel` (the gcc-built engine through ctypes, for the
command line and the tests) and `browser.BrowserModel` (the WebAssembly engine, under Pyodide).
The generate and chat loops in `generate.py` exist once and drive either.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .checkpoint import Config


class Backend(Protocol):
    config: Config

    def forward(self, token: int, pos: int) -> np.ndarray:
        """Runs `token` at position `pos` and returns (vocab_size,) float32 logits.

        Positions of one sequence are fed in order from 0; the engine keeps the KV cache. The array
        may be a view of engine memory that the next call overwrites: read it, do not keep it.
        """
        ...

    def expf(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = the engine's C expf(x), elementwise, float32: what run.c's softmax computes.

        The sampler uses it so its probabilities equal run.c's to the bit.
        """
        ...

    def draw(self, logits: np.ndarray, temperature: float, topp: float, coin: float
             ) -> int | None:
        """sampler.EngineSampling.draw: the sampler's top-p draw, by the engine in one call."""
        ...

    def argmax(self, logits: np.ndarray) -> int | None:
        """sampler.EngineSampling.argmax: the sampler's greedy choice, by the engine."""
        ...

    def close(self) -> None:
        """Releases the engine's memory."""
        ...
