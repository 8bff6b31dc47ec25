"""Tests for llama2c.devserver: MIME types, isolation/CORS headers, Range, confinement."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient

from conftest import MODELS as SHARED_MODELS  # ../shared/models, or LLAMA2C_SHARED's
from llama2c import devserver
from llama2c.devserver import create_app

PYLIB = Path(__file__).resolve().parents[1] / "pylib"
SECRET = b"top secret, outside the site"

ISOLATION = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "cross-origin",
    "access-control-allow-origin": "*",
}


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built site, plus a secret file and symlinks pointing outside it."""
    root = tmp_path_factory.mktemp("devserver")
    site = root / "site"
    (site / "models").mkdir(parents=True)
    (site / "assets").mkdir()  # a directory without index.html
    (site / "docs").mkdir()
    (site / "index.html").write_text("<!doctype html><title>llama2c-web</title>")
    (site / "docs" / "index.html").write_text("<p>docs</p>")
    (site / "app.js").write_text("console.log('app');")
    (site / "engine.mjs").write_text("export default 1;")
    (site / "engine.wasm").write_bytes(b"\0asm\1\0\0\0")
    (site / "style.css").write_text("body{}")
    (site / "manifest.json").write_text("{}")
    (site / "llama2c-0.1-py3-none-any.whl").write_bytes(b"PK\5\6" + b"\0" * 18)
    (site / "bundle.zip").write_bytes(b"PK\5\6" + b"\0" * 18)
    (site / "models" / "tok512.bin").write_bytes((SHARED_MODELS / "tok512.bin").read_bytes())
    (root / "secret.txt").write_bytes(SECRET)
    (root / "outside").mkdir()
    (root / "outside" / "secret.txt").write_bytes(SECRET)
    (site / "leak.txt").symlink_to(root / "secret.txt")
    (site / "outside").symlink_to(root / "outside", target_is_directory=True)
    return site


@pytest.fixture(scope="module")
def client(site_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(site_dir)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def live_server(site_dir: Path) -> Iterator[tuple[str, int]]:
    """The real uvicorn server on a free 127.0.0.1 port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(create_app(site_dir), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield host, port
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def assert_site_headers(headers: object) -> None:
    for name, value in ISOLATION.items():
        assert headers[name] == value, name  # type: ignore[index]


# --- files and MIME types ---------------------------------------------------------------


def test_root_serves_index_html(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>llama2c-web</title>" in response.text


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/index.html", "text/html"),
        ("/app.js", "text/javascript"),
        ("/engine.mjs", "text/javascript"),
        ("/engine.wasm", "application/wasm"),
        ("/models/tok512.bin", "application/octet-stream"),
        ("/manifest.json", "application/json"),
        ("/llama2c-0.1-py3-none-any.whl", "application/zip"),
        ("/bundle.zip", "application/zip"),
        ("/style.css", "text/css"),
    ],
)
def test_media_types(client: TestClient, path: str, media_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type


def test_file_bytes_are_served_unchanged(client: TestClient) -> None:
    response = client.get("/models/tok512.bin")
    assert response.content == (SHARED_MODELS / "tok512.bin").read_bytes()
    assert response.headers["content-length"] == "6227"


# --- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/engine.wasm", "/models/tok512.bin", "/no-such-file"])
def test_isolation_and_cors_headers_everywhere(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert_site_headers(response.headers)
    assert response.headers["cache-control"] == "no-cache"


def test_method_not_allowed_still_has_headers(client: TestClient) -> None:
    response = client.post("/index.html")
    assert response.status_code == 405
    assert_site_headers(response.headers)


def test_cors_preflight(client: TestClient) -> None:
    response = client.options(
        "/models/tok512.bin",
        headers={
            "Origin": "https://example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert response.status_code == 204
    assert_site_headers(response.headers)
    assert "GET" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "range"


def test_etag_revalidation(client: TestClient) -> None:
    first = client.get("/engine.wasm")
    assert first.headers["cache-control"] == "no-cache"
    assert "last-modified" in first.headers
    again = client.get("/engine.wasm", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert_site_headers(again.headers)


# --- Range --------------------------------------------------------------------------------


def test_range_request(client: TestClient) -> None:
    data = (SHARED_MODELS / "tok512.bin").read_bytes()
    response = client.get("/models/tok512.bin", headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 100-199/6227"
    assert response.content == data[100:200]
    assert_site_headers(response.headers)


def test_open_ended_range(client: TestClient) -> None:
    data = (SHARED_MODELS / "tok512.bin").read_bytes()
    response = client.get("/models/tok512.bin", headers={"Range": "bytes=6000-"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 6000-6226/6227"
    assert response.content == data[6000:]


def test_unsatisfiable_range(client: TestClient) -> None:
    response = client.get("/models/tok512.bin", headers={"Range": "bytes=9000-9999"})
    assert response.status_code == 416


@pytest.mark.parametrize("value", ["items=0-10", "pages=1-2", "Bytes", "none"])
def test_unknown_range_unit_is_ignored(client: TestClient, value: str) -> None:
    """RFC 9110 section 14.2: a server ignores a Range with a unit it does not know (was 400)."""
    data = (SHARED_MODELS / "tok512.bin").read_bytes()
    response = client.get("/models/tok512.bin", headers={"Range": value})
    assert response.status_code == 200
    assert response.content == data and "content-range" not in response.headers
    assert_site_headers(response.headers)


@pytest.mark.parametrize("value", ["bytes=+5-10", "bytes=5-+10", "bytes= 1_0-20", "bytes=0x10-20",
                                   "bytes=", "bytes=,", "bytes=a-b", "bytes=5", "bytes=--5"])
def test_malformed_byte_range_is_refused(client: TestClient, value: str) -> None:
    """Byte ranges are decimal digits only: "+5" used to be read as 5 (Python's int())."""
    response = client.get("/models/tok512.bin", headers={"Range": value})
    assert response.status_code == 400
    assert_site_headers(response.headers)


@pytest.mark.parametrize("value,expected", [("bytes=0-0", "bytes 0-0/6227"),
                                            ("bytes=-5", "bytes 6222-6226/6227"),
                                            ("bytes = 10-19", "bytes 10-19/6227")])
def test_well_formed_byte_ranges_still_work(client: TestClient, value: str, expected: str) -> None:
    response = client.get("/models/tok512.bin", headers={"Range": value})
    assert response.status_code == 206 and response.headers["content-range"] == expected


# --- confinement --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/assets", "/assets/", "/models/"])
def test_no_directory_listing(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "tok512" not in response.text


def test_directory_with_index_html(client: TestClient) -> None:
    assert client.get("/docs/").text == "<p>docs</p>"
    redirect = client.get("/docs", follow_redirects=False)
    assert redirect.status_code in (301, 302, 307, 308)
    assert redirect.headers["location"].endswith("/docs/")


@pytest.mark.parametrize(
    "raw_path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/models/../../secret.txt",
        "/models/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/leak.txt",
        "/outside/secret.txt",
        "/outside/",
    ],
)
def test_no_path_traversal(live_server: tuple[str, int], raw_path: str) -> None:
    # http.client sends the path byte for byte, with no dot-segment normalisation.
    connection = http.client.HTTPConnection(*live_server, timeout=10)
    try:
        connection.request("GET", raw_path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 404
    assert SECRET not in body


# --- the real server ----------------------------------------------------------------------


def test_live_server_serves_file_with_headers(live_server: tuple[str, int]) -> None:
    host, port = live_server
    with urllib.request.urlopen(f"http://{host}:{port}/models/tok512.bin", timeout=10) as response:
        body = response.read()
        headers = response.headers
    assert body == (SHARED_MODELS / "tok512.bin").read_bytes()
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Accept-Ranges"] == "bytes"
    for name, value in ISOLATION.items():
        assert headers[name] == value


def test_live_server_range(live_server: tuple[str, int]) -> None:
    host, port = live_server
    request = urllib.request.Request(
        f"http://{host}:{port}/engine.wasm", headers={"Range": "bytes=0-3"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 0-3/8"
        assert response.headers["Content-Type"] == "application/wasm"
        assert response.read() == b"\0asm"


# --- command line -------------------------------------------------------------------------


def test_main_rejects_missing_site_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert devserver.main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "invoke build" in err


def test_main_rejects_site_without_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert devserver.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no index.html" in err and "invoke build" in err


def test_package_import_does_not_load_devserver() -> None:
    code = (
        "import sys, llama2c; "
        "assert 'llama2c.devserver' not in sys.modules, 'devserver imported'; "
        "assert 'starlette' not in sys.modules, 'starlette imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(PYLIB)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
