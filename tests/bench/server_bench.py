"""The dev server under load, for `invoke bench`: requests/s, latency, and whether memory and open
file descriptors come back after a burst.

The real dev server (`python -m llama2c.devserver site/`, as `invoke serve` runs it) is started on
127.0.0.1 on a free port, then sent REQUESTS requests, CONCURRENCY at a time over keep-alive
connections, cycling through what a page load asks for: the page, a model Range read, the engine,
and a missing file. Its resident memory and descriptors are read from /proc before and after. The
client and the server share the machine's cores, so the figures are the pair's, not the server's
alone. Everything is bounded: per-request and whole-run timeouts, and the server is stopped.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REQUESTS = 2000
CONCURRENCY = 50
REQUEST_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 120.0
# (path, headers): the page, a 64 KB Range of a model, the engine, a 404
REQUEST_MIX = [
    ("/", {}),
    ("/models/stories260K.bin", {"Range": "bytes=65536-131071"}),
    ("/engine/llama2c-engine.wasm", {}),
    ("/no-such-file.bin", {}),
]


def process_figures(pid: int) -> tuple[float, int]:
    """(resident memory in MB, open file descriptors) of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the dev server did not listen on 127.0.0.1:{port} within {timeout} s")


async def burst(base: str) -> tuple[list[float], dict[int, int], float]:
    """Sends REQUESTS requests, CONCURRENCY at once. Returns (latencies in s, status counts, wall s)."""
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(range(REQUESTS))

    async with httpx.AsyncClient(base_url=base, limits=limits,
                                 timeout=REQUEST_TIMEOUT_S) as client:
        async def worker() -> None:
            for i in queue:
                path, headers = REQUEST_MIX[i % len(REQUEST_MIX)]
                t0 = time.perf_counter()
                response = await client.get(path, headers=headers)
                await response.aread()
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))),
                               RUN_TIMEOUT_S)
        wall = time.perf_counter() - t0
    return latencies, statuses, wall


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def server_load_table(site: Path) -> list[str]:
    """Runs the burst against the dev server serving `site` and returns the printed table lines."""
    title = f"Dev server under load: {REQUESTS} requests, {CONCURRENCY} concurrent, 127.0.0.1"
    if not (site / "index.html").is_file() or not (site / "models/stories260K.bin").is_file():
        return [title, f"  (skipped: {site} is not built; run `invoke build`)"]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "llama2c.devserver", str(site), "--port",
                               str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        rss0, fds0 = process_figures(server.pid)
        latencies, statuses, wall = asyncio.run(burst(f"http://127.0.0.1:{port}"))
        time.sleep(0.5)  # the client has closed its connections; let the server notice
        rss1, fds1 = process_figures(server.pid)
    finally:
        server.kill()  # the dev server holds nothing that needs a graceful stop
        server.wait(timeout=10)
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    ms = [v * 1e3 for v in latencies]
    return [
        title,
        "  (the page, a 64 KB model Range, the engine .wasm, a 404, in turn; client and server "
        "share the cores)",
        f"  {'requests/s':<24}{len(latencies) / wall:>10.0f}",
        f"  {'latency p50, ms':<24}{percentile(ms, 50):>10.1f}",
        f"  {'latency p99, ms':<24}{percentile(ms, 99):>10.1f}",
        f"  {'latency max, ms':<24}{max(ms):>10.1f}",
        f"  {'server RSS, MB':<24}{rss0:>10.1f} before {rss1:>8.1f} after",
        f"  {'server open fds':<24}{fds0:>10d} before {fds1:>8d} after",
        f"  {'responses':<24}{codes}",
    ]


if __name__ == "__main__":
    print("\n".join(server_load_table(Path(__file__).resolve().parents[2] / "site")))
