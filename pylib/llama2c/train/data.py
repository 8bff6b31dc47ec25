"""`llama2c data`: a corpus in one layout, from TinyStories or from the user's own text files.

The corpus layout that `vocab` and `pretokenize` read:

    DATA/corpus/0000.jsonl   the validation documents (llama2.c holds out TinyStories shard 0)
    DATA/corpus/0001.jsonl   training documents, one JSON object {"text": ...} per line
    ...

Documents are stored stripped of surrounding whitespace, as llama2.c's tinystories.py strips each
story before it trains the vocabulary and pretokenizes. This module needs no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from ..fetch import MIRROR_ENV, FetchError, ModelFile, fetch_file
from .util import TrainError

CORPUS = "corpus"
DOCS_PER_SHARD = 50_000  # about TinyStories' shard size (~ 2.1 M stories in 50 shards)
VAL_FRACTION = 0.1  # of a user corpus's documents held out for validation (at least one)

# TinyStories as llama2.c downloads it: 50 JSON shards (data00.json ... data49.json), each a list
# of {"story": ...} objects. The size and sha256 are not verified here (Hugging Face is out of
# reach from the machines this was written on): they are the values a public project pins for
# this file at dataset revision f54c09fd23315a6f9c86f9dc80f725de7d8f9c64, and the size is listed
# independently in a second public inventory of the dataset.
TINYSTORIES = ModelFile(
    filename="TinyStories_all_data.tar.gz",
    url="https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
        "TinyStories_all_data.tar.gz",
    size=1_608_001_638,
    sha256="26cf7605aca15bc4ea6fa637256400d9d01317b28ed296172b2d1dd160cd7699",
)


def corpus_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / CORPUS


def corpus_shards(data_dir: str | Path) -> list[Path]:
    """The corpus's shards in order (shard 0 is validation); a clear error when there is none."""
    shards = sorted(corpus_dir(data_dir).glob("*.jsonl"))
    if len(shards) < 2:
        raise TrainError(f"no corpus in {corpus_dir(data_dir)}: run `llama2c data tinystories` "
                         "or `llama2c data text FILE...` first")
    return shards


def read_shard(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


# -- writing the layout ----------------------------------------------------------------------------

def write_corpus(data_dir: Path, shards: Iterable[list[str]], force: bool) -> tuple[int, int]:
    """Writes the shards into DATA/corpus through a temporary folder; returns (shards, documents)."""
    target = corpus_dir(data_dir)
    if target.exists() and not force:
        raise TrainError(f"{target} exists (pass --force to replace it)")
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{CORPUS}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    count = docs = 0
    try:
        for i, documents in enumerate(shards):
            with open(tmp / f"{i:04d}.jsonl", "w", encoding="utf-8") as f:
                for text in documents:
                    f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            count, docs = i + 1, docs + len(documents)
        if count < 2:
            raise TrainError("the corpus needs at least 2 documents (one is held out for validation)")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return count, docs


# -- your own text ---------------------------------------------------------------------------------

def read_text_file(path: Path) -> list[str]:
    """Documents of one file: JSON lines with a `text` field (.jsonl), else UTF-8 text with a blank
    line between documents."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TrainError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TrainError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                         f"{e.start})") from None
    if path.suffix in (".jsonl", ".ndjson"):
        docs = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise TrainError(f"{path}:{number}: not a JSON object with a \"text\" field") from None
            if not isinstance(value, str):
                raise TrainError(f"{path}:{number}: \"text\" is not a string")
            docs.append(value.strip())
    else:
        docs = [block.strip() for block in text.replace("\r\n", "\n").split("\n\n")]
    return [d for d in docs if d]


def text_corpus(files: list[str | Path], data_dir: str | Path, force: bool = False) -> tuple[int, int]:
    """`llama2c data text FILE...`: the user's documents into the corpus layout."""
    if not files:
        raise TrainError("data text needs at least one FILE")
    docs: list[str] = []
    for file in files:
        docs.extend(read_text_file(Path(file)))
    if not docs:
        raise TrainError(f"the corpus is empty: no documents in {', '.join(map(str, files))}")
    n_val = max(1, int(len(docs) * VAL_FRACTION))
    train = docs[n_val:]
    shards = [docs[:n_val]] + [train[i:i + DOCS_PER_SHARD] for i in range(0, len(train), DOCS_PER_SHARD)]
    return write_corpus(Path(data_dir), shards, force)


# -- TinyStories -----------------------------------------------------------------------------------

def tinystories_shards(archive: Path) -> Iterator[list[str]]:
    """Each data*.json member of the archive, in name order, as a list of stripped stories."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".json")),
                             key=lambda m: m.name)
            if not members:
                raise TrainError(f"{archive} holds no .json shards (not TinyStories_all_data)")
            for member in members:
                stories = json.load(tar.extractfile(member))
                yield [s["story"].strip() for s in stories]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TrainError(f"cannot read {archive}: {e}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise TrainError(f"{archive}: a shard is not a JSON list of {{\"story\": ...}} ({e})") from None


def fetch_into(file: ModelFile, data_dir: Path, mirror: str | Path | None, progress: bool) -> Path:
    """fetch_file into DATA (mirror: the given folder, else $LLAMA2C_MIRROR), as a TrainError."""
    data_dir.mkdir(parents=True, exist_ok=True)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    try:
        return fetch_file(file, data_dir, Path(mirror) if mirror else None, progress)
    except FetchError as e:
        raise TrainError(str(e)) from None


def tinystories(data_dir: str | Path, mirror: str | Path | None = None, force: bool = False,
                progress: bool = True, archive: ModelFile = TINYSTORIES) -> tuple[int, int]:
    """`llama2c data tinystories`: download (or copy from a mirror) the archive with the models'
    fetcher (size and sha256 checked, resumable, atomic), then unpack it into the corpus layout."""
    data_dir = Path(data_dir)
    path = fetch_into(archive, data_dir, mirror, progress)
    return write_corpus(data_dir, tinystories_shards(path), force)
