"""The generation loops, once for every backend: run.c's generate() and chat().

Both are generators of `Piece`s: exactly the bytes run.c prints, in order, without run.c's final
newline (the command line adds it; the page shows the story without it). Each step runs one
forward pass, so a consumer that stops pulling stops generation within one token. A long prompt's
encoding pauses too, with empty Pieces (b"", ""), so that it can be stopped as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Generator, Iterator

from .backend import Backend
from .params import Settings
from .sampler import Candidates, Sampler
from .tokenizer import BOS, EOS, TextStream, Tokenizer

CHAT_SYSTEM_TEMPLATE = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"
CHAT_USER_TEMPLATE = "[INST] {user} [/INST]"


@dataclass
class Piece:
    """Something run.c prints: a decoded token (token >= 0) or a chat prompt/newline (token -1)."""

    data: bytes  # the exact bytes run.c writes to stdout
    text: str  # `data` decoded; a UTF-8 character split across pieces arrives whole, in the later one
    token: int = -1
    pos: int = -1


@dataclass
class InputRequest:
    """Chat asks for a line of input: `send()` the line to the generator, or None for end of input."""

    guide: str  # what run.c prints before reading, e.g. "User: "


@dataclass
class Stats:
    """Timing as run.c measures it: the clock starts after the first forward pass and print."""

    pos: int = 0
    start: float = 0.0
    end: float = 0.0
    forward_seconds: float = 0.0  # time inside backend.forward(), for overhead reports
    forward_calls: int = 0
    sample_seconds: float = 0.0  # time inside sampler.sample()

    def tick(self) -> None:
        """After a position's forward pass (and, in generate, its print): the clock starts at the
        first call, as run.c's does after the first iteration, which can be slower."""
        now = time.perf_counter()
        if self.start == 0.0:
            self.start = now
        self.end = now

    @property
    def tokens_per_second(self) -> float | None:
        """run.c's `achieved tok/s`: (pos - 1) / elapsed, reported only when pos > 1."""
        if self.pos <= 1 or self.end <= self.start:
            return None
        return (self.pos - 1) / (self.end - self.start)


@dataclass
class _Pieces:
    """Makes Pieces from the bytes run.c prints, keeping the UTF-8 decoding state across them."""

    stream: TextStream = field(default_factory=TextStream)

    def of(self, data: bytes, token: int = -1, pos: int = -1) -> Piece:
        return Piece(data, self.stream.push(data), token, pos)


def _forward(model: Backend, token: int, pos: int, stats: Stats):
    t0 = time.perf_counter()
    logits = model.forward(token, pos)
    stats.forward_seconds += time.perf_counter() - t0
    stats.forward_calls += 1
    return logits


def _sample(sampler: Sampler, logits, stats: Stats) -> int:
    t0 = time.perf_counter()
    token = sampler.sample(logits)
    stats.sample_seconds += time.perf_counter() - t0
    return token


def _encode(tokenizer: Tokenizer, text: str | bytes) -> Generator[Piece, None, list[int]]:
    """The prompt's token ids (with BOS), yielding an empty Piece at each pause of the encoding: a
    100 KB prompt takes seconds to encode in the page, and a consumer that stops pulling (Stop)
    stops the encoding there too."""
    steps = tokenizer.encode_steps(text, bos=True, eos=False)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        yield Piece(b"", "")


def resolve_steps(steps: int, seq_len: int) -> int:
    """run.c: 0, negative or more than seq_len steps mean seq_len."""
    return seq_len if steps <= 0 or steps > seq_len else steps


def generate(model: Backend, tokenizer: Tokenizer, sampler: Sampler, prompt: str | bytes | None,
             steps: int, stats: Stats | None = None) -> Iterator[Piece]:
    """run.c's generate(): force the prompt's tokens, then sample until `steps` or BOS.

    `steps` counts the prompt tokens too. Yields what run.c prints, one piece per token.
    """
    stats = stats if stats is not None else Stats()
    steps = resolve_steps(steps, model.config.seq_len)
    prompt_tokens = yield from _encode(tokenizer, prompt or "")
    pieces = _Pieces()
    token = prompt_tokens[0]
    pos = 0
    while pos < steps:
        logits = _forward(model, token, pos, stats)
        if pos < len(prompt_tokens) - 1:
            next_token = prompt_tokens[pos + 1]  # still in the prompt: force its next token
        else:
            next_token = _sample(sampler, logits, stats)
        pos += 1
        stats.pos = pos
        if next_token == BOS:  # BOS delimits sequences: the story is over
            break
        yield pieces.of(tokenizer.decode(token, next_token), next_token, pos)
        token = next_token
        stats.tick()
    stats.end = time.perf_counter()


def chat(model: Backend, tokenizer: Tokenizer, sampler: Sampler, user_prompt: str | None,
         system_prompt: str | None, steps: int, stats: Stats | None = None,
         end_turn: Callable[[], bool] | None = None,
         ) -> Generator[Piece | InputRequest, str | None, None]:
    """run.c's chat(): Llama 2 chat turns, the assistant's reply ending on EOS.

    When run.c would read stdin, this yields an InputRequest; `send()` the line (without its
    newline) or None for end of input, in which case the previous text is kept, as run.c's
    fgets leaves its buffer unchanged. A given `system_prompt` ("" included) is never asked for.

    `end_turn` (the page's Stop) is asked before each assistant token: True ends the reply there,
    as an EOS would ("\n", then `User: `). run.c has no such thing; without it this is run.c.
    """
    stats = stats if stats is not None else Stats()
    steps = resolve_steps(steps, model.config.seq_len)
    pieces = _Pieces()
    system, user = "", ""
    prompt_tokens: list[int] = []
    user_idx = 0
    user_turn = True
    next_token = 0
    pos = 0
    while pos < steps:
        if end_turn is not None and not user_turn and end_turn():
            user_turn = True
            yield pieces.of(b"\n")
        if user_turn:
            if pos == 0:
                if system_prompt is None:
                    yield pieces.of(b"Enter system prompt (optional): ")
                    line = yield InputRequest("Enter system prompt (optional): ")
                    system = line if line is not None else system
                else:
                    system = system_prompt
            if pos == 0 and user_prompt is not None:
                user = user_prompt
            else:
                yield pieces.of(b"User: ")
                line = yield InputRequest("User: ")
                user = line if line is not None else user
            if pos == 0 and system:
                rendered = CHAT_SYSTEM_TEMPLATE.format(system=system, user=user)
            else:
                rendered = CHAT_USER_TEMPLATE.format(user=user)
            prompt_tokens = yield from _encode(tokenizer, rendered)
            user_idx = 0
            user_turn = False
            yield pieces.of(b"Assistant: ")

        if user_idx < len(prompt_tokens):
            token = prompt_tokens[user_idx]  # still in the user's turn: force its tokens
            user_idx += 1
        else:
            token = next_token
        if token == EOS:  # EOS ends the assistant's turn
            user_turn = True

        logits = _forward(model, token, pos, stats)
        next_token = _sample(sampler, logits, stats)
        pos += 1
        stats.pos = pos
        stats.tick()

        if user_idx >= len(prompt_tokens) and next_token != EOS:
            yield pieces.of(tokenizer.decode(token, next_token), next_token, pos)
        if next_token == EOS:
            yield pieces.of(b"\n")


def story(model: Backend, tokenizer: Tokenizer, settings: Settings,
          read_input: Callable[[str], str | None] | None = None, stats: Stats | None = None,
          observe: Callable[[Candidates], None] | None = None,
          end_turn: Callable[[], bool] | None = None,
          ) -> Generator[Piece | InputRequest, str | None, None]:
    """A story as run.c's main() sets it up, for the command line and the page alike: the sampler
    from the settings, then generate() or chat().

    read_input(guide) answers chat's reads (None: end of input), as the command line does from
    standard input. Without it chat's reads come out as InputRequests to `send()` a line to, as
    the page does once the user has typed one. `observe` sees each sampling step (the token
    view); `end_turn` is chat's Stop (see chat()).
    """
    sampler = Sampler(model.config.vocab_size, settings.temperature, settings.topp, settings.seed,
                      model.expf, model)
    sampler.observe = observe
    if settings.mode == "generate":
        return generate(model, tokenizer, sampler, settings.prompt, settings.steps, stats)
    turns = chat(model, tokenizer, sampler, settings.prompt, settings.system_prompt,
                 settings.steps, stats, end_turn)
    return answer_inputs(turns, read_input) if read_input is not None else turns


def read_line(stdin: BinaryIO) -> str | None:
    """run.c's read_stdin: fgets of up to 511 bytes, newline stripped; None at end of input."""
    line = stdin.readline(511)
    if not line:
        return None
    return line.removesuffix(b"\n").decode("utf-8", "surrogateescape")


def answer_inputs(items: Generator[Piece | InputRequest, str | None, None],
                  read_line) -> Iterator[Piece]:
    """Drives a chat generator, answering each InputRequest with read_line(guide) (None = EOF)."""
    try:
        item = next(items)
        while True:
            if isinstance(item, InputRequest):
                item = items.send(read_line(item.guide))
            else:
                yield item
                item = next(items)
    except StopIteration:
        return
