"""The browser backend: the WebAssembly engine, driven from Pyodide inside the page's Web Worker.

web/worker.js owns the JavaScript side (web/engine.js wraps the WebAssembly module). It creates a
`Session` with the loaded engine and the tokenizer bytes, calls `start()` with the page's settings,
then pulls one piece at a time with `step()`, so that a Stop between two steps ends generation.
The loop itself is `generate.generate` / `generate.chat`, the same code the command line runs.
"""

from __future__ import annotations

import numpy as np

from .checkpoint import Config
from .errors import EngineError
from .generate import Piece, Stats, answer_inputs, chat, generate
from .params import Settings
from .sampler import Sampler
from .tokenizer import Tokenizer, reject_lone_surrogates


def numpy_expf(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.exp(x, out=out)


def numpy_expf_matches(engine_expf, count: int = 1 << 15, seed: int = 0) -> bool:
    """True when numpy's float32 exp equals the engine's expf, bit for bit, on softmax inputs.

    Softmax exponents lie in [-104, 0] (below that expf is 0): a random sample weighted to where
    softmax terms matter, a uniform one, and an even grid must all agree exactly.
    """
    rng = np.random.default_rng(seed)
    x = np.concatenate([
        -rng.exponential(8.0, count).astype(np.float32),
        -rng.uniform(0, 104, count).astype(np.float32),
        np.linspace(-104, 0, 4096, dtype=np.float32),
    ])
    ours = numpy_expf(x, np.empty_like(x))
    theirs = engine_expf(x, np.empty_like(x))
    return bool(np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)))


class BrowserModel:
    """Implements `backend.Backend` on a JS engine object (web/engine.js `Engine`)."""

    def __init__(self, engine):
        values = engine.configList().to_py()  # 7 header values + shared-classifier flag
        self.config = Config(*values[:7], shared_classifier=bool(values[7]))
        self._engine = engine
        self._logits = np.empty(self.config.vocab_size, np.float32)
        # numpy's float32 exp in Pyodide calls the same C library expf as the engine, and saves a
        # round trip through JavaScript per token. Use it only if it proves bit-identical here.
        self.numpy_expf_matches = numpy_expf_matches(self._engine_expf)
        self.expf = numpy_expf if self.numpy_expf_matches else self._engine_expf

    def forward(self, token: int, pos: int) -> np.ndarray:
        try:
            view = self._engine.forward(token, pos)  # a Float32Array over WebAssembly memory
        except Exception as e:  # a JsException carrying the engine's message
            raise EngineError(str(e)) from None
        view.assign_to(self._logits)  # the one copy, straight into numpy's buffer
        return self._logits

    def _engine_expf(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = the WebAssembly engine's expf(x) (musl's, the same algorithm as glibc's)."""
        self._engine.expf(np.ascontiguousarray(x, np.float32)).assign_to(out)  # read in place
        return out

    def close(self) -> None:
        self._engine = None


class Session:
    """One loaded model and tokenizer in the worker, and the generation in progress."""

    def __init__(self, engine, tokenizer_bytes):
        self.model = BrowserModel(engine)
        data = tokenizer_bytes.to_bytes() if hasattr(tokenizer_bytes, "to_bytes") else tokenizer_bytes
        self.tokenizer = Tokenizer.from_bytes(bytes(data), self.model.config.vocab_size)
        self.stats = Stats()
        self._pieces = iter(())
        self.tokens = 0

    def start(self, options) -> int:
        """Begins a story (or a non-interactive chat) and returns the seed it uses.

        `options` maps run.c's settings to text, as the URL carries them: temperature, topp, seed,
        steps, prompt, mode, system_prompt (a missing key means run.c's default).
        """
        values = options.to_py() if hasattr(options, "to_py") else dict(options)
        settings = Settings.parse(**{k: v for k, v in values.items() if v is not None})
        # A script or a widget attribute may hand over a lone surrogate: each is refused alike.
        reject_lone_surrogates(settings.prompt, "the prompt")
        reject_lone_surrogates(settings.system_prompt, "the system prompt")
        config = self.model.config
        sampler = Sampler(config.vocab_size, settings.temperature, settings.topp, settings.seed,
                          self.model.expf)
        self.stats = Stats()
        self.tokens = 0
        if settings.mode == "chat":
            turns = chat(self.model, self.tokenizer, sampler, settings.prompt,
                         settings.system_prompt, settings.steps, self.stats)
            self._pieces = answer_inputs(turns, lambda guide: None)  # stdin closed, as in tests
        else:
            self._pieces = generate(self.model, self.tokenizer, sampler, settings.prompt,
                                    settings.steps, self.stats)
        return settings.seed

    def step(self) -> str | None:
        """The next piece of text (possibly ""), or None when the story is over."""
        piece: Piece | None = next(self._pieces, None)
        if piece is None:
            return None
        if piece.token >= 0:
            self.tokens += 1
        return piece.text

    def report(self) -> dict:
        """Timing for the page and the benchmark: totals and the time spent outside forward()."""
        s = self.stats
        return {
            "positions": s.pos,
            "tokens": self.tokens,
            "tokps": s.tokens_per_second or 0.0,
            "forward_ms": s.forward_seconds * 1e3,
            "numpy_expf": self.model.numpy_expf_matches,
            "sample_ms": s.sample_seconds * 1e3,
            "forward_calls": s.forward_calls,
        }
