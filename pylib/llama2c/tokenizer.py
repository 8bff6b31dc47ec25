"""llama2.c's BPE tokenizer: tokenizer.bin, encode() and decode(), byte for byte as run.c does them.

tokenizer.bin holds an int32 max_token_length, then for each of vocab_size tokens a float32 merge
score, an int32 byte length and the piece's bytes. The vocab size is not stored: it comes from the
model. Pieces are compared as C strings (up to a NUL byte), exactly as run.c compares them.
"""

from __future__ import annotations

import codecs
import heapq
import re
import struct
from pathlib import Path
from typing import Generator, Iterator

import numpy as np

from .errors import TokenizerError

BOS = 1  # beginning of sequence
EOS = 2  # end of sequence

MAX_PIECE_BYTES = 1 << 16

# encode_steps() pauses after this many code points or merges: a few milliseconds of work in the
# page, where a Stop can end a long prompt's encoding at each pause.
ENCODE_SLICE = 2048
_MERGE_FLOOR = float(np.float32(-1e10))  # run.c's initial best_score: no merge scores at or below

# run.c parses pieces with sscanf(piece, "<0x%02hhX>"): up to two hex digits after "<0x",
# after optional C whitespace, with an optional sign that counts toward the width.
_BYTE_PIECE = re.compile(rb"<0x[ \t\n\v\f\r]*([+-][0-9A-Fa-f]|[0-9A-Fa-f]{1,2})")


def _c_string(piece: bytes) -> bytes:
    """The piece as run.c sees it: a C string ends at its first NUL."""
    nul = piece.find(b"\0")
    return piece if nul < 0 else piece[:nul]


def _printable(piece: bytes) -> bytes:
    """run.c's safe_printf: a lone byte that is neither printable nor whitespace prints nothing."""
    if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or piece[0] in b"\t\n\v\f\r"):
        return b""
    return piece


def _decoded(piece: bytes) -> bytes:
    """What run.c's decode() returns for a piece (after any BOS space strip), then safe_printf."""
    match = _BYTE_PIECE.match(piece)
    if match:
        byte = int(match.group(1), 16) & 0xFF
        piece = _c_string(bytes([byte]))  # byte 0 is an empty C string
    return _printable(piece)


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_message(text: str, index: int, what: str = "the text") -> str:
    return (f"{what} holds a lone UTF-16 surrogate (U+{ord(text[index]):04X} at character "
            f"{index}), which is not a character: remove it or pair it")


def reject_lone_surrogates(text: str | None, what: str) -> None:
    """Raises TokenizerError if a string from JavaScript holds a lone surrogate (U+D800..U+DFFF).

    JavaScript strings may; UTF-8 cannot encode them. (The command line is different: Python's
    surrogateescape turns a non-UTF-8 byte of an argument into U+DC80..U+DCFF, which encode()
    turns back into that byte, as run.c would read it.)
    """
    match = _SURROGATE.search(text) if text else None
    if match:
        raise TokenizerError(lone_surrogate_message(text, match.start(), what))


def limit_piece(head: bytes) -> int:
    """The max_token_length a tokenizer's first 4 bytes declare, clamped to what is valid."""
    if len(head) < 4:
        return 0
    (declared,) = struct.unpack("<i", head)
    return declared if 0 < declared <= MAX_PIECE_BYTES else 0


def max_tokenizer_bytes(head: bytes, vocab_size: int) -> int:
    """The largest valid tokenizer.bin for vocab_size tokens, given its first 4 bytes: each token
    is a float32 score, an int32 length and at most max_token_length bytes."""
    return 4 + max(vocab_size, 0) * (8 + limit_piece(head))


class Tokenizer:
    """Encodes text to token ids and decodes ids to bytes, exactly like llama2.c's run.c."""

    def __init__(self, pieces: list[bytes], scores: np.ndarray, max_token_length: int):
        self.pieces = [_c_string(p) for p in pieces]
        self.scores = np.asarray(scores, dtype=np.float32)
        self.vocab_size = n = len(pieces)
        self.max_token_length = max_token_length
        self._score_list: list[float] = self.scores.tolist()  # exact float32 values, fast to index
        # piece -> id; a piece that repeats maps to its lowest id (the reversed zip writes it last)
        self._ids: dict[bytes, int] = dict(zip(reversed(self.pieces), range(n - 1, -1, -1)))
        # decode() results, filled in as tokens are first decoded (the page starts sooner):
        # [piece after any token], [piece after BOS (leading space stripped)]
        self._after_other: list[bytes | None] = [None] * n
        self._after_bos: list[bytes | None] = [None] * n

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, vocab_size: int) -> "Tokenizer":
        """Reads a llama2.c tokenizer.bin holding exactly vocab_size tokens (the model's).

        Reads no more than such a tokenizer can hold (its max_token_length bounds every piece), so
        a huge or endless file (`-z /dev/zero`) is refused instead of read into memory.
        """
        try:
            with open(path, "rb") as f:
                head = f.read(4)
                limit = max_tokenizer_bytes(head, vocab_size)
                # one byte more than the limit shows a longer file; a bad header reads no further
                data = head + f.read(limit - len(head) + 1) if limit_piece(head) else head
        except OSError as e:
            raise TokenizerError(f"cannot read tokenizer {path}: {e.strerror or e}") from None
        if len(data) > limit:
            raise TokenizerError(
                f"{path} holds more tokens than the model's vocab_size {vocab_size}: it is longer "
                f"than {vocab_size} tokens of at most {limit_piece(head)} bytes can be "
                f"({limit:,} bytes), so it does not fit the model")
        return cls.from_bytes(data, vocab_size, name=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, vocab_size: int, name: str = "tokenizer") -> "Tokenizer":
        """Parses tokenizer.bin bytes; raises TokenizerError if they do not fit vocab_size."""
        if vocab_size <= 0:
            raise TokenizerError(f"vocab_size must be positive, got {vocab_size}")
        if len(data) < 4:
            raise TokenizerError(f"{name}: {len(data)} bytes is too short for a tokenizer")
        (max_token_length,) = struct.unpack_from("<i", data, 0)
        if not 0 < max_token_length <= MAX_PIECE_BYTES:
            raise TokenizerError(f"{name}: bad max_token_length {max_token_length}")
        pieces: list[bytes] = []
        scores: list[float] = []
        entry = struct.Struct("<fi").unpack_from  # (score, length) before each piece
        offset, size = 4, len(data)
        for i in range(vocab_size):
            if offset + 8 > size:
                raise TokenizerError(
                    f"{name} holds {i} tokens but the model's vocab_size is {vocab_size}: "
                    "this tokenizer does not fit the model")
            score, length = entry(data, offset)
            offset += 8
            if not 0 <= length <= max_token_length or offset + length > size:
                raise TokenizerError(f"{name}: token {i} has a bad length {length}")
            scores.append(score)
            pieces.append(data[offset:offset + length])
            offset += length
        if offset != size:
            raise TokenizerError(
                f"{name} has {size - offset} bytes after token {vocab_size - 1}: it holds more "
                f"tokens than the model's vocab_size {vocab_size}, so it does not fit the model")
        return cls(pieces, np.array(scores, np.float32), max_token_length)

    # -- encoding -----------------------------------------------------------------------------

    def _id(self, piece: bytes) -> int:
        return self._ids.get(piece, -1)

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        """run.c's encode(): dummy prefix, UTF-8 code points, byte fallback, then BPE merges."""
        steps = self.encode_steps(text, bos, eos)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def encode_steps(self, text: str | bytes, bos: bool = True,
                     eos: bool = False) -> Generator[None, None, list[int]]:
        """encode() as a generator that pauses (yields None) after every ENCODE_SLICE steps of work
        and returns the token ids: a consumer can stop a long prompt's encoding part way."""
        # surrogateescape: the bytes of a command-line argument that is not valid UTF-8
        try:
            data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
        except UnicodeEncodeError as e:  # a lone surrogate that stands for no byte: \ud800
            raise TokenizerError(lone_surrogate_message(text, e.start)) from None
        data = _c_string(data)  # run.c takes a C string
        tokens: list[int] = [BOS] if bos else []
        if data:
            space = self._id(b" ")
            if space < 0:
                raise TokenizerError("the tokenizer has no ' ' piece for the dummy prefix")
            tokens.append(space)

        # Look up each UTF-8 code point (at most 4 bytes); unknown ones fall back to byte tokens.
        buf = bytearray()
        for i, c in enumerate(data):
            if c & 0xC0 != 0x80:
                buf.clear()  # a new code point starts
            buf.append(c)
            following = data[i + 1] if i + 1 < len(data) else 0
            if following & 0xC0 == 0x80 and len(buf) < 4:
                continue
            token = self._id(bytes(buf))
            if token >= 0:
                tokens.append(token)
            else:
                tokens.extend(b + 3 for b in buf)  # <0x00> is token 3
            buf.clear()
            if i % ENCODE_SLICE == ENCODE_SLICE - 1:
                yield
        if any(t >= self.vocab_size for t in tokens):
            raise TokenizerError("text needs byte-fallback tokens this tokenizer does not have")

        yield from self._merge(tokens)
        if eos:
            tokens.append(EOS)
        return tokens

    def _merge(self, tokens: list[int]) -> Iterator[None]:
        """run.c's merges, in place: while some adjacent pair's concatenation is a piece, merge the
        pair whose piece scores highest, the leftmost of equal scores (run.c scans left to right
        and keeps the first strictly better score, from a floor of -1e10).

        run.c rescans the whole sequence for every merge, O(n^2): a 127 KB prompt took 10.9 s.
        Here candidate pairs sit in a heap keyed (-score, position of the left token), tokens in a
        linked list, and each merge adds the two pairs it creates; entries whose tokens changed
        since are skipped when they surface. O(n log n), same merges in the same order.
        """
        n = len(tokens)
        if n < 2:
            return
        pieces, ids, scores = self.pieces, self._ids, self._score_list
        right = list(range(1, n + 1))  # the next live token, n at the end
        left = list(range(-1, n - 1))  # the previous live token, -1 at the start
        version = [0] * n  # bumped when a token changes (merged into) or is merged away
        heap: list[tuple[float, int, int, int, int, int]] = []

        def push(i: int) -> None:  # the pair (i, right[i]), if its concatenation is a piece
            j = right[i]
            if j < n:
                merged = ids.get(pieces[tokens[i]] + pieces[tokens[j]], -1)
                if merged >= 0 and scores[merged] > _MERGE_FLOOR:  # (a NaN score never merges)
                    heapq.heappush(heap, (-scores[merged], i, j, version[i], version[j], merged))

        for i in range(n - 1):
            push(i)
        work = 0
        while heap:
            _, i, j, vi, vj, merged = heapq.heappop(heap)
            if right[i] != j or version[i] != vi or version[j] != vj:
                continue  # stale: a token of this pair has changed since it was pushed
            tokens[i] = merged  # merge j into i
            version[i] += 1
            version[j] += 1
            right[i] = right[j]
            if right[j] < n:
                left[right[j]] = i
            if left[i] >= 0:
                push(left[i])
            push(i)
            work += 1
            if work % ENCODE_SLICE == 0:
                yield
        live, i = [], 0
        while i < n:
            live.append(tokens[i])
            i = right[i]
        tokens[:] = live

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, prev_token: int, token: int) -> bytes:
        """The bytes run.c prints for `token` following `prev_token` (decode() + safe_printf)."""
        table = self._after_bos if prev_token == BOS else self._after_other
        piece = table[token]
        if piece is None:
            piece = self.pieces[token]
            if prev_token == BOS and piece[:1] == b" ":
                piece = piece[1:]
            piece = table[token] = _decoded(piece)
        return piece


class TextStream:
    """Turns decoded byte pieces into text, holding back a UTF-8 character split across pieces."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
