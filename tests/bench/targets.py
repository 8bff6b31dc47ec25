"""The speed targets of issue 13, measured side by side: `invoke bench` prints this table.

This machine's speed drifts within a minute (other work shares its two cores), so every ratio is
paired: each measurement runs next to the one it is compared with, in rounds that alternate their
order (forward, then backward), and a line shows the median of the per-round ratios with their
range. One round runs, on a stories15M-shaped model with random weights (speed does not depend on
the values), 256 steps from "Once upon a time":

- the baseline: the command line on the engine compiled with run.c's plain loops (-DL2C_SCALAR,
  gcc -O3: llama2.c's `make run`), one thread; greedy, and sampling (-t 1 -p 0.9 -s 42);
- the page on one thread (the single-thread engine): fp32 greedy and sampling, int8 greedy;
- the command line with int8, one thread.

Sampling is measured on two models: "peaked" logits (standard deviation about 5, like a trained
model's: a nucleus of a few dozen tokens) and "flat" ones (about 0.5, a model early in training or
a high temperature: the nucleus is most of the vocabulary).

Also: the time outside forward() per token in the page (loop time minus forward time, from the
worker's report), warm and cold loads to the first token (with each start-up step), and int8
quality (teacher-forced argmax agreement with fp32 over 64 positions) on every trained model found.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llama2c.toolchain import CHROMIUM, CHROMIUM_ARGS

from .common import PROMPT, ROOT, SEED, SHARED, SITE, STEPS, TOPP, checkout_env, say
from .models import compile_scalar
from .page_runs import dev_server, link_or_copy

GREEDY = ["-t", "0"]
SAMPLING = ["-t", "1", "-p", TOPP, "-s", SEED]
FLAT_EMBEDDING_SCALE = 0.03  # random_weights' default 0.3 gives logits of std ~5; this ~0.5
PAGE_TIMEOUT_MS = 300_000


# -- what is measured ---------------------------------------------------------------------------


@dataclasses.dataclass
class Line:
    """One line of the target table: a measured value against its target."""
    name: str
    target: str
    values: list[float]  # per round (ratios or shares)
    kind: str = "ratio"  # ratio (x) or share (%)

    def cell(self) -> str:
        if not self.values:
            return "not measured"
        med = statistics.median(self.values)
        lo, hi = min(self.values), max(self.values)
        if self.kind == "share":
            return f"{med * 100:.0f}% ({lo * 100:.0f}-{hi * 100:.0f}%)"
        if self.kind == "seconds":
            return f"{med:.2f} s ({lo:.2f}-{hi:.2f})"
        if self.kind == "count":
            return ", ".join(f"{v}" for v in self.values)
        return f"{med:.2f}x ({lo:.2f}-{hi:.2f})"


# -- the command line -----------------------------------------------------------------------------


def cli_tokps(model: Path, tokenizer: Path, args: list[str], engine: Path | None = None) -> float:
    """tok/s of `llama2c run` on one thread, as run.c reports it (stderr)."""
    env = checkout_env({**os.environ, "LLAMA2C_THREADS": "1"})
    if engine:
        env["LLAMA2C_ENGINE"] = str(engine)
    command = [sys.executable, "-m", "llama2c", "run", str(model), "-z", str(tokenizer), *args,
               "-n", str(STEPS), "-i", PROMPT]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    match = re.search(r"achieved tok/s: ([0-9.]+)", proc.stderr)
    if proc.returncode or not match:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip()[-500:]}")
    return float(match.group(1))


# -- the page -------------------------------------------------------------------------------------

# Records when the first piece of the story appears (ms since the navigation started).
FIRST_PIECE_PROBE = """
new MutationObserver((records, observer) => {
  const output = document.getElementById('output');
  if (output && output.textContent) {
    window.__firstPiece = performance.now();
    observer.disconnect();
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def page_run(context, base: str, model: str, tokenizer: str, args: list[str]) -> dict:
    """One story in the page (one thread), 256 steps; its report plus the first piece's time."""
    params = dict(zip(args[::2], args[1::2]))
    query = {"model": model, "tokenizer": tokenizer, "threads": "1", "steps": str(STEPS),
             "prompt": PROMPT, "autostart": "1", "temperature": params["-t"]}
    if "-p" in params:
        query.update(topp=params["-p"], seed=params["-s"])
    page = context.new_page()
    try:
        page.add_init_script(FIRST_PIECE_PROBE)
        page.goto(f"{base}/?" + "&".join(f"{k}={v.replace(' ', '%20')}" for k, v in query.items()))
        page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)",
                               timeout=PAGE_TIMEOUT_MS, polling=100)
        if page.evaluate("document.body.dataset.state") != "done":
            raise RuntimeError(page.locator("#error").text_content())
        report = json.loads(page.evaluate("document.body.dataset.report"))
        report["first_piece_ms"] = page.evaluate("window.__firstPiece")
        report["engine"] = page.locator("#engine").text_content()
        return report
    finally:
        page.close()


def outside_share(report: dict) -> float:
    return (report["loop_ms"] - report["forward_ms"]) / report["loop_ms"]


# -- models ---------------------------------------------------------------------------------------


def make_models(folder: Path) -> dict[str, Path]:
    from llama2c.checkpoint import SHAPES, random_weights, write_checkpoint
    from llama2c.quantize import quantize_checkpoint

    shape = SHAPES["stories15M"]
    peaked = write_checkpoint(folder / "peaked15M.bin", shape, seed=15)
    flat = write_checkpoint(folder / "flat15M.bin", shape, random_weights(
        shape, 15, embedding_scale=FLAT_EMBEDDING_SCALE))
    int8 = folder / "peaked15M_q80.bin"
    quantize_checkpoint(peaked, int8)
    tokenizer = folder / "tokenizer.bin"
    link_or_copy(SHARED / "models/tokenizer.bin", tokenizer)
    return {"peaked": peaked, "flat": flat, "int8": int8, "tokenizer": tokenizer}


def link_site(target: Path, models: dict[str, Path]) -> None:
    """site/ as hard links in `target`, with the bench's models in models/."""
    for source in sorted(SITE.rglob("*")):
        dest = target / source.relative_to(SITE)
        if source.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, dest)
    for path in models.values():
        dest = target / "models" / path.name
        if not dest.exists():
            link_or_copy(path, dest)


# -- int8 quality ---------------------------------------------------------------------------------


def int8_quality(folder: Path) -> list[str]:
    """Teacher-forced argmax agreement of int8 with fp32 over 64 positions of the fp32 greedy
    story, for every trained model at hand (stories260K, and any in models/)."""
    import numpy as np
    from llama2c.native import NativeModel
    from llama2c.quantize import quantize_checkpoint

    candidates = [SHARED / "models/stories260K.bin"]
    candidates += [p for p in sorted((ROOT / "models").glob("stories*.bin"))
                   if p.name != "stories260K.bin" and "_q80" not in p.name]
    results = []
    for fp32_path in candidates:
        int8_path = folder / f"{fp32_path.stem}_q80.bin"
        quantize_checkpoint(fp32_path, int8_path)
        with NativeModel.open(fp32_path) as fp32, NativeModel.open(int8_path) as int8:
            tokens, agree = [1], 0
            for pos in range(64):
                a = fp32.forward(tokens[-1], pos)
                b = int8.forward(tokens[-1], pos)
                agree += int(np.argmax(a) == np.argmax(b))
                tokens.append(int(np.argmax(a)))
        results.append(f"{fp32_path.stem} {agree}/64")
    return results


# -- the table ------------------------------------------------------------------------------------


def measure(rounds: int) -> tuple[list[Line], dict]:
    from playwright.sync_api import sync_playwright

    extra: dict = {}
    with tempfile.TemporaryDirectory(prefix="llama2c-targets-") as tmp:
        tmp = Path(tmp)
        (tmp / "models").mkdir()
        say("targets: models (stories15M shape: peaked, flat, int8) and the scalar baseline")
        models = make_models(tmp / "models")
        scalar = compile_scalar(tmp)
        link_site(tmp / "site", models)
        server = dev_server(tmp / "site")
        url = {key: f"models/{path.name}" for key, path in models.items()}
        tok = models["tokenizer"]
        results: dict[str, list] = {}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context()
                # warm the model cache and the HTTP cache once
                for key in ("peaked", "flat", "int8"):
                    page_run(context, server.base, url[key], url["tokenizer"], GREEDY)
                steps = {
                    "base greedy": lambda: cli_tokps(models["peaked"], tok, GREEDY, scalar),
                    "page greedy": lambda: page_run(context, server.base, url["peaked"],
                                                    url["tokenizer"], GREEDY),
                    "page int8": lambda: page_run(context, server.base, url["int8"],
                                                  url["tokenizer"], GREEDY),
                    "cli int8": lambda: cli_tokps(models["int8"], tok, GREEDY),
                    "base peaked": lambda: cli_tokps(models["peaked"], tok, SAMPLING, scalar),
                    "page peaked": lambda: page_run(context, server.base, url["peaked"],
                                                    url["tokenizer"], SAMPLING),
                    "base flat": lambda: cli_tokps(models["flat"], tok, SAMPLING, scalar),
                    "page flat": lambda: page_run(context, server.base, url["flat"],
                                                  url["tokenizer"], SAMPLING),
                }
                for r in range(rounds):
                    order = list(steps) if r % 2 == 0 else list(reversed(steps))
                    say(f"targets: round {r + 1} of {rounds} ({order[0]} first)")
                    for name in order:
                        results.setdefault(name, []).append(steps[name]())
                # start-up: a warm load (model cached, same browser) and cold ones (new profile)
                warm, cold = [], []
                for _ in range(rounds):
                    warm.append(page_run(context, server.base, url["peaked"], url["tokenizer"],
                                         GREEDY))
                    fresh = browser.new_context()
                    cold.append(page_run(fresh, server.base, url["peaked"], url["tokenizer"],
                                         GREEDY))
                    fresh.close()
                browser.close()
        finally:
            server.stop()
        extra["startup"] = {"warm": [r["startup"] for r in warm], "cold": [r["startup"] for r in cold]}
        extra["engine"] = results["page int8"][0]["engine"]
        say("targets: int8 quality")
        extra["quality"] = int8_quality(tmp)

    def tokps(name: str) -> list[float]:
        return [r["tokps"] if isinstance(r, dict) else r for r in results[name]]

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(tokps(a), tokps(b))]

    shares = {name: [outside_share(r) for r in results[name]]
              for name in ("page greedy", "page peaked", "page flat")}
    lines = [
        Line("page fp32, 1 thread, greedy, vs scalar -O3 baseline", ">= 3.5x",
             ratio("page greedy", "base greedy")),
        Line("page fp32, 1 thread, -t 1 -p 0.9, peaked, vs baseline", ">= 3.2x",
             ratio("page peaked", "base peaked")),
        Line("page fp32, 1 thread, -t 1 -p 0.9, flat, vs baseline", ">= 1.5x",
             ratio("page flat", "base flat")),
        Line("page int8, 1 thread, vs page fp32, 1 thread", ">= 2.0x",
             ratio("page int8", "page greedy")),
        Line("page int8, 1 thread, vs native CLI int8, 1 thread", ">= 0.9x",
             ratio("page int8", "cli int8")),
        Line("time outside forward() in the page, greedy", "<= 10%", shares["page greedy"],
             "share"),
        Line("time outside forward() in the page, peaked", "<= 10%", shares["page peaked"],
             "share"),
        Line("time outside forward() in the page, flat", "<= 30%", shares["page flat"], "share"),
        Line("warm page load (model cached) to first token", "<= 1.5 s",
             [r["first_piece_ms"] / 1e3 for r in warm], "seconds"),
        Line("cold load to first token, stories15M shape, local server", "<= 3.5 s",
             [r["first_piece_ms"] / 1e3 for r in cold], "seconds"),
        Line("int8 quality: teacher-forced argmax agreement with fp32", ">= 62/64",
             extra["quality"], "count"),
    ]
    extra["tokps"] = {name: tokps(name) for name in results}
    return lines, extra


def table(lines: list[Line], extra: dict) -> list[str]:
    width = max(len(line.name) for line in lines) + 2
    out = [f"{'line':<{width}}{'measured (median, range)':<28}target",
           "-" * (width + 38)]
    out += [f"{line.name:<{width}}{line.cell():<28}{line.target}" for line in lines]
    out.append("tok/s per round: " + "; ".join(
        f"{name} {', '.join(f'{v:.0f}' for v in values)}" for name, values in extra["tokps"].items()))
    out.append(f"int8 engine in the page: {extra['engine']}")
    for which in ("warm", "cold"):
        runs = extra["startup"][which]
        steps = [k for k in runs[0] if not k.endswith("ends at")]
        cells = ", ".join(f"{k} {statistics.median(r.get(k, 0) for r in runs):.0f}"
                          for k in steps)
        out.append(f"start-up steps, {which} (ms, median; they overlap): {cells}")
    return out


def main(rounds: int = 3, out: Path | None = None) -> list[str]:
    """Measures and returns the printed table; writes targets.json into `out` when given."""
    lines, extra = measure(rounds)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "targets.json").write_text(json.dumps(
            {"lines": [dataclasses.asdict(line) for line in lines], **extra}, indent=1))
    return table(lines, extra)


