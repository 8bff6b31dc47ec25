"""<llama2c-story> embedded in another origin's page, the iframe embed, and chat (widget and page).

Origin A is the dev server (site_server, http://127.0.0.1:PORT), origin B a host page server
(host_server, http://localhost:PORT). Every widget must print exactly what the reference prints.
"""

from __future__ import annotations

from urllib.parse import quote

from . import widget_util
from .pageutil import args_to_params, golden_cases, golden_text, output, wait_for_state
from .widget_util import (EVENTS_SCRIPT, host_page, open_tab, wait_for_widgets, widget_info,
                          widget_tag)

# the fixtures this module takes from widget_util
fresh_context, host_server, site_server = (widget_util.fresh_context, widget_util.host_server,
                                           widget_util.site_server)

CASES = {case["name"]: case for case in golden_cases()}
MODEL = "models/stories260K.bin"
TOKENIZER = "models/tok512.bin"
MODEL_260K = {"model": MODEL, "tokenizer": TOKENIZER}


def test_two_widgets_on_another_origin_share_one_download(request, fresh_context, site_server,
                                                          host_server, test_site):
    cases = [CASES["greedy_once_n64"], CASES["topp_t0.8_p0.9_s42_n128"]]
    ids = ["greedy", "topp"]
    widgets = "\n".join(
        widget_tag(id_, {**MODEL_260K, **args_to_params(case["args"]), "autostart": ""})
        for id_, case in zip(ids, cases))
    url = host_server.add("two-widgets.html", host_page(
        "two stories", f"<h1>Two stories</h1>\n{widgets}\n{EVENTS_SCRIPT}\n"
        f'<script type="module" src="{site_server.url("llama2c-widget.js")}"></script>'))
    page, _ = open_tab(request, fresh_context())  # empty Cache Storage: the models are downloaded
    start, host_start = site_server.log.mark(), host_server.log.mark()
    page.goto(url)
    states = wait_for_widgets(page, ids)
    infos = {id_: widget_info(page, id_) for id_ in ids}
    assert states == {id_: "done" for id_ in ids}, infos

    # Really across origins: the page is B's, the widget and its worker come from A.
    assert page.evaluate("location.origin") == host_server.base
    assert host_server.base.startswith("http://localhost:")
    assert site_server.base.startswith("http://127.0.0.1:")
    assert page.evaluate("crossOriginIsolated") is False

    for id_, case in zip(ids, cases):
        info = infos[id_]
        assert info["text"] == golden_text(case), (id_, info)
        assert info["shown"] == info["text"]  # what the reader sees is the story
        assert info["error"] is None, info

    # The two widgets share one worker, so each file was sent once, in full.
    log = site_server.log
    for path in [f"/{MODEL}", f"/{TOKENIZER}"]:
        got = log.since(start, path)
        size = (test_site.root / path.lstrip("/")).stat().st_size
        assert [(e.method, e.status, e.sent) for e in got] == [("GET", 200, size)], \
            f"{path}: expected one full download, server log:\n  {log.summary(start)}"
    # The host page itself is the only thing origin B served (no assets leak there).
    assert [e.path for e in host_server.log.since(host_start)] == ["/two-widgets.html"]

    # Events: progress while loading, tokens while generating, done with the whole text.
    events = page.evaluate("window.__events")
    for id_, case in zip(ids, cases):
        kinds = [e["type"] for e in events[id_]]
        assert "error" not in kinds, events[id_]
        assert kinds.count("done") == 1, kinds
        assert kinds[-1] == "done", kinds[-5:]  # nothing after done
        assert "progress" in kinds and kinds.index("progress") < kinds.index("token"), kinds[:10]
        tokens = [e["detail"]["text"] for e in events[id_] if e["type"] == "token"]
        assert len(tokens) >= 1
        assert "".join(tokens) == golden_text(case)  # the token events add up to the story
        assert events[id_][-1]["detail"]["text"] == golden_text(case)
        progress = [e["detail"] for e in events[id_] if e["type"] == "progress"]
        assert all({"what", "loaded", "total"} <= set(p) for p in progress), progress[:3]
    # The model's byte progress goes to the widget whose load started the download.
    whats = {id_: {e["detail"]["what"] for e in events[id_] if e["type"] == "progress"}
             for id_ in ids}
    assert "runtime" in whats["greedy"] and "runtime" in whats["topp"], whats
    assert "model" in whats["greedy"] | whats["topp"], whats


def test_iframe_embed_from_another_origin(request, fresh_context, site_server, host_server):
    case = CASES["greedy_once_n64"]
    query = "&".join(f"{k}={quote(v)}" for k, v in {
        **MODEL_260K, **args_to_params(case["args"]), "autostart": "1"}.items())
    src = f"{site_server.url('embed.html')}?{query}"
    assert "prompt=Once%20upon%20a%20time" in src and "temperature=0" in src and "steps=64" in src
    url = host_server.add("iframe.html", host_page(
        "an embedded story",
        f'<h1>An embedded story</h1>\n<iframe id="story" title="A tiny story" src="{src}" '
        'width="600" height="400"></iframe>'))
    page, _ = open_tab(request, fresh_context())
    page.goto(url)
    frame = page.frame_locator("#story")
    frame.locator("llama2c-story").wait_for(state="attached")
    inner = next(f for f in page.frames if f.url.startswith(site_server.base))
    assert inner.evaluate("location.origin") == site_server.base  # the frame is origin A's
    inner.evaluate("document.querySelector('llama2c-story').id = 'embedded'")
    assert wait_for_widgets(inner, ["embedded"]) == {"embedded": "done"}, \
        widget_info(inner, "embedded")
    info = widget_info(inner, "embedded")
    assert info["text"] == golden_text(case), info
    assert info["shown"] == info["text"]
    # The query parameters became the widget's attributes.
    attrs = inner.evaluate("""() => Object.fromEntries([...document.querySelector('llama2c-story')
      .attributes].filter((a) => a.name !== 'id').map((a) => [a.name, a.value]))""")
    assert attrs == {**MODEL_260K, "prompt": "Once upon a time", "temperature": "0",
                     "steps": "64", "autostart": "1", "data-state": "done"}, attrs


def test_chat_widget_with_a_system_prompt(request, page, dev_server, test_site):
    """mode="chat" with a system prompt is run.c's `-m chat -y ...` (without one, the widget reads
    it first as run.c does: test_chat.py)."""
    case = CASES["chat_greedy_sys"]
    params = args_to_params(case["args"])
    assert params["mode"] == "chat" and params["system"] == "You tell stories."
    body = "\n".join([widget_tag("sys", {**MODEL_260K, **params, "autostart": ""}),
                      '<script type="module" src="llama2c-widget.js"></script>'])
    # Same origin as the site this time: the worker is started directly, not through a blob.
    (test_site.root / "e2e-chat-widgets.html").write_text(host_page("chat widgets", body))
    page.goto(f"{dev_server}/e2e-chat-widgets.html")
    states = wait_for_widgets(page, ["sys"])
    info = widget_info(page, "sys")
    assert states == {"sys": "done"}, info
    assert info["text"] == golden_text(case), info


# -- chat through the page's URL contract ----------------------------------------------------------


def test_chat_page_with_a_system_prompt(page, dev_server):
    case = CASES["chat_greedy_sys"]
    query = ("mode=chat&system=You%20tell%20stories.&prompt=Once%20upon%20a%20time&steps=80"
             "&temperature=0&autostart=1&model=models/stories260K.bin&tokenizer=models/tok512.bin")
    page.goto(f"{dev_server}/?{query}")
    wait_for_state(page, "done")
    assert output(page) == golden_text(case)
    assert page.locator("#mode").input_value() == "chat"
    assert page.locator("#system").input_value() == "You tell stories."
    assert page.locator("#system-field").is_visible()


# -- the element's API -------------------------------------------------------------------------


CREATE_AND_GENERATE = """async (attributes) => {
  await import('./llama2c-widget.js');
  const el = document.createElement('llama2c-story');
  el.id = 'made';
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  const dones = [];
  el.addEventListener('done', () => dones.push(el.text));
  const story = el.generate(); // before it is even on the page, let alone loaded
  document.body.append(el);
  try {
    const text = await story;
    await el.ready;
    return { text, state: el.state, dones };
  } catch (e) {
    const ready = await el.ready.then(() => null, (r) => r.message);
    return { rejected: e.message, ready, state: el.state,
             shown: el.shadowRoot.querySelector('.error').textContent };
  }
}"""


def test_generate_right_after_creation_waits_for_the_model(page, dev_server, test_site):
    (test_site.root / "e2e-empty.html").write_text(host_page("empty", ""))
    page.goto(f"{dev_server}/e2e-empty.html")
    case = CASES["greedy_once_n64"]
    attrs = {**MODEL_260K, **args_to_params(case["args"])}
    result = page.evaluate(CREATE_AND_GENERATE, attrs)
    assert result == {"text": golden_text(case), "state": "done", "dones": [golden_text(case)]}


def test_generate_with_a_bad_model_url_rejects_with_the_shown_message(page, console, dev_server,
                                                                      test_site):
    console.expect(r"404", "the test asks for a model that is not there")
    (test_site.root / "e2e-empty.html").write_text(host_page("empty", ""))
    page.goto(f"{dev_server}/e2e-empty.html")
    result = page.evaluate(CREATE_AND_GENERATE, {"model": "models/missing.bin",
                                                  "tokenizer": TOKENIZER})
    assert "HTTP 404" in result["rejected"] and "missing.bin" in result["rejected"], result
    assert result["rejected"] == result["shown"] == result["ready"], result
    assert result["state"] == "error"
