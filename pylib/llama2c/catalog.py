"""The site's lists, written by `invoke build`: models/index.json (the page's model list) and
offline.json (what the service worker keeps).

models/index.json:
For each model file in a folder: its name, file, tokenizer, size in bytes, format (fp32 or int8)
and shape. Files that are not models (tokenizers) are left out, and so is a model whose tokenizer
is not in the folder. The list also names the default model, the one the page opens on:
stories15M when the folder has it, else the largest of the other published models it holds, else
the largest model of any name, so the page opens on something that works.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoint import Config, read_config
from .errors import CheckpointError
from .fetch import LLAMA2_TOKENIZER, MODELS as PUBLISHED
from .quantize import HEADER_BYTES, MAGIC

INDEX_NAME = "index.json"
DEFAULT_MODEL = "stories15M"  # the page's default when the site has it
_V2_HEADER = struct.Struct("<Ii7iBi")  # magic, version, 7 config values, shared flag, group size


@dataclass
class ModelEntry:
    name: str
    file: str  # relative to the index
    tokenizer: str  # relative to the index
    bytes: int
    format: str  # "fp32" or "int8"
    shape: dict[str, int]


def model_config(path: Path) -> tuple[Config, str] | None:
    """(config, format) of a llama2.c checkpoint (legacy fp32 or version-2 int8), or None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    try:
        if len(head) >= _V2_HEADER.size and struct.unpack_from("<I", head)[0] == MAGIC:
            _, version, *values, shared, _group = _V2_HEADER.unpack_from(head)
            if version != 2:
                return None
            config = Config(*values, shared_classifier=bool(shared))
            config.validate()
            return config, "int8"
        config = read_config(head, check_size=False)
    except CheckpointError:
        return None
    return (config, "fp32") if size == config.file_size() else None


def tokenizer_for(config: Config) -> str:
    """The tokenizer file a model of this vocabulary uses, by llama2.c's naming."""
    return LLAMA2_TOKENIZER.filename if config.vocab_size == 32000 else f"tok{config.vocab_size}.bin"


def scan(folder: Path) -> tuple[list[ModelEntry], list[str]]:
    """The models in `folder`, and a line for each .bin left out."""
    entries, skipped = [], []
    for path in sorted(folder.glob("*.bin")):
        found = model_config(path)
        if found is None:
            continue  # a tokenizer, or not a model
        config, fmt = found
        tokenizer = tokenizer_for(config)
        if not (folder / tokenizer).is_file():
            skipped.append(f"{path.name}: its tokenizer {tokenizer} is not in {folder}")
            continue
        shape = {k: v for k, v in asdict(config).items() if k != "shared_classifier"}
        entries.append(ModelEntry(path.stem, path.name, tokenizer, path.stat().st_size, fmt, shape))
    return entries, skipped


def default_model(entries: list[ModelEntry]) -> str | None:
    """stories15M, else the largest published model present, else the largest model."""
    names = {e.name for e in entries}
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    published = sorted((n for n in PUBLISHED if n in names), key=lambda n: -PUBLISHED[n][0].size)
    if published:
        return published[0]
    return max(entries, key=lambda e: e.bytes).name if entries else None


def write_index(folder: Path) -> dict:
    """Writes folder/index.json and returns it (with `skipped`, the files left out and why)."""
    entries, skipped = scan(folder)
    index = {"default": default_model(entries), "models": [asdict(e) for e in entries]}
    text = json.dumps(index, indent=1)
    target = folder / INDEX_NAME
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)
    return {**index, "skipped": skipped}


OFFLINE_LIST = "offline.json"
# Kept apart from the offline copy: models (the worker's own cache keeps those), the list itself,
# the service worker (the browser keeps it), Pyodide's classic-script loader (the page uses the
# module), and pages tests add to their copy of the site.
_NOT_OFFLINE = ("models", OFFLINE_LIST, "sw.js", "pyodide/pyodide.js")


def write_offline_list(site: Path) -> dict:
    """Writes site/offline.json: the files web/sw.js keeps, and a version (a hash of their names
    and bytes) that changes with any of them, so a new build replaces the old cache."""
    keep = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    keep = [p for p in keep if not p.startswith(_NOT_OFFLINE) and not p.startswith("e2e-")
            and "__pycache__" not in p]
    digest = hashlib.sha256()
    for name in keep:
        digest.update(name.encode() + b"\0" + (site / name).read_bytes())
    listing = {"version": digest.hexdigest()[:16],
               "files": ["./", *keep, f"models/{INDEX_NAME}"]}
    text = json.dumps(listing, indent=1)
    target = site / OFFLINE_LIST
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)
    return listing
