"""`llama2c vocab --size N`: a sentencepiece BPE vocabulary, as llama2.c's train_vocab makes one.

Writes DATA/tokN.model (sentencepiece, used by `pretokenize`) and DATA/tokN.bin (llama2.c's
tokenizer.bin, read by run.c, `llama2c run` and the page). `--size 32000` trains nothing: it is the
Llama 2 tokenizer that stories15M/42M/110M use, fetched like the models' files.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from ..fetch import LLAMA2_TOKENIZER
from .data import corpus_shards, fetch_into, read_shard
from .util import TrainError, atomic_write

LLAMA2_VOCAB = 32000
VOCAB_SHARDS = 10  # llama2.c trains the vocabulary on the first 10 shards
BYTE_FALLBACK_TOKENS = 3 + 256  # <unk>, <s>, </s> and one piece per byte, before any merge

# llama2.c's train_vocab settings (tinystories.py)
SENTENCEPIECE_SETTINGS = dict(
    model_type="bpe",
    character_coverage=1.0,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    byte_fallback=True,
    unk_surface=r" \342\201\207 ",
    normalization_rule_name="identity",
    input_format="text",
)


def model_path(data_dir: str | Path, size: int) -> Path:
    return Path(data_dir) / f"tok{size}.model"


def bin_path(data_dir: str | Path, size: int) -> Path:
    return Path(data_dir) / f"tok{size}.bin"


def train_vocab(data_dir: str | Path, size: int, force: bool = False,
                mirror: str | None = None) -> list[Path]:
    """Trains (or, for 32000, fetches) the vocabulary. Returns the files written."""
    data_dir = Path(data_dir)
    if size == LLAMA2_VOCAB:
        return [llama2_tokenizer(data_dir, force, mirror)]
    if size <= BYTE_FALLBACK_TOKENS:
        raise TrainError(f"vocab size {size} is too small: byte fallback alone takes "
                         f"{BYTE_FALLBACK_TOKENS} tokens")
    if size > 65535:
        raise TrainError(f"vocab size {size} does not fit pretokenize's uint16 tokens (max 65535)")
    targets = [model_path(data_dir, size), bin_path(data_dir, size)]
    for target in targets:
        if target.exists() and not force:
            raise TrainError(f"{target} exists (pass --force to replace it)")
    import sentencepiece as spm

    shards = corpus_shards(data_dir)[:VOCAB_SHARDS]
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".vocab-") as tmp:
        text = Path(tmp) / "text.txt"
        with open(text, "w", encoding="utf-8") as f:
            for shard in shards:
                for doc in read_shard(shard):
                    f.write(doc + "\n")
        prefix = Path(tmp) / f"tok{size}"
        try:
            spm.SentencePieceTrainer.train(
                input=str(text), model_prefix=str(prefix), vocab_size=size,
                num_threads=os.cpu_count() or 1, minloglevel=2, **SENTENCEPIECE_SETTINGS)
        except RuntimeError as e:
            # e.g. "Vocabulary size is too high (5000). Please set it to a value <= 1234."
            message = str(e).strip().splitlines()[-1]
            message = message.rsplit("] ", 1)[-1]  # drop sentencepiece's "file(line) [check]" prefix
            raise TrainError(f"sentencepiece cannot make {size} tokens from this corpus: "
                             f"{message}") from None
        processor = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
        data = tokenizer_bin(processor)
        atomic_write(targets[0], lambda tmp_path: tmp_path.write_bytes(
            Path(str(prefix) + ".model").read_bytes()))
        atomic_write(targets[1], lambda tmp_path: tmp_path.write_bytes(data))
    return targets


def tokenizer_bin(processor) -> bytes:
    """llama2.c's tokenizer.bin bytes for a sentencepiece model (tokenizer.py's export): per id a
    float32 score, an int32 length and the piece's bytes, with `▁` as a space, BOS as "\\n<s>\\n"
    and EOS as "\\n</s>\\n"; byte pieces stay as the text `<0xAB>`; an int32 max length first."""
    pieces, scores = [], []
    for i in range(processor.vocab_size()):
        piece = processor.id_to_piece(i)
        if i == processor.bos_id():
            piece = "\n<s>\n"
        elif i == processor.eos_id():
            piece = "\n</s>\n"
        pieces.append(piece.replace("\u2581", " ").encode("utf-8"))
        scores.append(processor.get_score(i))
    out = [struct.pack("<i", max(len(p) for p in pieces))]
    for piece, score in zip(pieces, scores):
        out.append(struct.pack("<fi", score, len(piece)) + piece)
    return b"".join(out)


def llama2_tokenizer(data_dir: Path, force: bool, mirror: str | None) -> Path:
    """The Llama 2 tokenizer as DATA/tok32000.bin (llama2.c uses it for every 32000-vocab model)."""
    target = bin_path(data_dir, LLAMA2_VOCAB)
    if target.exists() and not force:
        raise TrainError(f"{target} exists (pass --force to replace it)")
    path = fetch_into(LLAMA2_TOKENIZER, data_dir, mirror, progress=False)
    atomic_write(target, lambda tmp_path: tmp_path.write_bytes(path.read_bytes()))
    return target
