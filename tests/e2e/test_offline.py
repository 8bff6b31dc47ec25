"""Offline after the first visit (web/sw.js, offline.json), a new build replacing the old offline
copy, storage (persistence asked for, space shown, and a quota failure that still generates), and
Python's memory snapshot, saved on a first visit and restored on the next.

The new-build and new-package tests serve a copy of the site of their own, since they rewrite
files in it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from llama2c.catalog import write_offline_list

from . import widget_util
from .conftest import TestSite as Site
from .pageutil import (SITE, golden_cases, golden_text, open_page, output, page_query, report,
                       wait_for_state, wait_until)
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
    wait_until(page, """async () => {
      const registration = await navigator.serviceWorker.ready;
      return !!registration.active && !!navigator.serviceWorker.controller;
    }""")
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


def new_build_takes_over(page, base: str, site: Site) -> str:
    """After a change to the site's files: writes the new build's offline list, opens the page and
    waits until the new build's offline copy replaced the old one. Returns its cache name."""
    new = f"llama2c-site-{write_offline_list(site.root)['version']}"
    page.goto(f"{base}/?{page_query(STORY)}")
    wait_for_state(page, "done")
    wait_until(page, """(name) => caches.keys().then((names) =>
      names.includes(name) && !names.some((n) => n.startsWith('llama2c-site-') && n !== name))""",
               new)
    return new


def test_a_new_build_replaces_the_offline_copy(request, fresh_context, own_site):
    site, base = own_site
    page, _ = open_tab(request, fresh_context())
    open_page(page, base, STORY)
    old = wait_for_offline_copy(page)

    # A new build: one file changes, and so does the version.
    style = site.root / "style.css"
    style.write_text(style.read_text() + "\n/* build 2 */\n")
    assert new_build_takes_over(page, base, site) != old
    page.reload()
    wait_for_state(page, "done")
    css = page.evaluate("fetch('style.css').then((r) => r.text())")
    assert css.endswith("/* build 2 */\n")
    assert output(page) == golden_text(GREEDY)


# -- Python's memory snapshot (web/worker.js, Cache Storage 'llama2c-runtime-v1') -----------------
# The first visit boots Pyodide and saves its memory right after the boot; the next restores it
# instead of booting, and still writes the golden story. A snapshot that does not start falls back
# to a normal boot without a word to the user, and a new Pyodide or package makes a new one.

RUNTIME_CACHE = "llama2c-runtime-v1"

# The snapshots the runtime cache holds: [{url, size, magic}] (magic: the first 4 bytes, hex).
SNAPSHOTS = """async (name) => {
  if (!(await caches.has(name))) return [];
  const cache = await caches.open(name);
  return Promise.all((await cache.keys()).map(async (request) => {
    const bytes = new Uint8Array(await (await cache.match(request)).arrayBuffer());
    const magic = [...bytes.slice(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join('');
    return { url: request.url, size: bytes.length, magic };
  }));
}"""

# Replaces the snapshot with `size` bytes of zeros or of its start; its Content-Length stays.
SPOIL_SNAPSHOT = """async ([name, how]) => {
  const cache = await caches.open(name);
  const [request] = await cache.keys();
  const bytes = new Uint8Array(await (await cache.match(request)).arrayBuffer());
  const spoilt = how === 'zeros' ? new Uint8Array(bytes.length) : bytes.slice(0, 1 << 20);
  await cache.put(request, new Response(spoilt,
    { headers: { 'Content-Length': String(bytes.length) } }));
}"""


def saved_snapshot(page) -> dict:
    """Waits until the worker has saved a snapshot (it writes it after the first token) and no
    other."""
    return wait_until(page, f"""async () => {{
      const saved = await ({SNAPSHOTS})('{RUNTIME_CACHE}');
      return saved.length === 1 && saved[0].magic !== '00000000' ? saved[0] : null;
    }}""", timeout_s=60.0)


def visit(page, base: str) -> str:
    """Loads the page, checks the golden story, and says how Python started (the worker's
    report: 'saved', 'restored', 'replaced', ...)."""
    open_page(page, base, STORY)
    assert output(page) == golden_text(GREEDY)
    return report(page)["snapshot"]


def test_a_second_visit_restores_the_snapshot_and_a_broken_one_falls_back(request, fresh_context,
                                                                          site_server):
    base = site_server.base
    page, _ = open_tab(request, fresh_context())  # any console error fails the test
    assert visit(page, base) in ("saved", "none")  # booted; the snapshot may still be saving
    first = saved_snapshot(page)
    lock = json.loads((SITE / "pyodide/pyodide-lock.json").read_text())
    assert f"snapshot-{lock['info']['version']}-" in first["url"]
    assert first["size"] > 10_000_000, first  # Python's whole memory, about 21 MB

    assert visit(page, base) == "restored"

    # Zeros of the right size, which Pyodide refuses: a normal boot, the same story, and a good
    # snapshot in its place. Then a truncated one, which the worker refuses: the same.
    for how in ("zeros", "truncated"):
        page.evaluate(SPOIL_SNAPSHOT, [RUNTIME_CACHE, how])
        assert visit(page, base) in ("unusable", "replaced"), how
        assert saved_snapshot(page) == first
    assert visit(page, base) == "restored"


def test_a_new_package_makes_a_new_snapshot(request, fresh_context, own_site):
    site, base = own_site
    page, _ = open_tab(request, fresh_context())
    visit(page, base)
    old = saved_snapshot(page)

    # A new llama2c wheel (one more file in it) and its sha256 in the lock, as a new build writes.
    lock_path = site.root / "pyodide/pyodide-lock.json"
    lock = json.loads(lock_path.read_text())
    wheel = site.root / "pyodide" / lock["packages"]["llama2c"]["file_name"]
    data = wheel.read_bytes()
    wheel.unlink()  # a file of its own, in case it was hard-linked to site/
    wheel.write_bytes(data)
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("llama2c/_new_build.txt", "a new build\n")
    lock["packages"]["llama2c"]["sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lock_path.unlink()
    lock_path.write_text(json.dumps(lock))
    new_build_takes_over(page, base, site)

    assert visit(page, base) in ("saved", "none")  # booted: not the old build's snapshot
    assert saved_snapshot(page)["url"] != old["url"]  # and the old one is gone
