"""Offline after the first visit (web/sw.js, offline.json), a new build replacing the old offline
copy, and storage: persistence asked for, space shown, and a quota failure that still generates.

The new-build test serves a copy of the site of its own, since it rewrites files in it.
"""

from __future__ import annotations

import json

import pytest

from llama2c.catalog import write_offline_list

from . import widget_util
from .conftest import TestSite as Site
from .pageutil import SITE, golden_cases, golden_text, open_page, output, page_query, wait_for_state
from .widget_util import ThreadServer, open_tab

fresh_context, site_server = widget_util.fresh_context, widget_util.site_server

CASES = {case["name"]: case for case in golden_cases()}
GREEDY = CASES["greedy_once_n64"]
STORY = {"model": "models/stories260K.bin", "tokenizer": "models/tok512.bin",
         "prompt": "Once upon a time", "temperature": "0", "steps": "64", "autostart": "1"}

# Counts the page's calls to navigator.storage.persist() (installed before the page's scripts).
PERSIST_SPY = """
(() => {
  window.__persistCalls = 0;
  if (!navigator.storage || !navigator.storage.persist) return;
  const persist = navigator.storage.persist.bind(navigator.storage);
  navigator.storage.persist = () => { window.__persistCalls += 1; return persist(); };
})();
"""


def wait_for_offline_copy(page) -> str:
    """Waits until the service worker is active and controls the page; its cache name."""
    page.wait_for_function("""async () => {
      const registration = await navigator.serviceWorker.ready;
      return !!registration.active && !!navigator.serviceWorker.controller;
    }""", timeout=120_000, polling=200)
    names = page.evaluate("caches.keys()")
    site = [n for n in names if n.startswith("llama2c-site-")]
    assert len(site) == 1, names
    return site[0]


def test_offline_after_one_visit(request, fresh_context, site_server):
    context = fresh_context()
    context.add_init_script(PERSIST_SPY)
    page, _ = open_tab(request, context)
    open_page(page, site_server.base, STORY)
    assert output(page) == golden_text(GREEDY)
    assert "Saved in this browser's cache" in page.locator("#cache-status").text_content()
    assert page.evaluate("window.__persistCalls") == 1  # asked once the model was saved
    page.wait_for_function("document.getElementById('storage').textContent.includes('MB left')")
    listing = json.loads((SITE / "offline.json").read_text())
    assert wait_for_offline_copy(page) == f"llama2c-site-{listing['version']}"

    context.set_offline(True)
    page.reload()
    wait_for_state(page, "done")
    assert output(page) == golden_text(GREEDY)
    assert "Loaded from this browser's cache" in page.locator("#cache-status").text_content()
    context.set_offline(False)


def test_quota_failure_still_generates_and_says_not_saved(request, fresh_context, site_server):
    context = fresh_context()
    page, console = open_tab(request, context)
    # A real quota failure: Chromium's quota for the site's origin, made smaller than the model.
    cdp = context.new_cdp_session(page)
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": site_server.base, "quotaSize": 200_000})
    open_page(page, site_server.base, STORY)
    assert output(page) == golden_text(GREEDY)
    status = page.locator("#cache-status").text_content()
    assert status.startswith("Not saved: browser storage is full."), status
    assert page.evaluate("""async () => !!(await (await caches.open('llama2c-models-v1'))
      .match(new URL('models/stories260K.bin', location.href).href))""") is False


@pytest.fixture
def own_site(tmp_path, test_site):
    (tmp_path / "site").mkdir()
    site = Site.mirror(SITE, tmp_path / "site")
    from llama2c.devserver import create_app

    server = ThreadServer(create_app(site.root))
    yield site, f"http://127.0.0.1:{server.port}"
    server.close()


def test_a_new_build_replaces_the_offline_copy(request, fresh_context, own_site):
    site, base = own_site
    page, _ = open_tab(request, fresh_context())
    open_page(page, base, STORY)
    old = wait_for_offline_copy(page)

    # A new build: one file changes, and so does the version.
    style = site.root / "style.css"
    style.write_text(style.read_text() + "\n/* build 2 */\n")
    new = f"llama2c-site-{write_offline_list(site.root)['version']}"
    assert new != old
    page.goto(f"{base}/?{page_query(STORY)}")
    wait_for_state(page, "done")
    page.wait_for_function("""(name) => caches.keys().then((names) =>
      names.includes(name) && !names.some((n) => n.startsWith('llama2c-site-') && n !== name))""",
                           arg=new, timeout=120_000, polling=200)
    page.reload()
    wait_for_state(page, "done")
    css = page.evaluate("fetch('style.css').then((r) => r.text())")
    assert css.endswith("/* build 2 */\n")
    assert output(page) == golden_text(GREEDY)
