"""`llama2c pretokenize --vocab-size N`: the corpus as uint16 token shards, llama2.c's layout.

    DATA/tokN/val.bin          corpus shard 0 (validation)
    DATA/tokN/train_0001.bin   corpus shard 1, and so on
    DATA/tokN/meta.json        vocab size, tokenizer file, token counts

Each document is encoded with BOS in front and no EOS, and the documents of a shard are
concatenated, as llama2.c's pretokenize does. The work is split into chunks of documents that a
pool of processes (one per core) encodes while this process writes them in order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np

from ..tokenizer import BOS, Tokenizer
from .data import corpus_shards, read_shard
from .util import Progress, TrainError
from .vocab import bin_path, model_path

CHUNK_DOCS = 1000  # documents per work unit: big enough to amortise the pickling


def shards_dir(data_dir: str | Path, vocab_size: int) -> Path:
    return Path(data_dir) / f"tok{vocab_size}"


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise TrainError(f"no token shards in {folder}: run `llama2c pretokenize` first") from None


# -- the worker side: one tokenizer per process ----------------------------------------------------

_encode = None


def _start_worker(model: str | None, tokenizer_bin: str, vocab_size: int) -> None:
    global _encode
    if model:  # sentencepiece, as llama2.c pretokenizes
        import sentencepiece as spm
        processor = spm.SentencePieceProcessor(model_file=model)
        _encode = processor.encode
    else:  # the Llama 2 vocabulary ships only as tokenizer.bin: run.c's encoder
        tokenizer = Tokenizer.load(tokenizer_bin, vocab_size)
        _encode = lambda text: tokenizer.encode(text, bos=False)  # noqa: E731


def _encode_chunk(docs: list[str]) -> np.ndarray:
    ids: list[int] = []
    for doc in docs:
        ids.append(BOS)
        ids.extend(_encode(doc))
    return np.array(ids, dtype=np.uint16)


def _chunks(shard: Path):
    docs: list[str] = []
    for doc in read_shard(shard):
        docs.append(doc)
        if len(docs) == CHUNK_DOCS:
            yield docs
            docs = []
    if docs:
        yield docs


def pretokenize(data_dir: str | Path, vocab_size: int, force: bool = False,
                workers: int | None = None, progress: bool = True) -> dict:
    data_dir = Path(data_dir)
    shards = corpus_shards(data_dir)
    model, tok_bin = model_path(data_dir, vocab_size), bin_path(data_dir, vocab_size)
    if not tok_bin.is_file():
        raise TrainError(f"no vocabulary {tok_bin}: run `llama2c vocab --size {vocab_size}` first")
    if vocab_size > 65536:
        raise TrainError(f"vocab size {vocab_size} does not fit uint16 tokens")
    out = shards_dir(data_dir, vocab_size)
    if out.exists() and not force:
        raise TrainError(f"{out} exists (pass --force to replace it)")
    tmp = data_dir / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    workers = workers or os.cpu_count() or 1
    bar = Progress(len(shards), "pretokenize", " shards", progress)
    counts = {}
    args = (str(model) if model.is_file() else None, str(tok_bin), vocab_size)
    try:
        with multiprocessing.get_context("spawn").Pool(workers, _start_worker, args) as pool:
            for i, shard in enumerate(shards):
                name = "val.bin" if i == 0 else f"train_{i:04d}.bin"
                with open(tmp / name, "wb") as f:
                    for ids in pool.imap(_encode_chunk, _chunks(shard)):
                        f.write(ids.astype("<u2").tobytes())
                counts[name] = (tmp / name).stat().st_size // 2
                bar.update(i + 1, f"{sum(counts.values()):,} tokens", force=True)
        meta = {"vocab_size": vocab_size, "tokenizer": str(tok_bin.resolve()),
                "tokens": counts}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return meta
