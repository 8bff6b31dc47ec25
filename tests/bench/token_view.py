"""The token view's cost, for `invoke bench`: the sampler's time per token with the view off (the
default: the hook is None) and on (every sampled token's top 5 and top-p cut), in paired,
alternating runs of the same story on the native engine.

The model has the stories15M vocabulary (32000 tokens, what the sampler's work scales with) and
small layers, so the numbers are the sampler's. "off again" is a second off run in each pair: the
spread between the two off columns is the noise the on/off ratio has to be read against.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from llama2c import Sampler, Stats, Tokenizer
from llama2c.checkpoint import Config, write_checkpoint
from llama2c.generate import generate
from llama2c.native import NativeModel

from .common import Table

CONFIG = Config(dim=64, hidden_dim=172, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=32000,
                seq_len=256)


def sample_ms_per_token(model, tokenizer, view: bool) -> float:
    sampler = Sampler(CONFIG.vocab_size, 1.0, 0.9, 42, model.expf, model)  # as story() makes it
    if view:
        sampler.observe = lambda seen: None  # what the page's Session does: keep the last one
    stats = Stats()
    pieces = sum(1 for _ in generate(model, tokenizer, sampler, "Once upon a time", 256, stats))
    return stats.sample_seconds * 1e3 / max(pieces, 1)


def measure(runs: int, tokenizer_path: Path) -> dict[str, list[float]]:
    """Sampler ms per token, by view setting ("off", "on", "off again"), one value per round."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab32k.bin"
        write_checkpoint(path, CONFIG, seed=7)
        tokenizer = Tokenizer.load(tokenizer_path, CONFIG.vocab_size)
        with NativeModel.open(path, threads=1) as model:
            rows: dict[str, list[float]] = {"off": [], "on": [], "off again": []}
            for _ in range(max(runs, 3)):
                for name, view in (("off", False), ("on", True), ("off again", False)):
                    rows[name].append(sample_ms_per_token(model, tokenizer, view))
    return rows


def token_view_table(bench) -> list[str]:
    """The printed lines for bench.token_view (a `measure` result)."""
    rows = bench.token_view
    table = Table(f"Token view: sampler time per token (vocab 32000, top-p 0.9, native engine; "
                  f"median of {len(rows['off'])} alternating rounds)",
                  [("view", None), ("ms/token", ".3f"), ("ratio to off (paired)", ".2f")])
    for name in ("off", "on", "off again"):
        paired = statistics.median(b / a for a, b in zip(rows["off"], rows[name]))
        table.add(name, statistics.median(rows[name]), paired)
    return table.lines()
