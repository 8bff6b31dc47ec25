"""The dev server under load, for `invoke bench`: requests/s, latency, and whether memory and open
file descriptors come back after a burst.

The real dev server (`python -m llama2c.devserver`, as `invoke serve` runs it) is started on
127.0.0.1 on a free port (page_runs.dev_server), serving the benchmark's copy of the site, then sent REQUESTS requests, CONCURRENCY at a time over keep-alive
connections, cycling through what a page load asks for: the page, a model Range read, the engine,
and a missing file. Its resident memory and descriptors are read from /proc before and after. The
client and the server share the machine's cores, so the figures are the pair's, not the server's
alone. Everything is bounded: per-request and whole-run timeouts, and the server is stopped.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from .page_runs import dev_server

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


def measure(site: Path) -> dict:
    """Runs the burst against the dev server serving `site`: its figures, for server_load_table."""
    server = dev_server(site)
    try:
        rss0, fds0 = process_figures(server.proc.pid)
        latencies, statuses, wall = asyncio.run(burst(server.base))
        time.sleep(0.5)  # the client has closed its connections; let the server notice
        rss1, fds1 = process_figures(server.proc.pid)
    finally:
        server.stop()
    ms = [v * 1e3 for v in latencies]
    return {"requests_per_s": len(latencies) / wall, "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms), "rss_mb": (rss0, rss1),
            "fds": (fds0, fds1), "statuses": statuses}


def server_load_table(bench) -> list[str]:
    """The printed lines for bench.server_load (a `measure` result)."""
    m = bench.server_load
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(m["statuses"].items()))
    return [
        f"Dev server under load: {REQUESTS} requests, {CONCURRENCY} concurrent, 127.0.0.1",
        "  (the page, a 64 KB model Range, the engine .wasm, a 404, in turn; client and server "
        "share the cores)",
        f"  {'requests/s':<24}{m['requests_per_s']:>10.0f}",
        f"  {'latency p50, ms':<24}{m['p50_ms']:>10.1f}",
        f"  {'latency p99, ms':<24}{m['p99_ms']:>10.1f}",
        f"  {'latency max, ms':<24}{m['max_ms']:>10.1f}",
        f"  {'server RSS, MB':<24}{m['rss_mb'][0]:>10.1f} before {m['rss_mb'][1]:>8.1f} after",
        f"  {'server open fds':<24}{m['fds'][0]:>10d} before {m['fds'][1]:>8d} after",
        f"  {'responses':<24}{codes}",
    ]
