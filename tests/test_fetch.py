"""Tests for llama2c.fetch: mirror copies, verification, real HTTP downloads with resume."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import SHARED  # ../shared beside the project, or LLAMA2C_SHARED's
from llama2c import fetch
from llama2c.fetch import FetchError, ModelFile, fetch_model

SHARED_MODELS = SHARED / "models"
TOK512 = SHARED_MODELS / "tok512.bin"


@pytest.fixture(autouse=True)
def no_mirror_from_the_environment(monkeypatch):
    """CI sets LLAMA2C_MIRROR for the build; these tests choose their mirror themselves."""
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tok512_entry(url: str) -> ModelFile:
    return ModelFile("tok512.bin", url, TOK512.stat().st_size, sha256_hex(TOK512))


# --- registry ------------------------------------------------------------------------


def test_registry_entries_are_well_formed() -> None:
    for name, files in fetch.MODELS.items():
        assert files, name
        for file in files:
            assert file.url.startswith("https://") and file.url.endswith("/" + file.filename)
            assert file.size > 0
            assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256)


@pytest.mark.parametrize("filename", ["stories260K.bin", "tok512.bin", "tokenizer.bin"])
def test_registry_agrees_with_shared_mirror(filename: str) -> None:
    entries = {f.filename: f for files in fetch.MODELS.values() for f in files}
    entry = entries[filename]
    path = SHARED_MODELS / filename
    assert entry.size == path.stat().st_size
    assert entry.sha256 == sha256_hex(path)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(FetchError) as caught:
        fetch_model("stories1B", "unused")
    message = str(caught.value)
    assert "stories1B" in message
    for name in fetch.MODELS:
        assert name in message


# --- mirror --------------------------------------------------------------------------


def test_copy_from_mirror(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    paths = fetch_model("stories260K", dest, mirror=SHARED_MODELS, progress=False)
    assert paths == [dest / "stories260K.bin", dest / "tok512.bin"]
    for path in paths:
        assert path.read_bytes() == (SHARED_MODELS / path.name).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["stories260K.bin", "tok512.bin"]


def test_mirror_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fetch.MIRROR_ENV, str(SHARED_MODELS))
    paths = fetch_model("stories260K", tmp_path, progress=False)
    assert [sha256_hex(p) for p in paths] == [f.sha256 for f in fetch.MODELS["stories260K"]]


def test_skips_files_already_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetch_model("stories260K", tmp_path, mirror=SHARED_MODELS, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    # No mirror and no network: succeeding proves nothing was fetched again.
    unreachable = f"http://127.0.0.1:{closed_port()}/x"
    monkeypatch.setitem(
        fetch.MODELS,
        "stories260K",
        [ModelFile(f.filename, unreachable, f.size, f.sha256) for f in fetch.MODELS["stories260K"]],
    )
    empty_mirror = tmp_path / "empty"
    empty_mirror.mkdir()
    paths = fetch_model("stories260K", tmp_path, mirror=empty_mirror, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in paths} == before


def test_present_but_corrupt_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "tok512.bin"
    target.write_bytes(b"\0" * TOK512.stat().st_size)  # right size, wrong content
    fetch_model("stories260K", tmp_path, mirror=SHARED_MODELS, progress=False)
    assert target.read_bytes() == TOK512.read_bytes()


def test_corrupted_mirror_raises_and_leaves_nothing(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(SHARED_MODELS / "stories260K.bin", mirror / "stories260K.bin")
    bad = bytearray(TOK512.read_bytes())
    bad[100] ^= 0xFF
    (mirror / "tok512.bin").write_bytes(bytes(bad))
    dest = tmp_path / "models"

    with pytest.raises(FetchError) as caught:
        fetch_model("stories260K", dest, mirror=mirror, progress=False)

    message = str(caught.value)
    assert "sha256 mismatch" in message
    assert sha256_hex(TOK512) in message
    assert hashlib.sha256(bytes(bad)).hexdigest() in message
    assert not (dest / "tok512.bin").exists()
    assert not (dest / "tok512.bin.part").exists()


def test_truncated_mirror_file_is_a_size_mismatch(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tok512.bin").write_bytes(TOK512.read_bytes()[:-1])
    shutil.copyfile(SHARED_MODELS / "stories260K.bin", mirror / "stories260K.bin")
    with pytest.raises(FetchError, match="size mismatch, expected 6227 bytes, got 6226"):
        fetch_model("stories260K", tmp_path / "models", mirror=mirror, progress=False)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["stories260K.bin"]


def test_unpinned_hash_checks_size_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = ModelFile("tok512.bin", "https://example.invalid/tok512.bin", 6227, None)
    monkeypatch.setitem(fetch.MODELS, "unpinned", [entry])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tok512.bin").write_bytes(b"x" * 6227)  # any content of the right size passes

    [path] = fetch_model("unpinned", tmp_path / "models", mirror=mirror, progress=False)

    assert path.read_bytes() == b"x" * 6227
    assert "no pinned sha256" in capsys.readouterr().err


# --- HTTP ----------------------------------------------------------------------------


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support, recording what was asked."""

    log: list[tuple[str | None, int]]  # (Range header, bytes sent)
    honour_range = True

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        requested = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if match and self.honour_range:
            start = int(match.group(1))
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.log.append((requested, len(body)))  # before the body: the client may finish first
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class IgnoringRangeHandler(RangeHandler):
    honour_range = False


def serve(folder: Path, handler: type[RangeHandler]) -> Iterator[tuple[str, list]]:
    log: list[tuple[str | None, int]] = []
    handler_class = type("Handler", (handler,), {"log": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler_class, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list]]:
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copyfile(TOK512, folder / "tok512.bin")
    yield from serve(folder, RangeHandler)


@pytest.fixture
def served_ignoring_range(tmp_path: Path) -> Iterator[tuple[str, list]]:
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copyfile(TOK512, folder / "tok512.bin")
    yield from serve(folder, IgnoringRangeHandler)


def test_http_download(
    served: tuple[str, list],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, log = served
    monkeypatch.setitem(fetch.MODELS, "tiny", [tok512_entry(f"{base}/tok512.bin")])
    dest = tmp_path / "models"

    [path] = fetch_model("tiny", dest, progress=True)

    assert path.read_bytes() == TOK512.read_bytes()
    assert log == [(None, 6227)]
    assert not (dest / "tok512.bin.part").exists()
    err = capsys.readouterr().err
    assert "100%" in err and "MB/s" in err


def test_http_download_resumes_from_part(
    served: tuple[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, log = served
    monkeypatch.setitem(fetch.MODELS, "tiny", [tok512_entry(f"{base}/tok512.bin")])
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "tok512.bin.part").write_bytes(TOK512.read_bytes()[:1000])

    [path] = fetch_model("tiny", dest, progress=False)

    assert path.read_bytes() == TOK512.read_bytes()
    assert log == [("bytes=1000-", 6227 - 1000)]
    assert not (dest / "tok512.bin.part").exists()


def test_http_download_restarts_when_server_ignores_range(
    served_ignoring_range: tuple[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, log = served_ignoring_range
    monkeypatch.setitem(fetch.MODELS, "tiny", [tok512_entry(f"{base}/tok512.bin")])
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "tok512.bin.part").write_bytes(TOK512.read_bytes()[:1000])

    [path] = fetch_model("tiny", dest, progress=False)

    assert path.read_bytes() == TOK512.read_bytes()
    assert log == [("bytes=1000-", 6227)]


def test_resumed_download_with_corrupt_part_raises(
    served: tuple[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = served
    monkeypatch.setitem(fetch.MODELS, "tiny", [tok512_entry(f"{base}/tok512.bin")])
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "tok512.bin.part").write_bytes(b"\0" * 1000)

    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_model("tiny", dest, progress=False)
    assert list(dest.iterdir()) == []


def test_http_404_is_a_fetch_error(
    served: tuple[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = served
    monkeypatch.setitem(fetch.MODELS, "tiny", [tok512_entry(f"{base}/missing.bin")])
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_model("tiny", tmp_path, progress=False)


def test_unreachable_url_explains_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    monkeypatch.setitem(fetch.MODELS, "tiny", [tok512_entry(url)])

    with pytest.raises(FetchError) as caught:
        fetch_model("tiny", tmp_path / "models", progress=False)

    message = str(caught.value)
    assert "\n" not in message
    assert url in message
    assert "--from DIR" in message and "mirror=DIR" in message and fetch.MIRROR_ENV in message
    assert str(tmp_path / "models") in message


# --- command line --------------------------------------------------------------------


def test_main_copies_from_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "models"
    code = fetch.main(["stories260K", "--dest", str(dest), "--from", str(SHARED_MODELS), "--quiet"])
    assert code == 0
    assert capsys.readouterr().out.split() == [str(dest / "stories260K.bin"), str(dest / "tok512.bin")]


def test_main_prints_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = fetch.main(["nope", "--dest", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nope'")
    assert err.count("\n") == 1
    assert "Traceback" not in err
