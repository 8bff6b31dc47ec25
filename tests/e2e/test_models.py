"""The model list: models/index.json (llama2c.catalog, written by `invoke build`) and the page's
list of the site's models, its default, and links made by choosing one.

These tests serve a site of their own (the built site's files with a models/ folder they fill),
so that the shared test site's models do not change the default.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llama2c.catalog import ModelEntry, default_model, scan, write_index
from llama2c.checkpoint import Config, write_checkpoint

from .conftest import TestSite as Site, link_or_copy
from .pageutil import MODELS, SITE, cli_story, mark, page_query, wait_for_state
from . import widget_util
from .widget_util import ThreadServer, open_tab

fresh_context = widget_util.fresh_context  # the fixture this module takes from widget_util


@pytest.fixture(scope="module")
def small_site(tmp_path_factory, test_site):
    """A copy of the site whose models/ holds only stories260K and chatty260K (and tok512)."""
    site = Site.mirror(SITE, tmp_path_factory.mktemp("small-site"))
    shutil.rmtree(site.models)
    site.models.mkdir()
    for name in ["stories260K.bin", "chatty260K.bin", "tok512.bin"]:
        link_or_copy(MODELS / name, site.models / name)
    write_index(site.models)
    from llama2c.devserver import create_app

    server = ThreadServer(create_app(site.root))
    yield site, f"http://127.0.0.1:{server.port}"
    server.close()


def test_index_lists_models_with_their_tokenizer_size_format_and_shape(small_site):
    site, _ = small_site
    index = json.loads((site.models / "index.json").read_text())
    assert index["default"] == "stories260K"
    by_name = {m["name"]: m for m in index["models"]}
    assert set(by_name) == {"stories260K", "chatty260K"}  # tok512.bin is not a model
    m = by_name["stories260K"]
    assert m == {"name": "stories260K", "file": "stories260K.bin", "tokenizer": "tok512.bin",
                 "bytes": (MODELS / "stories260K.bin").stat().st_size, "format": "fp32",
                 "shape": {"dim": 64, "hidden_dim": 172, "n_layers": 5, "n_heads": 8,
                           "n_kv_heads": 4, "vocab_size": 512, "seq_len": 512}}


def test_default_model_rule():
    """stories15M when present; else the largest published model present; else the largest."""
    def entries(*names_sizes):
        return [ModelEntry(n, f"{n}.bin", "tok.bin", size, "fp32", {}) for n, size in names_sizes]

    assert default_model(entries(("stories260K", 1), ("stories15M", 5), ("stories110M", 9))) \
        == "stories15M"
    assert default_model(entries(("stories260K", 1), ("stories42M", 5), ("big", 99))) == "stories42M"
    assert default_model(entries(("a", 1), ("b", 7))) == "b"
    assert default_model([]) is None


def test_a_model_without_its_tokenizer_is_left_out(tmp_path):
    link_or_copy(MODELS / "stories260K.bin", tmp_path / "stories260K.bin")
    entries, skipped = scan(tmp_path)
    assert entries == [] and "tok512.bin" in skipped[0]


def model_list(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('#model-list li')].map((li) => ({
      text: li.textContent, value: li.querySelector('input').value,
      checked: li.querySelector('input').checked }))""")


def test_the_page_opens_on_the_default_and_a_chosen_model_makes_a_link(request, fresh_context,
                                                                        small_site):
    site, base = small_site
    page, _ = open_tab(request, fresh_context())
    page.goto(f"{base}/")
    wait_for_state(page, "ready")
    assert "dim 64" in page.locator("#model-info").text_content()
    items = model_list(page)
    assert [i["value"] for i in items] == ["models/chatty260K.bin", "models/stories260K.bin"]
    assert [i["checked"] for i in items] == [False, True]
    assert "1.1 MB fp32" in items[1]["text"]
    page.close()

    # An int8 file and a model with another tokenizer join the list.
    link_or_copy(MODELS / "stories260K_q80.bin", site.models / "stories260K_q80.bin")
    link_or_copy(MODELS / "tokenizer.bin", site.models / "tokenizer.bin")
    write_checkpoint(site.models / "tiny32k.bin", Config(16, 32, 1, 2, 2, 32000, 32), seed=3)
    write_index(site.models)
    settings = {"temperature": "0.8", "topp": "0.9", "seed": "42", "steps": "128",
                "prompt": "Once upon a time"}
    page, _ = open_tab(request, fresh_context())
    page.goto(f"{base}/?{page_query(settings)}")
    wait_for_state(page, "ready")
    items = {i["value"]: i["text"] for i in model_list(page)}
    assert set(items) == {f"models/{n}.bin" for n in
                          ["chatty260K", "stories260K", "stories260K_q80", "tiny32k"]}
    for name, text in items.items():
        size = (site.models / Path(name).name).stat().st_size
        assert f"{size / 1e6:.1f} MB" in text, text
    assert "int8" in items["models/stories260K_q80.bin"]

    since = mark(page)
    page.locator('#model-list input[value="models/stories260K_q80.bin"]').check()
    wait_for_state(page, "ready", since=since)
    assert "int8" in page.locator("#model-info").text_content()
    link = page.url
    assert "model=models%2Fstories260K_q80.bin" in link or "model=models/stories260K_q80.bin" in link
    since = mark(page)
    page.locator("#generate").click()
    wait_for_state(page, "done", since=since)
    story = page.locator("#output").text_content()
    # the command line on the same file (the int8 engine's own goldens are test_int8's business)
    assert story == cli_story(str(MODELS / "stories260K_q80.bin"), str(MODELS / "tok512.bin"),
                              "-t", "0.8", "-p", "0.9", "-s", "42", "-n", "128",
                              "-i", "Once upon a time")

    again, _ = open_tab(request, fresh_context(), "link")
    again.goto(f"{link}&autostart=1")
    wait_for_state(again, "done")
    assert again.locator("#output").text_content() == story
