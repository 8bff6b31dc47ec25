"""What the benchmark prints and writes: one function per table, bench.json and the chart.

Each table function takes the finished Bench and returns its lines. A new table is one function
here and one line in TABLES.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from .common import (
    PROMPT,
    ROOT,
    SEED,
    STEPS,
    TEMPERATURE,
    TOPP,
    Row,
    Table,
    median,
    ratio,
)
from .server_bench import server_load_table
from .token_view import token_view_table


def baseline(bench, row: Row, name: str) -> float | None:
    """The scalar baseline's median `name` for this row's model (its fp32 twin for int8)."""
    for other in bench.rows:
        if other.model.key == row.model.baseline and other.engine.startswith("native scalar"):
            return other.med(name)
    return None


def speed_table(bench) -> list[str]:
    table = Table(f"Speed: tokens/s, median of {bench.runs} (prompt {PROMPT!r}, {STEPS} steps, "
                  f"-t {TEMPERATURE} -p {TOPP} -s {SEED}; greedy = -t 0)",
                  [("model", None), ("engine", None), ("tok/s", ".1f"), ("x scalar", ".2f"),
                   ("range", ">"), ("greedy", ".1f"), ("x scalar", ".2f")])
    for row in bench.rows:
        tokps, greedy = row.med("tokps"), row.med("greedy")
        values = row.samples.get("tokps", [])
        spread = f"{min(values):.0f}-{max(values):.0f}" if values else "–"
        table.add(row.model.key, row.engine, tokps, ratio(tokps, baseline(bench, row, "tokps")),
                  spread, greedy, ratio(greedy, baseline(bench, row, "greedy")))
    return table.lines()


def overhead(report: dict) -> tuple:
    """Per token, from a loop's report: (ms in all, in forward, outside forward, % outside, in the
    sampler, other)."""
    tokens = report["tokens"]
    per = report["loop_ms"] / tokens
    outside = (report["loop_ms"] - report["forward_ms"]) / tokens
    sample = report["sample_ms"] / tokens
    return (per, report["forward_ms"] / tokens, outside, 100 * outside / per, sample,
            outside - sample)


def overhead_table(bench) -> list[str]:
    table = Table(["Time per token outside forward() (Python loop, sampler, copy, messages), "
                   "sampling, median",
                   "  (ms per token: the whole loop; forward = inside forward(); outside = the rest, "
                   "of which sample = the sampler",
                   "   and other = decoding, the generator, posting pieces and yielding to events)"],
                  [("model", None), ("engine", None), ("ms/token", ".2f"), ("forward", ".2f"),
                   ("outside", ".2f"), ("outside %", ".1f"), ("sample", ".2f"), ("other", ".2f")])
    for row in bench.rows:
        if row.kind == "page":
            reports, name = row.samples["report"], row.engine
        elif "inprocess" in row.samples:
            reports, name = row.samples["inprocess"], row.engine + " [in-process]"
        else:
            continue
        parts = [overhead(r) for r in reports]
        table.add(row.model.key, name, *(median([p[i] for p in parts]) for i in range(6)))
    return table.lines()


def first_token_table(bench) -> list[str]:
    table = Table(["Time to first token, ms, median (page: click on Generate -> first text in "
                   "#output;",
                   "  native CLI: process start -> first byte on stdout, Python start and model "
                   "load included;",
                   "  native in-process: generate() start -> first piece, model already loaded)"],
                  [("model", None), ("engine", None), ("TTFT ms", ".1f")])
    for row in bench.rows:
        if row.kind == "page":
            table.add(row.model.key, row.engine, row.med("ttft_ms"))
        elif "inprocess" in row.samples:
            table.add(row.model.key, row.engine + " [CLI]", row.med("first_byte_ms"))
            table.add(row.model.key, row.engine + " [in-process]",
                      median([r["first_piece_ms"] for r in row.samples["inprocess"]]))
    return table.lines()


def load_table(bench) -> list[str]:
    model = bench.models[0]
    table = Table(f"Page load, ms from navigation start, median of {bench.runs} ({model.key}, "
                  f"{model.mb:.0f} MB model + 32000-token tokenizer)",
                  [("server", None), ("engine", None), ("cold->ready", ".0f"),
                   ("warm->ready", ".0f"), ("warm->1st token", ".0f")])
    for entry in bench.load_rows:
        table.add(entry["server"], entry.get("engine_text", ""), median(entry["cold_ms"]),
                  median(entry["warm_ms"]), median(entry["warm_first_ms"]))
    return table.lines()


def memory_entries(bench) -> list[dict]:
    """The memory table's rows: native CLI (auto threads) and page rows, then the memory-only
    models, grouped by model, native first."""
    entries = []
    for row in bench.rows:
        if row.kind == "native" and row.engine.startswith("native CLI, auto"):
            entries.append({"model": row.model.key, "engine": row.engine, "file_mb": row.model.mb,
                            "peak_mb": max(row.samples["maxrss_mb"]), "end_mb": None,
                            "wasm_mb": None, "tokps": row.med("tokps")})
        elif row.kind == "page":
            entries.append({"model": row.model.key, "engine": row.engine, "file_mb": row.model.mb,
                            "peak_mb": row.info.get("renderer_peak_mb"),
                            "end_mb": row.info.get("renderer_rss_mb"),
                            "wasm_mb": row.info.get("wasm_mb"), "tokps": row.med("tokps")})
    entries += bench.memory_rows
    order = list(dict.fromkeys(m["model"] for m in entries))
    return sorted(entries, key=lambda m: (order.index(m["model"]),
                                          not m["engine"].startswith("native")))


def memory_table(bench) -> list[str]:
    table = Table(["Peak memory, MB (native: ru_maxrss of the CLI process; page: VmHWM of the tab's "
                   "renderer process,",
                   "  which holds the page, its worker, Pyodide and the engine's threads, and its "
                   "RSS at the end; wasm = the",
                   "  size of the engine's and Pyodide's WebAssembly memories at the end; all after "
                   f"{STEPS}-step generations)"],
                  [("model", None), ("engine", None), ("file", ".0f"), ("peak RSS", ".0f"),
                   ("RSS at end", ".0f"), ("engine wasm", ".0f"), ("Pyodide wasm", ".0f"),
                   ("tok/s", ".1f")])
    for m in memory_entries(bench):
        wasm = m["wasm_mb"] or {}
        table.add(m["model"], m["engine"], m["file_mb"], m["peak_mb"], m["end_mb"],
                  wasm.get("engine"), wasm.get("pyodide"), m["tokps"])
    return table.lines()


# Printed in this order, a blank line between them.
TABLES = [speed_table, overhead_table, first_token_table, load_table, memory_table,
          server_load_table, token_view_table]


def tables(bench) -> str:
    return "\n\n".join("\n".join(table(bench)) for table in TABLES)


# -- bench.json and bench.png -------------------------------------------------------------------


def git_describe() -> str:
    proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                          text=True)
    return proc.stdout.strip()


def write(bench, text: str) -> None:
    bench.out.mkdir(parents=True, exist_ok=True)
    rows = [{
        "model": row.model.key, "engine": row.engine, "kind": row.kind,
        "format": row.model.format, "real_model": row.model.real, "model_mb": row.model.mb,
        "tokps": row.med("tokps"), "greedy_tokps": row.med("greedy"),
        "x_scalar": ratio(row.med("tokps"), baseline(bench, row, "tokps")),
        "greedy_x_scalar": ratio(row.med("greedy"), baseline(bench, row, "greedy")),
        "ttft_ms": row.med("ttft_ms"), "samples": row.samples, "info": row.info,
    } for row in bench.rows]
    data = {
        "runs": bench.runs, "quick": bench.quick, "prompt": PROMPT, "steps": STEPS,
        "temperature": TEMPERATURE, "topp": TOPP, "seed": SEED,
        "machine": {"nproc": os.cpu_count(), "uname": " ".join(os.uname()),
                    "python": sys.version.split()[0]},
        "git": git_describe(), "info": bench.info, "notes": bench.notes,
        "timings_s": bench.timings, "rows": rows, "load": bench.load_rows,
        "memory": memory_entries(bench), "tables": text,
    }
    (bench.out / "bench.json").write_text(json.dumps(data, indent=1, default=str))
    chart(bench)


def chart(bench) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    rows = [r for r in bench.rows if r.med("tokps")]
    labels = [f"{r.model.key} | {r.engine}" for r in rows]
    values = [r.med("tokps") for r in rows]
    ratios = [ratio(r.med("tokps"), baseline(bench, r, "tokps")) for r in rows]
    colors = ["#4c72b0" if r.kind == "native" and not r.engine.startswith("native scalar")
              else "#999999" if r.kind == "native" else "#dd8452" for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(10 ** math.floor(math.log10(min(values))), max(values) * 2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(f"tokens/s (median of {bench.runs}, {STEPS} steps, sampling; log scale); "
                  "in brackets: x the scalar baseline")
    for yy, value, r in zip(y, values, ratios):
        ax.text(value * 1.03, yy, f"{value:.0f}" + (f"  ({r:.2f}x)" if r else ""), va="center",
                fontsize=7)
    ax.set_title("llama2c-web: native (blue), scalar baseline (grey), page (orange)")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(bench.out / "bench.png", dpi=110)
    plt.close(fig)
