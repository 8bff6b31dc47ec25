"""Development server for the built static site.

Serves only the files under one folder, with the headers the app needs:

- cross-origin isolation (COOP/COEP), so SharedArrayBuffer and wasm threads work;
- `Cross-Origin-Resource-Policy` and CORS, so other origins can embed the assets;
- explicit MIME types (`.wasm` as `application/wasm`, `.mjs` as JavaScript, ...);
- `Cache-Control: no-cache` with ETag / Last-Modified revalidation everywhere;
- HTTP Range requests (Starlette's FileResponse answers them with 206).

Usage:

    python -m llama2c.devserver SITE_DIR [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.responses import FileResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Chosen explicitly so the answer does not depend on the machine's mimetypes tables.
MEDIA_TYPES: dict[str, str] = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".data": "application/octet-stream",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

RESPONSE_HEADERS: dict[str, str] = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Accept-Ranges, Content-Length, Content-Range, ETag",
}

PREFLIGHT_HEADERS: dict[str, str] = {
    "Allow": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Max-Age": "600",
}


class SiteFiles(StaticFiles):
    """StaticFiles with explicit MIME types. Symlinks leaving the folder are refused."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = MEDIA_TYPES.get(Path(full_path).suffix.lower())
        response = FileResponse(
            full_path, status_code=status_code, stat_result=stat_result, media_type=media_type
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


# RFC 9110 section 14.1.1: a byte range is first-last, first- or -suffix, in decimal digits only.
# (Starlette parses each number with int(), which also takes "+5", " 5" and "1_0".)
_BYTE_RANGE = re.compile(r"[0-9]+-[0-9]*|-[0-9]+")


def range_verdict(value: str | None) -> str:
    """What to do with a Range header: "pass" it on (absent, or well-formed byte ranges), "ignore"
    it (a range unit other than bytes, which RFC 9110 says a server ignores), or "reject" it
    (a malformed byte range: 400)."""
    if value is None:
        return "pass"
    unit, sep, ranges = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return "ignore"
    specs = [part.strip(" \t") for part in ranges.split(",")]
    if not all(_BYTE_RANGE.fullmatch(spec) for spec in specs if spec) or not any(specs):
        return "reject"
    return "pass"


class SiteHeadersMiddleware:
    """Pure ASGI middleware: adds isolation, CORS and cache headers; answers OPTIONS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self.preflight(scope, receive, send)
            return
        verdict = range_verdict(Headers(scope=scope).get("range"))
        if verdict == "ignore":  # an unknown unit: the whole file, 200 (RFC 9110 section 14.2)
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        elif verdict == "reject":
            response = Response("Malformed range header\n", status_code=400,
                                headers=RESPONSE_HEADERS, media_type="text/plain")
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in RESPONSE_HEADERS.items():
                    headers[name] = value
                headers.setdefault("Cache-Control", "no-cache")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def preflight(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a CORS preflight (or any OPTIONS) with 204 and the allowed methods."""
        requested = Headers(scope=scope).get("access-control-request-headers")
        headers = {**RESPONSE_HEADERS, **PREFLIGHT_HEADERS}
        headers["Access-Control-Allow-Headers"] = requested or "Range"
        response = Response(status_code=204, headers=headers)
        await response(scope, receive, send)


def create_app(site_dir: Path) -> Starlette:
    """The ASGI app serving the files under `site_dir` (`/` serves index.html)."""
    site_files = SiteFiles(directory=Path(site_dir), html=True)
    return Starlette(
        routes=[Mount("/", app=site_files)],
        middleware=[Middleware(SiteHeadersMiddleware)],
    )


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `site_dir` with uvicorn until interrupted."""
    uvicorn.run(create_app(site_dir), host=host, port=port, log_level="info")


def check_site_dir(site_dir: Path) -> str | None:
    """Return a one-line problem with `site_dir`, or None when it can be served."""
    if not site_dir.is_dir():
        return f"site folder {site_dir} does not exist; run `invoke build` first"
    if not (site_dir / "index.html").is_file():
        return f"site folder {site_dir} has no index.html; run `invoke build` first"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m llama2c.devserver SITE_DIR [--host H] [--port P]`."""
    parser = argparse.ArgumentParser(
        prog="python -m llama2c.devserver",
        description="Serve the built site with cross-origin isolation headers.",
    )
    parser.add_argument("site_dir", type=Path, help="the built static site")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    problem = check_site_dir(args.site_dir)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    serve(args.site_dir, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
