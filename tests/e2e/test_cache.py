"""The model cache (Cache Storage 'llama2c-models-v1') and local model files, counted at the server.

What counts is what the server sent: site_server wraps the dev server's ASGI app and logs each
request with its status and body bytes. A second visit must not ask the server for the model at all
(not even a revalidation answered by 304): the worker looks in Cache Storage before fetching, and a
cached model is the whole point of the cache, for a visitor who is offline or on a slow link too.
"""

from __future__ import annotations

import shutil

from . import widget_util
from .pageutil import (MODELS, args_to_params, click_and_wait, golden_cases, golden_text,
                       open_page, output, wait_for_state)
from .widget_util import open_tab

# the fixtures this module takes from widget_util
fresh_context, site_server = widget_util.fresh_context, widget_util.site_server

CASES = {case["name"]: case for case in golden_cases()}
GREEDY = CASES["greedy_once_n64"]
MODEL = "models/stories260K.bin"
TOKENIZER = "models/tok512.bin"
FILES = {f"/{MODEL}": MODELS / "stories260K.bin", f"/{TOKENIZER}": MODELS / "tok512.bin"}
CACHE_NAME = "llama2c-models-v1"

CACHED_URLS_JS = """async (name) => {
  if (!(await caches.has(name))) return null;
  const cache = await caches.open(name);
  return (await cache.keys()).map((request) => new URL(request.url).pathname).sort();
}"""


def cache_status(page) -> str:
    return page.locator("#cache-status").text_content()


def downloads(site_server, start: int) -> dict[str, list[tuple[str, int, int]]]:
    """(method, status, bytes sent) of every request for the model and tokenizer since `start`."""
    return {path: [(e.method, e.status, e.sent) for e in site_server.log.since(start, path)]
            for path in FILES}


def test_second_visit_reads_the_model_from_the_cache(request, fresh_context, site_server):
    page, _ = open_tab(request, fresh_context())  # nothing cached yet, of any kind
    params = {"model": MODEL, "tokenizer": TOKENIZER, "autostart": "1",
              **args_to_params(GREEDY["args"])}
    full = {path: [("GET", 200, source.stat().st_size)] for path, source in FILES.items()}

    # First visit: downloaded once, in full, and stored.
    start = site_server.log.mark()
    open_page(page, site_server.base, params)
    assert output(page) == golden_text(GREEDY)
    assert downloads(site_server, start) == full, site_server.log.summary(start)
    assert cache_status(page) == "Saved in this browser's cache for next time."
    assert page.evaluate(CACHED_URLS_JS, CACHE_NAME) == sorted(FILES)

    # Second visit, same browser: not one request for either file, and the same story.
    start = site_server.log.mark()
    page.reload()
    wait_for_state(page, "done")  # the probe starts over on each navigation
    assert output(page) == golden_text(GREEDY)
    assert downloads(site_server, start) == {path: [] for path in FILES}, \
        site_server.log.summary(start)
    # The page itself may come from the offline copy (sw.js); the model list always asks the server.
    assert site_server.log.since(start, "/models/index.json"), \
        "the reload did not reach the server at all: the count proves nothing"
    assert cache_status(page) == "Loaded from this browser's cache."

    # Clear cache: Cache Storage is emptied, and the next visit downloads the model again.
    page.locator("#clear-cache").click()
    page.wait_for_function(
        "document.getElementById('cache-status').textContent.startsWith('Cache cleared')")
    assert cache_status(page) == "Cache cleared: models will be downloaded again."
    assert page.evaluate(CACHED_URLS_JS, CACHE_NAME) is None
    start = site_server.log.mark()
    page.reload()
    wait_for_state(page, "done")
    assert output(page) == golden_text(GREEDY)
    assert downloads(site_server, start) == full, site_server.log.summary(start)
    assert cache_status(page) == "Saved in this browser's cache for next time."
    assert page.evaluate(CACHED_URLS_JS, CACHE_NAME) == sorted(FILES)


def test_local_files_are_never_uploaded(request, fresh_context, site_server, tmp_path):
    # Names the server does not have, so a request for them could not be mistaken for another.
    model = tmp_path / "my-own-model.bin"
    tokenizer = tmp_path / "my-own-tokenizer.bin"
    shutil.copyfile(MODELS / "stories260K.bin", model)
    shutil.copyfile(MODELS / "tok512.bin", tokenizer)

    page, _ = open_tab(request, fresh_context())
    open_page(page, site_server.base, {"model": MODEL, "tokenizer": TOKENIZER}, "ready")
    start = site_server.log.mark()
    browser_requests = []
    page.on("request", lambda r: browser_requests.append(f"{r.method} {r.url}"))

    page.locator("#model-file").set_input_files(str(model))
    page.locator("#tokenizer-file").set_input_files(str(tokenizer))
    assert click_and_wait(page, "#load", "ready") == "ready"
    assert cache_status(page) == "Read from your disk; nothing was uploaded."
    page.locator("#prompt").fill("Once upon a time")
    page.locator("#temperature").fill("0")
    page.locator("#steps").fill("64")
    click_and_wait(page, "#generate", "done")
    assert output(page) == golden_text(GREEDY)
    assert page.locator("#error").is_hidden()

    # The server heard nothing while the files were read and the story made, so no byte of them
    # went anywhere; the browser made no request either (not even to another host). The one
    # request the browser makes on its own schedule, a bodiless GET revalidating the service
    # worker's script (seen once in CI as "GET /sw.js -> 304" during this window), is not the
    # page's and can carry nothing.
    heard = [e for e in site_server.log.since(start)
             if not (e.method == "GET" and e.path == "/sw.js")]
    assert heard == [], site_server.log.summary(start)
    assert browser_requests == [], browser_requests
    # And local files are not put into Cache Storage (only downloads are).
    assert page.evaluate(CACHED_URLS_JS, CACHE_NAME) == sorted(FILES)
