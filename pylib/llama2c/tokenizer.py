"""llama2.c's BPE tokenizer: tokenizer.bin, encode() and decode(), byte for byte as run.c does them.

tokenizer.bin holds an int32 max_token_length, then for each of vocab_size tokens a float32 merge
score, an int32 byte length and the piece's bytes. The vocab size is not stored: it comes from the
model. Pieces are compared as C strings (up to a NUL byte), exactly as run.c compares them.
"""

from __future__ import annotations

import codecs
import re
import struct
from pathlib import Path

import numpy as np

from .errors import TokenizerError

BOS = 1  # beginning of sequence
EOS = 2  # end of sequence

MAX_PIECE_BYTES = 1 << 16

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


class Tokenizer:
    """Encodes text to token ids and decodes ids to bytes, exactly like llama2.c's run.c."""

    def __init__(self, pieces: list[bytes], scores: np.ndarray, max_token_length: int):
        self.pieces = [_c_string(p) for p in pieces]
        self.scores = np.asarray(scores, dtype=np.float32)
        self.vocab_size = n = len(pieces)
        self.max_token_length = max_token_length
        # piece -> id; a piece that repeats maps to its lowest id (the reversed zip writes it last)
        self._ids: dict[bytes, int] = dict(zip(reversed(self.pieces), range(n - 1, -1, -1)))
        # decode() results, filled in as tokens are first decoded (the page starts sooner):
        # [piece after any token], [piece after BOS (leading space stripped)]
        self._after_other: list[bytes | None] = [None] * n
        self._after_bos: list[bytes | None] = [None] * n

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, vocab_size: int) -> "Tokenizer":
        """Reads a llama2.c tokenizer.bin holding exactly vocab_size tokens (the model's)."""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise TokenizerError(f"cannot read tokenizer {path}: {e.strerror or e}") from None
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
        # surrogateescape: the bytes of a command-line argument that is not valid UTF-8
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
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
        if any(t >= self.vocab_size for t in tokens):
            raise TokenizerError("text needs byte-fallback tokens this tokenizer does not have")

        self._merge(tokens)
        if eos:
            tokens.append(EOS)
        return tokens

    def _pair_score(self, a: int, b: int) -> tuple[float, int]:
        merged = self._id(self.pieces[a] + self.pieces[b])
        return (float(self.scores[merged]), merged) if merged >= 0 else (-np.inf, -1)

    def _merge(self, tokens: list[int]) -> None:
        """Repeatedly merges the adjacent pair whose merged piece scores highest (earliest wins)."""
        n = len(tokens)
        if n < 2:
            return
        scores = np.full(n - 1, -np.inf, np.float32)
        merged = np.full(n - 1, -1, np.int64)
        for i in range(n - 1):
            scores[i], merged[i] = self._pair_score(tokens[i], tokens[i + 1])
        while len(tokens) > 1:
            best = int(np.argmax(scores))  # argmax returns the first of equal maxima
            if not scores[best] > np.float32(-1e10):  # run.c starts from best_score = -1e10
                break
            tokens[best] = int(merged[best])
            del tokens[best + 1]
            scores = np.delete(scores, best)
            merged = np.delete(merged, best)
            for i in (best - 1, best):  # only the pairs touching the new token change
                if 0 <= i < len(tokens) - 1:
                    scores[i], merged[i] = self._pair_score(tokens[i], tokens[i + 1])

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
