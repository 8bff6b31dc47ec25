"""Download llama2.c models and tokenizers from their official homes.

Every file is checked against its size and sha256 before it lands in the models folder. A download
goes to `NAME.part` first, resumes with an HTTP Range request when a `.part` already exists, and is
moved into place only once it is verified.

Offline machines can use a local copy instead: a mirror folder (`mirror=`, `--from DIR` or the
`LLAMA2C_MIRROR` environment variable) or a file placed in the models folder by hand.

Usage:

    python -m llama2c.fetch stories260K --dest models
    python -m llama2c.fetch stories15M --dest models --from /path/to/mirror
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from .errors import FetchError

MIRROR_ENV = "LLAMA2C_MIRROR"
TIMEOUT_SECONDS = 30.0
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it lives and what it must hash to."""

    filename: str
    url: str
    size: int
    sha256: str | None  # None: not pinned, only the size is checked


TINYLLAMAS = "https://huggingface.co/karpathy/tinyllamas/resolve/main"

# Shared by stories15M, stories42M and stories110M.
LLAMA2_TOKENIZER = ModelFile(
    filename="tokenizer.bin",
    url="https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.bin",
    size=433_869,
    sha256="50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361",
)

MODELS: dict[str, list[ModelFile]] = {
    "stories260K": [
        ModelFile(
            filename="stories260K.bin",
            url=f"{TINYLLAMAS}/stories260K/stories260K.bin",
            size=1_056_540,
            sha256="b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
        ),
        ModelFile(
            filename="tok512.bin",
            url=f"{TINYLLAMAS}/stories260K/tok512.bin",
            size=6_227,
            sha256="037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
        ),
    ],
    "stories15M": [
        ModelFile(
            filename="stories15M.bin",
            url=f"{TINYLLAMAS}/stories15M.bin",
            size=60_816_028,
            # Pinned as in chipsalliance/t1, tests/perf/llama/default.nix (Nix fetchurl).
            sha256="cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a",
        ),
        LLAMA2_TOKENIZER,
    ],
    "stories42M": [
        ModelFile(
            filename="stories42M.bin",
            url=f"{TINYLLAMAS}/stories42M.bin",
            size=167_020_572,
            # Published in several independent public download registries and recipes.
            sha256="9f65a1000e17d0bc167dd6332e0ce5119a0222a3d920cead5bce413bfab2ee7b",
        ),
        LLAMA2_TOKENIZER,
    ],
    "stories110M": [
        ModelFile(
            filename="stories110M.bin",
            url=f"{TINYLLAMAS}/stories110M.bin",
            size=438_381_596,
            # Published in several independent public download registries and recipes.
            sha256="515267168726a1ed1317a64a408492e6af3b67c1f71c5bd98c01d9d721803a24",
        ),
        LLAMA2_TOKENIZER,
    ],
}


def model_files(name: str) -> list[ModelFile]:
    """Return the files of model `name`, or raise FetchError naming the known models."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise FetchError(f"unknown model {name!r}; known models: {known}") from None


def fetch_model(
    name: str,
    dest_dir: str | os.PathLike[str],
    mirror: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Make every file of model `name` present and verified in `dest_dir`.

    A file already present with the right size and sha256 is kept. Otherwise it
    is copied from `mirror` (default: `$LLAMA2C_MIRROR`) when the mirror holds
    it, else downloaded from its official URL. Returns the paths, in registry order.
    """
    files = model_files(name)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    mirror_dir = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    return [
        fetch_file(file, dest, Path(mirror_dir) if mirror_dir else None, progress)
        for file in files
    ]


def fetch_file(file: ModelFile, dest: Path, mirror: Path | None, progress: bool) -> Path:
    """Make one file present and verified in `dest`; return its path."""
    target = dest / file.filename
    if file.sha256 is None:
        warn(f"{file.filename} has no pinned sha256; only its size will be checked")
    if is_complete(target, file):
        if progress:
            print(f"{file.filename}: already present", file=sys.stderr)
        return target
    part = part_path(target)
    source = find_in_mirror(mirror, file.filename) if mirror is not None else None
    if source is not None:
        if progress:
            print(f"{file.filename}: copying from {source.parent}", file=sys.stderr)
        shutil.copyfile(source, part)
    else:
        download(file, part, dest, progress)
    verify(part, file)
    os.replace(part, target)
    return target


def find_in_mirror(mirror: Path, filename: str) -> Path | None:
    """The file named `filename` in the mirror folder or any folder below it, if any."""
    direct = mirror / filename
    if direct.is_file():
        return direct
    return next((p for p in sorted(mirror.rglob(filename)) if p.is_file()), None)


def part_path(target: Path) -> Path:
    """Where `target` is written before it is verified."""
    return target.with_name(target.name + ".part")


def is_complete(path: Path, file: ModelFile) -> bool:
    """True when `path` exists with the expected size and (when pinned) sha256."""
    if not path.is_file() or path.stat().st_size != file.size:
        return False
    return file.sha256 is None or sha256_of(path) == file.sha256


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file at `path`."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def verify(path: Path, file: ModelFile) -> None:
    """Check size and sha256 of `path`; on a mismatch delete it and raise FetchError."""
    size = path.stat().st_size
    if size != file.size:
        path.unlink()
        raise FetchError(
            f"{file.filename}: size mismatch, expected {file.size} bytes, got {size}"
        )
    if file.sha256 is None:
        return
    digest = sha256_of(path)
    if digest != file.sha256:
        path.unlink()
        raise FetchError(
            f"{file.filename}: sha256 mismatch, expected {file.sha256}, got {digest}"
        )


def download(file: ModelFile, part: Path, dest: Path, progress: bool) -> None:
    """Download `file.url` into `part`, resuming from an existing `part`."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > file.size:
        part.unlink()
        offset = 0
    if offset == file.size:
        return  # a complete .part from an earlier run: only verification is left
    headers = {"User-Agent": "llama2c-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(file.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            if offset and not resumes_at(response, offset):
                offset = 0  # the server ignored the Range header: start over
            with part.open("ab" if offset else "wb") as out:
                copy_with_progress(response, out, offset, file, progress)
    except urllib.error.HTTPError as error:
        raise FetchError(
            f"cannot download {file.url}: HTTP {error.code} {error.reason}. "
            + local_copy_hint(file, dest)
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise FetchError(
            f"cannot download {file.url}: {reason}. " + local_copy_hint(file, dest)
        ) from None


def resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """True when `response` is a partial answer starting at byte `offset`."""
    content_range = response.headers.get("Content-Range", "")
    return response.status == 206 and content_range.startswith(f"bytes {offset}-")


def local_copy_hint(file: ModelFile, dest: Path) -> str:
    """One sentence telling how to use a local copy of `file` instead."""
    return (
        f"To use a local copy instead, pass --from DIR (mirror=DIR) or set "
        f"{MIRROR_ENV}=DIR to a folder holding {file.filename}, "
        f"or place {file.filename} in {dest}; a partial download resumes on the next run."
    )


def copy_with_progress(
    source: BinaryIO, out: BinaryIO, done: int, file: ModelFile, progress: bool
) -> None:
    """Copy `source` to `out` in chunks, drawing a progress bar when asked."""
    started = time.monotonic()
    first = done
    shown = 0.0
    while chunk := source.read(CHUNK_BYTES):
        out.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if progress and (now - shown >= 0.1 or done >= file.size):
            draw_progress(file.filename, done, file.size, (done - first) / max(now - started, 1e-6))
            shown = now
    if progress:
        sys.stderr.write("\n")


def draw_progress(name: str, done: int, total: int, bytes_per_second: float) -> None:
    """Redraw a one-line progress bar on stderr."""
    fraction = min(done / total, 1.0) if total else 1.0
    width = 30
    bar = "#" * int(fraction * width)
    sys.stderr.write(
        f"\r{name} [{bar:<{width}}] {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        f" {fraction:4.0%} {bytes_per_second / 1e6:.1f} MB/s"
    )
    sys.stderr.flush()


def warn(message: str) -> None:
    """Print a warning on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m llama2c.fetch NAME [--dest DIR] [--from DIR]`."""
    parser = argparse.ArgumentParser(
        prog="python -m llama2c.fetch",
        description="Download a llama2.c model and its tokenizer, verified by size and sha256.",
    )
    parser.add_argument("name", help="model name: " + ", ".join(MODELS))
    parser.add_argument("--dest", default="models", help="models folder (default: models)")
    parser.add_argument(
        "--from",
        dest="mirror",
        metavar="DIR",
        help=f"copy files from this local folder when it holds them (default: ${MIRROR_ENV})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        paths = fetch_model(args.name, args.dest, mirror=args.mirror, progress=not args.quiet)
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
