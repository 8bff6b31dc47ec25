"""`llama2c vocab`: the sentencepiece model it trains and the tokenizer.bin it writes encode alike.

llama2.c trains the vocabulary with sentencepiece and pretokenizes with sentencepiece, but run.c
(and so llama2c.Tokenizer and the page) encodes prompts with its own BPE over tokenizer.bin. This
holds the two together on a vocabulary trained here on a corpus this test makes: the story grammar,
paragraphs of the project's own text, and lines of non-ASCII words (accents, Cyrillic, Greek, CJK,
emoji), so merges, byte fallback and multi-byte code points are all exercised.

The one class that differs by design: **runs of spaces, and leading or trailing spaces.**
sentencepiece's normalizer (remove_extra_whitespaces, on by default and left on by llama2.c's
train_vocab) collapses every run of spaces to one and drops spaces at both ends before encoding;
run.c's encode() keeps every space (a leading space becomes its own token after the dummy prefix).
So for any text, sentencepiece's ids equal run.c's ids of the whitespace-normalized text, and they
equal run.c's ids of the text itself exactly when the text has no such run. Pretokenized training
data is not affected: documents are stripped, and TinyStories has no runs of spaces worth a token.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

import sentencepiece as spm  # the train extra, which `invoke setup` installs
import storygrammar
from conftest import GOLDEN, ROOT
from llama2c.tokenizer import BOS, Tokenizer

VOCAB = 1024
NON_ASCII = ["naïve", "café", "Ünïcödé", "tèxt", "日本語", "こんにちは", "😀", "👍🏽", "Straße", "año",
             "façade", "Zürich", "ελληνικά", "русский", "The year 2024 had 366 days."]


def normalize_spaces(text: str) -> str:
    """What sentencepiece's remove_extra_whitespaces does to spaces."""
    return re.sub(" +", " ", text).strip(" ")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """(corpus lines, sentencepiece processor, our Tokenizer) for a 1024-token vocabulary."""
    folder = tmp_path_factory.mktemp("tokenizer")
    docs = storygrammar.stories(300, seed=5)
    for path in (ROOT / "README.md", ROOT / "pylib/llama2c/tokenizer.py", ROOT / "pylib/llama2c/cli.py"):
        docs += [block.strip() for block in path.read_text().split("\n\n") if block.strip()]
    rng = random.Random(1)
    docs += [" ".join(rng.choice(NON_ASCII) for _ in range(rng.randint(3, 12))) for _ in range(200)]
    (folder / "corpus.txt").write_text("\n\n".join(docs), encoding="utf-8")
    data = folder / "data"
    for args in (["data", "text", folder / "corpus.txt", "--data", data],
                 ["vocab", "--size", VOCAB, "--data", data]):
        proc = subprocess.run([sys.executable, "-m", "llama2c", *map(str, args)], capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()
    lines = [line for doc in docs for line in doc.split("\n") if line]
    processor = spm.SentencePieceProcessor(model_file=str(data / f"tok{VOCAB}.model"))
    return lines, processor, Tokenizer.load(data / f"tok{VOCAB}.bin", VOCAB)


def sentencepiece_ids(processor, text: str) -> list[int]:
    return [BOS] + processor.encode(text)  # llama2.c's pretokenize: BOS, no EOS


def test_tokenizer_bin_holds_llama2c_pieces(vocab):
    _, processor, tokenizer = vocab
    assert tokenizer.vocab_size == processor.vocab_size() == VOCAB
    assert tokenizer.pieces[1] == b"\n<s>\n" and tokenizer.pieces[2] == b"\n</s>\n"
    assert tokenizer.pieces[3] == b"<0x00>" and tokenizer.pieces[3 + 0xE6] == b"<0xE6>"
    for i in (300, 500, VOCAB - 1):  # `▁` is written as a space, scores are sentencepiece's
        assert tokenizer.pieces[i] == processor.id_to_piece(i).replace("\u2581", " ").encode()
        assert tokenizer.scores[i] == pytest.approx(processor.get_score(i))


def test_same_ids_on_500_corpus_lines(vocab):
    lines, processor, tokenizer = vocab
    plain = [line for line in lines if normalize_spaces(line) == line]
    assert len(plain) >= 500
    sample = random.Random(0).sample(plain, 500)
    assert any(any(ord(ch) > 127 for ch in line) for line in sample)
    for line in sample:
        assert tokenizer.encode(line) == sentencepiece_ids(processor, line), line
    # merges happen: far fewer tokens than bytes
    assert sum(len(tokenizer.encode(s)) for s in sample) < 0.5 * sum(len(s.encode()) for s in sample)


def golden_texts() -> list[str]:
    texts = []
    for name in ("tok512.json", "tokenizer.json"):
        texts += [case["text"] for case in json.loads((GOLDEN / "tokenizer" / name).read_text())["cases"]]
    return texts


def test_same_ids_on_the_goldens_odd_inputs(vocab, shared):
    """Non-ASCII, byte fallback (emoji and CJK are not in this vocabulary), digits, tabs,
    newlines: identical wherever the text has no run of spaces."""
    _, processor, tokenizer = vocab
    texts = [t for t in golden_texts() if normalize_spaces(t) == t]
    assert len(texts) >= 20
    fallback = 0
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids == sentencepiece_ids(processor, text) if text else ids == [BOS], repr(text)
        fallback += any(3 <= i < 259 for i in ids)
    assert fallback >= 3  # byte-fallback tokens were exercised


def test_runs_of_spaces_differ_by_design(vocab, shared):
    """The documented class: sentencepiece collapses and strips spaces, run.c keeps them."""
    lines, processor, tokenizer = vocab
    spaced = [t for t in golden_texts() + lines if normalize_spaces(t) != t]
    assert len(spaced) >= 20
    assert "  leading spaces" in spaced and "trailing spaces   " in spaced
    for text in spaced:
        expected = sentencepiece_ids(processor, text)
        assert tokenizer.encode(text) != expected, repr(text)  # run.c keeps the spaces ...
        assert tokenizer.encode(normalize_spaces(text)) == expected, repr(text)  # ... and only them
