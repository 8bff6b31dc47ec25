"""Accessibility: axe-core on the page (desktop, phone, dark) and on the embed, and the page driven
by the keyboard alone.

axe-core comes from the npm registry (`npm install --prefix .cache/node axe-core@4.14.1`, done by the
`axe_script` fixture when missing). Violations of impact 'serious' or 'critical' fail; all of them
are printed.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from . import widget_util
from .pageutil import (MODELS, SHARED, golden_cases, golden_text, mark, open_page, output,
                       page_query, wait_for_state)
from .widget_util import format_violations, open_tab, run_axe, serious, wait_for_widgets

# the fixtures this module takes from widget_util
axe_script, fresh_context, site_server = (widget_util.axe_script, widget_util.fresh_context,
                                          widget_util.site_server)

CASES = {case["name"]: case for case in golden_cases()}
GREEDY = CASES["greedy_once_n64"]
MODEL_260K = {"model": "models/stories260K.bin", "tokenizer": "models/tok512.bin"}
STORY = {**MODEL_260K, "prompt": "Once upon a time", "temperature": "0", "steps": "64",
         "autostart": "1"}
CHAT = {**MODEL_260K, "mode": "chat", "system": "You tell stories.", "prompt": "Once upon a time",
        "temperature": "0", "steps": "80", "autostart": "1"}

VIEWS = {
    "desktop": ({"viewport": {"width": 1280, "height": 900}}, STORY),
    "phone": ({"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3,
               "is_mobile": True, "has_touch": True}, STORY),
    # chat mode shows one more control, the system prompt
    "dark": ({"viewport": {"width": 1100, "height": 900}, "color_scheme": "dark"}, CHAT),
}
DARK_BACKGROUND = "rgb(21, 22, 26)"  # style.css --bg in dark mode


def check_axe(target, axe_path, what: str) -> dict:
    results = run_axe(target, axe_path)
    print(f"\naxe-core {results['version']} on {what}: {results['passes']} rules passed, "
          f"{len(results['violations'])} violated")
    if results["violations"]:
        print(format_violations(results["violations"]))
    bad = serious(results)
    assert not bad, f"serious or critical accessibility violations on {what}:\n" \
                    f"{format_violations(bad)}"
    return results


@pytest.mark.parametrize("view", list(VIEWS))
def test_page_has_no_serious_axe_violations(request, fresh_context, site_server, axe_script, view):
    options, params = VIEWS[view]
    page, _ = open_tab(request, fresh_context(**options))
    open_page(page, site_server.base, params)
    expected = golden_text(CASES["chat_greedy_sys"] if params is CHAT else GREEDY)
    assert output(page) == expected
    width = options["viewport"]["width"]
    assert page.evaluate("innerWidth") == width
    # Nothing wider than the screen: no sideways scrolling, on a phone either.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    dark = page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark == (view == "dark")
    assert (background == DARK_BACKGROUND) == (view == "dark"), background
    if params is CHAT:
        assert page.locator("#system").is_visible()
    check_axe(page, axe_script, f"the page ({view}, state done)")


def test_embed_has_no_serious_axe_violations(request, fresh_context, site_server, axe_script):
    """embed.html with its widget's shadow DOM, at done, in light then dark colors."""
    page, _ = open_tab(request, fresh_context())
    query = "&".join(f"{k}={quote(v)}" for k, v in STORY.items())
    page.goto(f"{site_server.base}/embed.html?{query}")
    page.locator("llama2c-story").wait_for(state="attached")
    page.evaluate("document.querySelector('llama2c-story').id = 'story'")
    assert wait_for_widgets(page, ["story"]) == {"story": "done"}
    assert page.evaluate("document.getElementById('story').text") == golden_text(GREEDY)
    for scheme in ["light", "dark"]:
        page.emulate_media(color_scheme=scheme)
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == \
            (scheme == "dark")
        results = check_axe(page, axe_script, f"embed.html ({scheme}, state done)")
        # The embed is a page of its own: a main landmark and a (visually hidden) title heading.
        assert not {v["id"] for v in results["violations"]} & {"landmark-one-main",
                                                                "page-has-heading-one"}


# -- the keyboard alone ----------------------------------------------------------------------------

# The site's model list first (the test site lists stories260K), the token view's switch last.
FOCUS_ORDER = ["model-choice-stories260K", "model", "tokenizer", "model-file", "tokenizer-file",
               "load", "clear-cache", "mode", "prompt", "temperature", "topp", "steps", "seed",
               "token-view", "generate"]


def active(page) -> str:
    return page.evaluate("document.activeElement ? document.activeElement.id || "
                         "document.activeElement.tagName : null")


def focus_ring(page) -> str:
    return page.evaluate("getComputedStyle(document.activeElement).outlineStyle")


def type_over(page, text: str) -> None:
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


def test_keyboard_only(page, dev_server):
    """Tab to every control in order, fill the story's settings, Enter and Space on Generate; while
    a story runs the focus is on Stop (Generate is disabled), and Enter there stops it."""
    open_page(page, dev_server, MODEL_260K, "ready")
    order = []
    for _ in range(len(FOCUS_ORDER) + 5):
        page.keyboard.press("Tab")
        where = active(page)
        order.append(where)
        assert focus_ring(page) != "none", f"no visible focus on #{where}"
        if where == "prompt":
            page.keyboard.type("Once upon a time")
        elif where == "temperature":
            type_over(page, "0")
        elif where == "steps":
            type_over(page, "64")
        elif where == "generate":
            break
    assert order == FOCUS_ORDER, order
    assert page.locator("#prompt").input_value() == "Once upon a time"
    assert page.locator("#temperature").input_value() == "0"
    assert page.locator("#steps").input_value() == "64"

    # Enter on Generate: the story, then the focus back on Generate for the next one.
    since = mark(page)
    page.keyboard.press("Enter")
    wait_for_state(page, "done", since=since)
    assert output(page) == golden_text(GREEDY)
    assert active(page) == "generate", "the keyboard focus was lost after the story"

    # Space on Generate: another story (greedy: the same one).
    page.evaluate("document.getElementById('output').textContent = ''")
    since = mark(page)
    page.keyboard.press("Space")
    wait_for_state(page, "done", since=since)
    assert output(page) == golden_text(GREEDY)
    assert active(page) == "generate"

    # A long story (seed 12 runs the whole 512-token context), stopped from the keyboard.
    page.keyboard.press("Shift+Tab")
    assert active(page) == "token-view"
    page.keyboard.press("Shift+Tab")
    assert active(page) == "seed"
    type_over(page, "12")
    page.keyboard.press("Shift+Tab")
    type_over(page, "0")  # steps: the whole context
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert active(page) == "temperature"
    type_over(page, "1")
    for _ in range(5):
        page.keyboard.press("Tab")
    assert active(page) == "generate"
    since = mark(page)
    page.keyboard.press("Enter")
    assert active(page) == "stop"  # Generate is disabled now: the focus went to Stop
    page.keyboard.press("Enter")
    wait_for_state(page, "done", since=since)
    assert active(page) == "generate"
    positions = json.loads(page.evaluate("document.body.dataset.report"))["positions"]
    assert positions < 512, "Enter on Stop did not stop the story"


def test_chat_mode_adds_the_system_prompt_to_the_focus_order(page, dev_server):
    # The focus order needs no model, so this does not wait for one; Load and the model list are
    # disabled while the page loads, and so are out of the focus order (test_keyboard_only has
    # them in, once ready).
    page.goto(f"{dev_server}/?mode=chat&system=Hi&model=models/stories260K.bin"
              "&tokenizer=models/tok512.bin")
    order = []
    while len(order) < len(FOCUS_ORDER) + 5 and (not order or order[-1] != "prompt"):
        page.keyboard.press("Tab")
        order.append(active(page))
    at = FOCUS_ORDER.index("mode")
    # the model list is disabled while loading too
    busy = ("load", "model-choice-stories260K")
    expected = [x for x in FOCUS_ORDER[:at + 1] if x not in busy] + ["system", "prompt"]
    assert [x for x in order if x not in busy] == expected, order
    # Back to story mode with the keyboard: the system field leaves the focus order.
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert active(page) == "mode"
    page.keyboard.press("ArrowUp")
    assert page.locator("#mode").input_value() == "generate"
    assert page.locator("#system-field").is_hidden()
    page.keyboard.press("Tab")
    assert active(page) == "prompt"


# -- chat and the token view -----------------------------------------------------------------------

CHAT_CASE = json.loads((SHARED / "golden" / "chat" / "cases.json").read_text())["cases"][0]
CHATTY = {"model": "models/chatty260K.bin", "tokenizer": "models/tok512.bin"}
CHAT_SETTINGS = {**CHATTY, "mode": "chat", "temperature": "0.8", "topp": "0.9", "seed": "11",
                 "steps": "400", "system": "You are a storyteller."}
assert CHAT_CASE["args"] == ["-m", "chat", "-t", "0.8", "-p", "0.9", "-s", "11", "-n", "400",
                             "-y", "You are a storyteller."]


@pytest.mark.parametrize("view", ["desktop", "phone"])
def test_chat_and_token_view_have_no_serious_axe_violations(request, fresh_context, site_server,
                                                            axe_script, test_site, view):
    """A chat waiting for its next line, with the token view open."""
    test_site.add(MODELS / "chatty260K.bin")
    options = VIEWS[view][0]
    page, _ = open_tab(request, fresh_context(**options))
    query = page_query({**CHAT_SETTINGS, "chatinput": CHAT_CASE["stdin_lines"][0]})
    page.goto(f"{site_server.base}/?{query}")
    wait_for_state(page, "ready")
    page.locator("#token-view").check()
    page.locator("#generate").click()
    wait_for_state(page, "waiting")
    assert page.locator("#chat-input").is_visible() and page.locator("#token-panel").is_visible()
    assert page.evaluate("document.querySelectorAll('#tokens > li').length") > 0
    width = options["viewport"]["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    check_axe(page, axe_script, f"the page ({view}, chat waiting, token view open)")


def test_keyboard_only_chat(page, dev_server, test_site):
    """The whole chat with the keyboard: Tab to Start chat, Enter; at each `User: ` the focus is
    in the input box; type, Enter; Stop and New chat are in the focus order."""
    test_site.add(MODELS / "chatty260K.bin")
    page.goto(f"{dev_server}/?{page_query(CHAT_SETTINGS)}")
    wait_for_state(page, "ready")
    for _ in range(len(FOCUS_ORDER) + 5):
        page.keyboard.press("Tab")
        if active(page) == "generate":
            break
    assert active(page) == "generate"
    since = mark(page)
    page.keyboard.press("Enter")
    for line in CHAT_CASE["stdin_lines"]:
        wait_for_state(page, "waiting", since=since)
        assert active(page) == "chat-input"
        assert focus_ring(page) != "none"
        since = mark(page)
        page.keyboard.type(line)
        page.keyboard.press("Enter")
    wait_for_state(page, "done", since=since)
    assert output(page) == (SHARED / "golden" / "chat" / CHAT_CASE["output"]).read_text()[:-1]
    # New chat from the keyboard: it is reachable, and starts the same conversation again.
    for _ in range(10):
        if active(page) == "new-chat":
            break
        page.keyboard.press("Tab")
    assert active(page) == "new-chat"
    since = mark(page)
    page.keyboard.press("Enter")
    wait_for_state(page, "waiting", since=since)
    assert active(page) == "chat-input"
    first_turn = output(page)
    # Stop from the keyboard ends a chat that waits for a line.
    page.keyboard.press("Shift+Tab")
    assert active(page) == "stop"
    since = mark(page)
    page.keyboard.press("Enter")
    wait_for_state(page, "done", since=since)
    assert output(page) == first_turn
    assert active(page) in ("generate", "new-chat"), "the keyboard focus was lost"
