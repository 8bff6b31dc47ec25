"""The BPE tokenizer against the reference encoder's goldens, decoding, byte fallback, bad files."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import GOLDEN, MODELS, TOK512, TOKENIZER_32K
from llama2c import BOS, EOS, TextStream, Tokenizer, TokenizerError

GOLDEN_FILES = sorted((GOLDEN / "tokenizer").glob("*.json"))
CASES = [(f.stem, i, case, json.loads(f.read_text()))
         for f in GOLDEN_FILES for i, case in enumerate(json.loads(f.read_text())["cases"])]

_TOKENIZERS: dict[tuple[str, int], Tokenizer] = {}


def load(name: str, vocab_size: int) -> Tokenizer:
    key = (name, vocab_size)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = Tokenizer.load(MODELS / name, vocab_size)
    return _TOKENIZERS[key]


@pytest.fixture(scope="module")
def tok512(shared):
    return load("tok512.bin", 512)


@pytest.fixture(scope="module")
def tok32k(shared):
    return load("tokenizer.bin", 32000)


def test_golden_files_present(shared):
    assert {f.name for f in GOLDEN_FILES} >= {"tok512.json", "tokenizer.json"}
    assert len(CASES) >= 40


@pytest.mark.parametrize("stem,index,case,meta", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_encode_matches_reference(shared, stem, index, case, meta):
    assert meta["bos"] is True and meta["eos"] is False
    tok = load(meta["tokenizer"], meta["vocab_size"])
    assert tok.encode(case["text"], bos=True, eos=False) == case["ids"]
    # bytes in, same ids out; eos appends exactly one EOS; no bos drops exactly the BOS
    assert tok.encode(case["text"].encode("utf-8")) == case["ids"]
    assert tok.encode(case["text"], bos=True, eos=True) == case["ids"] + [EOS]
    assert tok.encode(case["text"], bos=False, eos=False) == case["ids"][1:]


def c_keeps(byte: int) -> bool:
    """C's isprint || isspace in the C locale: what safe_printf prints for a lone byte."""
    return 0x20 <= byte <= 0x7E or byte in b"\t\n\v\f\r"


def expected_decoding(tok: Tokenizer, text: str) -> bytes:
    """What run.c prints for encode(text): the text, less the characters that fell back to byte
    tokens whose lone byte safe_printf drops (every byte of a multi-byte character, and ASCII
    control characters). The dummy-prefix space is stripped after BOS, so it never shows."""
    vocab = set(tok.pieces)
    out = bytearray()
    for ch in text:
        data = ch.encode("utf-8")
        if data in vocab or (len(data) == 1 and c_keeps(data[0])):
            out += data
    return bytes(out)


def decode_all(tok: Tokenizer, ids: list[int]) -> bytes:
    return b"".join(tok.decode(prev, cur) for prev, cur in zip(ids, ids[1:]))


@pytest.mark.parametrize("stem,index,case,meta", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_decode_round_trip(shared, stem, index, case, meta):
    tok = load(meta["tokenizer"], meta["vocab_size"])
    ids, text = case["ids"], case["text"]
    assert ids[0] == BOS
    decoded = decode_all(tok, ids)
    assert decoded == expected_decoding(tok, text)
    fell_back = [t for t in ids[1:] if 3 <= t < 259]
    if not any(not c_keeps(t - 3) for t in fell_back):
        assert decoded == text.encode("utf-8")  # nothing dropped: the exact text comes back
        stream = TextStream()
        assert "".join(stream.push(tok.decode(p, c)) for p, c in zip(ids, ids[1:])) + \
            stream.flush() == text


def test_round_trip_cases_cover_dropping_and_not(shared):
    """Both branches above are exercised: some goldens lose fallback bytes, most do not."""
    dropped = [c["text"] for _, _, c, m in CASES
               if decode_all(load(m["tokenizer"], m["vocab_size"]), c["ids"]) != c["text"].encode()]
    assert "😀" in dropped and "日本語" in dropped
    assert len(dropped) < len(CASES) // 2


def test_dummy_prefix_space_is_stripped_only_after_bos(tok512, tok32k):
    for tok in (tok512, tok32k):
        ids = tok.encode("Once upon a time")
        first = tok.pieces[ids[1]]
        assert first.startswith(b" ")
        assert tok.decode(BOS, ids[1]) == first[1:]
        assert tok.decode(ids[1], ids[1]) == first  # after any other token it keeps its space
        assert tok.decode(EOS, ids[1]) == first
    # a text starting with a space keeps it: only the dummy prefix goes
    assert decode_all(tok32k, tok32k.encode("  leading spaces")) == b"  leading spaces"
    assert decode_all(tok512, tok512.encode(" ")) == b" "


@pytest.mark.parametrize("text", ["😀", "日", "ж€", "🦙x", "ωmega", "a日b😀c", "café ж"])
def test_byte_fallback_in_tok512(tok512, text):
    ids = tok512.encode(text)
    assert ids[0] == BOS
    # each character missing from tok512 becomes its UTF-8 bytes as <0xXX> tokens, id = byte + 3,
    # in order; the other characters never produce byte tokens
    fallback = [b for ch in text if ch.encode() not in tok512.pieces for b in ch.encode()]
    assert fallback, "every case has at least one character outside tok512"
    assert [t - 3 for t in ids if 3 <= t < 259] == fallback
    for byte in fallback:
        assert tok512.pieces[byte + 3] == b"<0x%02X>" % byte
    # what prints: the characters that are pieces; the fallback bytes are all >= 0x80 and dropped
    kept = "".join(ch for ch in text if ch.encode() in tok512.pieces)
    assert decode_all(tok512, ids) == kept.encode()


def test_byte_fallback_ids_exact(tok512, tok32k):
    space = tok512.pieces.index(b" ")
    assert tok512.encode("€") == [BOS, space, tok512.pieces.index("€".encode())]  # a piece: no fallback
    assert tok512.encode("😀") == [BOS, space, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]
    assert tok512.encode("日") == [BOS, space, 0xE6 + 3, 0x97 + 3, 0xA5 + 3]
    assert tok512.encode("\x07") == [BOS, space, 0x07 + 3]
    # the 32000-token vocabulary has 日 as a piece: no fallback there
    assert 0xE6 + 3 not in tok32k.encode("日")
    assert tok32k.encode("😀")[2:] == [0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]


def test_byte_pieces_decode_to_raw_bytes(tok512, tok32k):
    for tok in (tok512, tok32k):
        for byte in range(256):
            token = byte + 3
            assert tok.pieces[token] == b"<0x%02X>" % byte
            out = tok.decode(400, token)
            # safe_printf: a lone byte prints only if printable or whitespace
            assert out == (bytes([byte]) if c_keeps(byte) else b""), byte
            assert tok.decode(BOS, token) == out  # byte pieces have no space to strip
        assert tok.decode(400, 0x41 + 3) == b"A"
        assert tok.decode(400, 0x0A + 3) == b"\n"
        assert tok.decode(400, 0x09 + 3) == b"\t"
        assert tok.decode(400, 0x20 + 3) == b" "
        assert tok.decode(400, 0x00 + 3) == b""
        assert tok.decode(400, 0x7F + 3) == b""
        assert tok.decode(400, 0xE6 + 3) == b""


def test_multibyte_pieces_are_not_dropped(tok32k):
    ids = tok32k.encode("日本語")
    assert decode_all(tok32k, ids) == "日本語".encode()  # whole-character pieces print
    assert tok32k.decode(BOS, EOS) == b"\n</s>\n"


def test_text_stream_keeps_split_characters_whole():
    s = TextStream()
    assert s.push(b"a\xe6") == "a"
    assert s.push(b"\x97") == ""
    assert s.push(b"\xa5b") == "日b"
    assert s.push(b"\xf0\x9f") == ""
    assert s.push(b"\x98") == ""
    assert s.push(b"\x80") == "😀"
    assert s.flush() == ""
    t = TextStream()
    assert t.push(b"x\xf0\x9f") == "x"
    assert t.flush() == "\ufffd"  # an unfinished character at the end becomes one replacement
    u = TextStream()
    assert u.push(b"\xff") == "\ufffd"  # invalid bytes do not wedge the stream
    assert u.push(b"ok") == "ok"


def test_encode_stops_at_nul_and_handles_empty(tok512):
    assert tok512.encode("") == [BOS]
    assert tok512.encode("", bos=False) == []
    assert tok512.encode("", bos=False, eos=True) == [EOS]
    assert tok512.encode("ab\0cd") == tok512.encode("ab")  # run.c takes a C string


# -- tokenizer files that do not fit or are corrupt ------------------------------------------------


def test_tokenizer_too_small_for_model(shared):
    with pytest.raises(TokenizerError) as e:
        Tokenizer.load(TOK512, 32000)
    msg = str(e.value)
    assert "512" in msg and "32000" in msg and "tok512.bin" in msg and "\n" not in msg


def test_tokenizer_too_large_for_model(shared):
    with pytest.raises(TokenizerError) as e:
        Tokenizer.load(TOKENIZER_32K, 512)
    msg = str(e.value)
    assert "512" in msg and "tokenizer.bin" in msg and "more tokens" in msg and "\n" not in msg


def test_tokenizer_exact_fit_both(tok512, tok32k):
    assert tok512.vocab_size == 512 and len(tok512.pieces) == 512
    assert tok32k.vocab_size == 32000 and tok32k.max_token_length > 0


def test_truncated_tokenizer_bytes(shared):
    data = TOK512.read_bytes()
    offsets = sorted({0, 1, 3, 4, 5, 8, 11, 12, 13, 100, len(data) // 2, len(data) - 9,
                      len(data) - 2, len(data) - 1})
    for cut in offsets:
        with pytest.raises(TokenizerError) as e:
            Tokenizer.from_bytes(data[:cut], 512, name="cut.bin")
        msg = str(e.value)
        assert msg and "\n" not in msg, cut
        assert "cut.bin" in msg, msg


def test_corrupt_tokenizer_bytes(shared):
    data = bytearray(TOK512.read_bytes())
    first_len_at = 4 + 4  # max_token_length, then token 0's score, then its length
    cases = {
        "max_token_length 0": (0, struct.pack("<i", 0)),
        "max_token_length negative": (0, struct.pack("<i", -7)),
        "max_token_length huge": (0, struct.pack("<i", 1 << 30)),
        "negative piece length": (first_len_at, struct.pack("<i", -1)),
        "piece longer than max": (first_len_at, struct.pack("<i", 100)),
        "piece past the end": (first_len_at, struct.pack("<i", 2**31 - 1)),
    }
    for what, (offset, patch) in cases.items():
        bad = bytes(data[:offset] + patch + data[offset + len(patch):])
        with pytest.raises(TokenizerError) as e:
            Tokenizer.from_bytes(bad, 512, name="bad.bin")
        assert "bad.bin" in str(e.value) and "\n" not in str(e.value), what


def test_bad_vocab_size_and_missing_file(tmp_path, shared):
    with pytest.raises(TokenizerError, match="vocab_size"):
        Tokenizer.from_bytes(TOK512.read_bytes(), 0)
    with pytest.raises(TokenizerError, match="cannot read tokenizer"):
        Tokenizer.load(tmp_path / "nope.bin", 512)
    with pytest.raises(TokenizerError, match="cannot read tokenizer"):
        Tokenizer.load(tmp_path, 512)  # a directory


def tokenizer_bytes(pieces: list[bytes], scores=None) -> bytes:
    """A llama2.c tokenizer.bin holding these pieces."""
    scores = scores or [0.0] * len(pieces)
    out = struct.pack("<i", max(len(p) for p in pieces))
    for piece, score in zip(pieces, scores):
        out += struct.pack("<fi", score, len(piece)) + piece
    return out


def test_text_needing_missing_byte_tokens():
    """A vocabulary with only <0x00>..<0x7F> cannot encode non-ASCII text: a clear error."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(128)]
    small = Tokenizer.from_bytes(tokenizer_bytes(pieces + [b" ", b"a"]), len(pieces) + 2)
    assert small.encode("a a") == [BOS, 131, 132, 131, 132]
    assert small.encode("b") == [BOS, 131, ord("b") + 3]
    with pytest.raises(TokenizerError, match="byte-fallback"):
        small.encode("日")
    no_space = Tokenizer.from_bytes(tokenizer_bytes(pieces + [b"a"]), len(pieces) + 1)
    assert no_space.encode("") == [BOS]
    with pytest.raises(TokenizerError, match="' '"):
        no_space.encode("a")


def test_merges_follow_scores():
    """BPE merges the best-scoring pair first; equal scores merge the leftmost pair first."""
    base = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)]
    extra = [b" ", b"a", b"b", b"ab", b" a", b"ba"]
    ids = {p: len(base) + i for i, p in enumerate(extra)}
    tok = Tokenizer.from_bytes(tokenizer_bytes(base + extra, [0.0] * len(base) + [0, 0, 0, 5, 1, 3]),
                               len(base) + len(extra))
    # " ab": pairs " a"(1) and "ab"(5): "ab" wins, then " "+"ab" is not a piece
    assert tok.encode("ab") == [BOS, ids[b" "], ids[b"ab"]]
    # " bab": pairs " b"(none) "ba"(3) "ab"(5): "ab" wins first
    assert tok.encode("bab") == [BOS, ids[b" "], ids[b"b"], ids[b"ab"]]
    # " ba": "ba"(3) beats nothing else
    assert tok.encode("ba") == [BOS, ids[b" "], ids[b"ba"]]
    tie = Tokenizer.from_bytes(tokenizer_bytes(base + extra, [0.0] * len(base) + [0, 0, 0, 2, 2, 2]),
                               len(base) + len(extra))
    # " aba": " a"(2) "ab"(2) "ba"(2) all tie: the leftmost, " a", merges first
    assert tie.encode("aba") == [BOS, ids[b" a"], ids[b"ba"]]


# -- the O(n log n) merges equal run.c's O(n^2) loop -----------------------------------------------


def run_c_merges(tok: Tokenizer, tokens: list[int]) -> list[int]:
    """run.c's merge loop, transcribed: rescan every pair for each merge, keep the first strictly
    better score from a floor of -1e10 (float32 comparisons), merge it, until no pair merges."""
    import numpy as np

    scores = tok.scores.tolist()  # float32 values exactly: comparisons are float32's
    tokens = list(tokens)
    while True:
        best_score, best_id, best_idx = float(np.float32(-1e10)), -1, -1
        for i in range(len(tokens) - 1):
            merged = tok._ids.get(tok.pieces[tokens[i]] + tok.pieces[tokens[i + 1]], -1)
            if merged != -1 and scores[merged] > best_score:
                best_score, best_id, best_idx = scores[merged], merged, i
        if best_idx == -1:
            return tokens
        tokens[best_idx:best_idx + 2] = [best_id]


def unmerged(tok: Tokenizer, text: str) -> list[int]:
    """The tokens encode() starts merging from (BOS, the dummy prefix, code points)."""
    merges, tok._merge = tok._merge, lambda tokens: iter(())
    try:
        return tok.encode(text)
    finally:
        del tok._merge
        assert tok._merge == merges


def random_texts(seed: int, count: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz     ,.!?'\n\tAEIOU0123456789") + \
        ["é", "ж", "日本", "😀", "\u00a0", "ab", "aaa", "the ", "ing ", "Once upon a time"]
    texts = []
    for i in range(count):
        n = int(rng.integers(1, 300 if i % 8 else 1500))
        texts.append("".join(rng.choice(alphabet, n)))
    texts += ["a" * 1200, "ab" * 500, " " * 800, "😀" * 200]  # long runs: many equal scores
    return texts


@pytest.mark.parametrize("name,vocab", [("tok512.bin", 512), ("tokenizer.bin", 32000)])
def test_merges_equal_run_c_on_goldens_and_random_texts(shared, name, vocab):
    """The heap-based merges give run.c's merges exactly (before: the same O(n^2) loop as run.c;
    a 127 KB prompt took 10.9 s to encode, now well under a second)."""
    tok = load(name, vocab)
    texts = [case["text"] for stem, _, case, meta in CASES if meta["tokenizer"] == name]
    texts += random_texts(seed=vocab, count=40)
    for text in texts:
        assert tok.encode(text) == run_c_merges(tok, unmerged(tok, text)), text[:80]


def test_merges_equal_run_c_when_every_score_ties(shared):
    """All scores equal: every choice is decided by the leftmost rule alone."""
    data = bytearray((MODELS / "tok512.bin").read_bytes())
    tok = Tokenizer.from_bytes(bytes(data), 512)
    flat = Tokenizer([*tok.pieces], tok.scores * 0, tok.max_token_length)
    for text in random_texts(seed=3, count=30):
        assert flat.encode(text) == run_c_merges(flat, unmerged(flat, text)), text[:80]


def test_encoding_pauses_so_a_long_prompt_can_be_stopped(tok512):
    """encode_steps() yields between slices of work: the page checks for Stop at each pause."""
    from llama2c.tokenizer import ENCODE_SLICE

    text = "Once upon a time, there was a little girl. " * 2400  # 105 KB
    steps = tok512.encode_steps(text)
    pauses = 0
    while True:
        try:
            next(steps)
            pauses += 1
        except StopIteration as done:
            tokens = done.value
            break
    assert tokens == tok512.encode(text)
    assert pauses >= len(text) // ENCODE_SLICE
    stopped = tok512.encode_steps(text)
    next(stopped)
    stopped.close()  # what a Stop does: the generator is dropped part way, without an error


# -- hostile tokenizer files and text --------------------------------------------------------------


def test_load_reads_no_more_than_a_tokenizer_can_hold(tmp_path, shared):
    """`-z /dev/zero` read until memory ran out (test_bad_input runs that under a memory limit). A
    long file with a valid header is read only up to what vocab_size tokens can hold."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.write(struct.pack("<i", 4) + bytes(16 << 20))  # 16 MB: 512 tokens hold at most 6 KB
    with pytest.raises(TokenizerError, match="more tokens than the model's vocab_size 512: it is longer than 512 tokens of at most 4 bytes"):
        Tokenizer.load(big, 512)


@pytest.mark.parametrize("surrogate", ["\ud800", "\udbff", "\udc00", "\udc80", "\udfff"])
def test_lone_surrogates_from_javascript_are_refused_alike(tok512, surrogate):
    """A page's prompt with a lone surrogate: before, \\udc80 became byte 0x80 and \\ud800 raised
    a raw codec error; now both are one readable error, in the browser Session."""
    from llama2c.browser import Session

    session = Session.__new__(Session)  # only start()'s checks are under test, before the model
    with pytest.raises(TokenizerError, match=r"lone UTF-16 surrogate \(U\+D[89A-F][0-9A-F]{2} at "
                                             r"character 3\)"):
        Session.start(session, {"prompt": "abc" + surrogate + "d", "seed": "1"})
    if surrogate < "\udc80":  # not an escaped command-line byte: the tokenizer refuses it too
        with pytest.raises(TokenizerError, match="lone UTF-16 surrogate"):
            tok512.encode("abc" + surrogate)


def test_generate_pauses_while_encoding_a_long_prompt(tok512, shared):
    """The page's loop pulls one piece at a time and checks for Stop in between: a 100 KB prompt's
    encoding hands back empty pieces before any forward pass, and closing the generator there
    ends it. A short prompt has no pauses (the goldens' pieces are unchanged)."""
    from conftest import STORIES260K
    from llama2c import Sampler, Stats
    from llama2c.generate import generate
    from llama2c.native import NativeModel

    with NativeModel.open(STORIES260K) as model:
        stats = Stats()
        story = generate(model, tok512, Sampler(512, 0.0, 0.9, 1), "Once upon a time. " * 5700,
                         8, stats)
        first = next(story)
        assert (first.data, first.text, first.token) == (b"", "", -1)
        assert stats.forward_calls == 0
        story.close()
        short = list(generate(model, tok512, Sampler(512, 0.0, 0.9, 1), "Once upon a time", 8))
        assert all(p.data for p in short[:3])
