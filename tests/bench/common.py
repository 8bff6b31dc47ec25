"""Settings, paths and the result containers every part of the benchmark shares."""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from conftest import ROOT, SHARED

PYLIB = ROOT / "pylib"
SITE = ROOT / "site"
MODELS = ROOT / "models"

# What every speed row generates: run.c's flags.
PROMPT = "Once upon a time"
STEPS = 256
TEMPERATURE = "1.0"
TOPP = "0.9"
SEED = "42"
GREEDY = "0"
MODEL_SEEDS = {"stories15M": 15, "stories42M": 42, "stories110M": 110}  # random weights' seeds

NATIVE_TIMEOUT = 600  # seconds for one command line run
PAGE_TIMEOUT_MS = 180_000  # one page load or one generation

__all__ = ["BenchError", "GREEDY", "MODELS", "MODEL_SEEDS", "NATIVE_TIMEOUT", "PAGE_TIMEOUT_MS",
           "PROMPT", "PYLIB", "ROOT", "Row", "SEED", "SHARED", "SITE", "STEPS", "TEMPERATURE",
           "TOPP", "Table", "checkout_env", "median", "ratio", "say"]


class BenchError(Exception):
    """A problem that stops the benchmark, with a message saying what to do."""


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"» [{time.monotonic() - _T0:4.0f} s] {message}", flush=True)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# This checkout's llama2c package, here and in every subprocess (the installed `llama2c` command
# imports it too), whatever checkout `pip install -e` last pointed at.
if str(PYLIB) not in sys.path[:1]:
    sys.path.insert(0, str(PYLIB))


def checkout_env(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(PYLIB)] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One model on one engine: every run's values by name (tokps, greedy, report, ...)."""

    model: object  # models.Model
    engine: str  # shown in the tables
    kind: str  # native | page
    samples: dict[str, list] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def add(self, name: str, value) -> None:
        self.samples.setdefault(name, []).append(value)

    def med(self, name: str) -> float | None:
        return median(self.samples.get(name, []))


class Table:
    """A printed table: text columns (format None) left-aligned and as wide as their widest cell,
    number columns (a format such as ".1f") and right-aligned text (">") right-aligned in at least
    `number_width` characters, and '–' where a value is missing.

        table = Table("Title", [("model", None), ("tok/s", ".1f")])
        table.add("stories15M", 210.4)
        print("\\n".join(table.lines()))
    """

    def __init__(self, title: str | list[str], columns: list[tuple[str, str | None]],
                 number_width: int = 9):
        self.title = [title] if isinstance(title, str) else title
        self.columns = columns  # (header, number format or None for text)
        self.number_width = number_width
        self.rows: list[tuple] = []

    def add(self, *cells) -> None:
        assert len(cells) == len(self.columns), (cells, self.columns)
        self.rows.append(cells)

    def lines(self) -> list[str]:
        widths = []
        for i, (header, spec) in enumerate(self.columns):
            if spec is None:
                widths.append(max([len(header)] + [len(str(r[i])) for r in self.rows]) + 2)
            else:
                cells = [len(str(r[i])) for r in self.rows] if spec == ">" else []
                widths.append(max([self.number_width, len(header) + 2] + [n + 2 for n in cells]))
        out = list(self.title)
        out.append("".join(f"{h:<{w}}" if spec is None else f"{h:>{w}}"
                           for (h, spec), w in zip(self.columns, widths)))
        for row in self.rows:
            cells = []
            for cell, (_, spec), width in zip(row, self.columns, widths):
                if spec is None:
                    cells.append(f"{str(cell):<{width}}")
                elif cell is None or spec == ">":
                    cells.append(f"{cell or '–':>{width}}")
                else:
                    cells.append(f"{format(cell, spec):>{width}}")
            out.append("".join(cells))
        return out
