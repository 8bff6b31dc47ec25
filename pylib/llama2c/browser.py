"""The browser backend: the WebAssembly engine, driven from Pyodide inside the page's Web Worker.

web/worker.js owns the JavaScript side (web/engine.js wraps the WebAssembly module). It creates a
`Session` with the loaded engine and the tokenizer bytes, calls `start()` with the page's settings,
then pulls one piece at a time with `step()`, so that a Stop between two steps ends generation.
The loop itself is `generate.generate` / `generate.chat`, the same code the command line runs.

Chat reads its lines from a standard input of its own: `reply(text)` appends `text` and a newline,
and each of chat's reads takes one line from it as run.c's fgets would. When it is empty, `step()`
returns "" and `waiting` holds the guide (`User: `) until the next `reply()`.
"""

from __future__ import annotations

import io

import numpy as np

from .backend import Backend
from .checkpoint import Config
from .errors import EngineError
from .generate import InputRequest, Piece, Stats, read_line, story
from .params import Settings
from .sampler import NEGLIGIBLE, TINY, Candidates
from .tokenizer import Tokenizer, reject_lone_surrogates


def numpy_expf(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.exp(x, out=out)


def numpy_expf_matches(engine_expf, count: int = 1 << 15) -> bool:
    """True when numpy's float32 exp equals the engine's expf, bit for bit, on softmax inputs.

    Softmax exponents lie in [-104, 0] (below that expf is 0): a sample weighted to where softmax
    terms matter (exponentially distributed), a uniform one, and an even grid must all agree
    exactly. The samples come from Weyl sequences (i times an irrational, mod 1), spread evenly
    over [0, 1) without numpy.random: importing it compiles eight shared libraries, ~50 ms of the
    page's start.
    """
    i = np.arange(count, dtype=np.float64)
    golden, silver = (i * 0.6180339887498949) % 1.0, (i * 0.4142135623730951) % 1.0
    x = np.concatenate([
        (8.0 * np.log1p(-golden)).astype(np.float32),  # -exponential(mean 8)
        (-104.0 * silver).astype(np.float32),
        np.linspace(-104, 0, 4096, dtype=np.float32),
    ])
    ours = numpy_expf(x, np.empty_like(x))
    theirs = engine_expf(x, np.empty_like(x))
    return bool(np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)))


_NEGLIGIBLE, _TINY = float(NEGLIGIBLE), float(TINY)  # sampler's, as the engine takes them


class BrowserModel:
    """Implements `backend.Backend` on a JS engine object (web/engine.js `Engine`)."""

    def __init__(self, engine):
        named = engine.config().to_py()  # web/engine.js Engine.config(): fields by name
        self.config = Config(**{field: named[field] for field in Config.__dataclass_fields__})
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
        self._logits.flags.writeable = True
        view.assign_to(self._logits)  # the one copy, straight into numpy's buffer
        self._logits.flags.writeable = False  # draw() reads the engine's copy of them
        return self._logits

    def draw(self, logits: np.ndarray, temperature: float, topp: float, coin: float
             ) -> int | None:
        """The engine's top-p draw (web/engine.js Engine.draw). The logits forward() returned
        (read-only) are read where the engine keeps them."""
        try:
            token = self._engine.draw(None if logits is self._logits else logits, temperature,
                                      topp, coin, _NEGLIGIBLE, _TINY)
        except Exception as e:  # a JsException carrying the engine's message
            raise EngineError(str(e)) from None
        return token if token >= 0 else None

    def argmax(self, logits: np.ndarray) -> int | None:
        """The engine's greedy choice (web/engine.js Engine.argmax), from its own copy of the
        logits forward() returned."""
        try:
            token = self._engine.argmax(None if logits is self._logits else logits)
        except Exception as e:  # a JsException carrying the engine's message
            raise EngineError(str(e)) from None
        return token if token >= 0 else None

    def _engine_expf(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = the WebAssembly engine's expf(x) (musl's, the same algorithm as glibc's)."""
        self._engine.expf(np.ascontiguousarray(x, np.float32)).assign_to(out)  # read in place
        return out

    def close(self) -> None:
        self._engine = None


class Session:
    """One loaded model and tokenizer in the worker, and the generation in progress."""

    def __init__(self, engine, tokenizer_bytes, model: Backend | None = None):
        self.model = model if model is not None else BrowserModel(engine)  # tests pass a native one
        data = tokenizer_bytes.to_bytes() if hasattr(tokenizer_bytes, "to_bytes") else tokenizer_bytes
        self.tokenizer = Tokenizer.from_bytes(bytes(data), self.model.config.vocab_size)
        self.stats = Stats()
        self._pieces = iter(())
        self.tokens = 0
        self.waiting: str | None = None  # the guide chat printed before the read it waits on
        self._stdin = io.BytesIO()
        self._end_turn = False
        self._pending: InputRequest | None = None  # the read chat waits on
        self._seen: Candidates | None = None  # the token view of the last sampled token
        self._viewable = False  # the last piece was a sampled token

    def start(self, options) -> int:
        """Begins a story or a chat and returns the seed it uses.

        `options` maps run.c's settings to text, as the URL carries them: temperature, topp, seed,
        steps, prompt, mode, system_prompt (a missing key or None means run.c's default: in chat,
        no system prompt means chat reads one first, as run.c without -y). `token_view` true
        records what the sampler saw for each token (`view()`).
        """
        values = options.to_py() if hasattr(options, "to_py") else dict(options)
        token_view = bool(values.pop("token_view", False))
        settings = Settings.parse(**{k: v for k, v in values.items() if v is not None})
        # A script or a widget attribute may hand over a lone surrogate: each is refused alike.
        reject_lone_surrogates(settings.prompt, "the prompt")
        reject_lone_surrogates(settings.system_prompt, "the system prompt")
        self._seen = None
        self.stats = Stats()
        self.tokens = 0
        self.waiting = None
        self._stdin = io.BytesIO()
        self._end_turn = False
        self._pending = None
        self._pieces = story(self.model, self.tokenizer, settings, stats=self.stats,
                             observe=self._see if token_view else None,
                             end_turn=self._turn_ended)
        return settings.seed

    def step(self) -> str | None:
        """The next piece of text (possibly ""), or None when the story is over. "" with `waiting`
        set means chat waits for a line: call `reply()`, then `step()` again."""
        item = self._pending or self._advance(None)
        self._pending = None
        while isinstance(item, InputRequest):
            line = read_line(self._stdin)
            if line is None:  # nothing typed yet: ask, and answer this request on reply()
                self.waiting = item.guide
                self._pending = item
                return ""
            item = self._advance(line)
        if item is None:
            return None
        if item.token >= 0:
            self.tokens += 1
        self._viewable = item.token >= 0  # a prompt or a chat guide has no sampler step to show
        return item.text

    def _advance(self, line: str | None) -> Piece | InputRequest | None:
        try:
            return self._pieces.send(line) if line is not None else next(self._pieces)
        except StopIteration:
            return None

    def reply(self, text: str) -> None:
        """Types a line (or several, separated by newlines) on chat's standard input."""
        end = self._stdin.tell()
        self._stdin.seek(0, io.SEEK_END)
        self._stdin.write(text.encode("utf-8", "surrogateescape") + b"\n")
        self._stdin.seek(end)
        self.waiting = None

    def end_turn(self) -> None:
        """Stop, in chat: the reply ends before its next token and chat asks for a line again."""
        self._end_turn = True

    def _turn_ended(self) -> bool:
        ended, self._end_turn = self._end_turn, False
        return ended

    def _see(self, seen: Candidates) -> None:
        self._seen = seen

    def view(self) -> dict | None:
        """The token view of the last sampled token (with `token_view`), then None until the next:
        its top candidates' text and probabilities, and how many of them top-p kept."""
        seen, self._seen = self._seen, None
        if seen is None or not self._viewable:
            return None
        pieces = self.tokenizer.pieces
        return {
            "token": seen.token,
            "greedy": seen.greedy,
            "nucleus": seen.nucleus,
            "candidates": [{"id": i, "text": pieces[i].decode("utf-8", "replace"), "p": p}
                           for i, p in zip(seen.ids, seen.probabilities)],
        }

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

