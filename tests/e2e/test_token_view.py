"""The token view: for each generated token, the sampler's top 5 candidates and the top-p cut, as
the Python sampler computed them when it chose the token."""

from __future__ import annotations

from .pageutil import golden_cases, golden_text, mark, page_query, wait_for_state

CASES = {case["name"]: case for case in golden_cases()}
MODEL_260K = {"model": "models/stories260K.bin", "tokenizer": "models/tok512.bin"}

TOKENS = """() => [...document.querySelectorAll('#tokens > li')].map((li) => ({
  token: Number(li.dataset.token),
  nucleus: li.dataset.nucleus === '' ? null : Number(li.dataset.nucleus),
  chosen: JSON.parse(li.querySelector('.chosen').textContent),
  candidates: [...li.querySelectorAll('ol > li')].map((c) => ({
    id: Number(c.dataset.id), p: Number(c.dataset.p), inside: c.dataset.inside === 'true',
    text: c.textContent })),
}))"""


def story_with_view(page, base: str, settings: dict[str, str], view: bool = True) -> list[dict]:
    page.goto(f"{base}/?{page_query({**MODEL_260K, **settings})}")
    wait_for_state(page, "ready")
    if view:
        page.locator("#token-view").check()
    since = mark(page)
    page.locator("#generate").click()
    wait_for_state(page, "done", since=since)
    assert page.locator("#token-panel").is_visible() == view
    return page.evaluate(TOKENS)


def test_greedy_top_candidate_is_the_printed_token(page, dev_server):
    tokens = story_with_view(page, dev_server, {"temperature": "0", "steps": "64"})
    story = page.locator("#output").text_content()
    assert len(tokens) == 64  # one per sampled token: no prompt, so every step samples
    assert "".join(t["chosen"] for t in tokens) == story
    for t in tokens:
        assert t["candidates"][0]["id"] == t["token"], t
        assert "(chosen)" in t["candidates"][0]["text"]
        assert len(t["candidates"]) == 5 and t["nucleus"] is None
        assert all(c["inside"] for c in t["candidates"])


def test_top_p_token_is_inside_the_shown_cut(page, dev_server):
    case = CASES["topp_t0.8_p0.9_s42_n128"]
    settings = {"temperature": "0.8", "topp": "0.9", "seed": "42", "steps": "128",
                "prompt": "Once upon a time"}
    tokens = story_with_view(page, dev_server, settings)
    story = page.locator("#output").text_content()
    assert story == golden_text(case)  # watching does not change the story
    assert story.endswith("".join(t["chosen"] for t in tokens))  # the prompt has no view
    shown = 0
    for t in tokens:
        ids = [c["id"] for c in t["candidates"]]
        assert t["nucleus"] >= 1
        if t["token"] in ids:
            shown += 1
            assert t["candidates"][ids.index(t["token"])]["inside"], t
        else:
            assert t["nucleus"] > 5, t  # chosen from deeper in the nucleus than the five shown
        for i, c in enumerate(t["candidates"]):
            assert c["inside"] == (i < t["nucleus"])
            assert ("outside top-p" in c["text"]) == (not c["inside"])
    assert shown > len(tokens) // 2
    assert any(t["nucleus"] < 5 for t in tokens)  # the cut shows in the list


def test_off_by_default_and_off_shows_nothing(page, dev_server):
    case = CASES["greedy_once_n64"]
    page.goto(f"{dev_server}/?{page_query({**MODEL_260K, 'prompt': 'Once upon a time', 'temperature': '0', 'steps': '64', 'autostart': '1'})}")
    wait_for_state(page, "done")
    assert not page.locator("#token-view").is_checked()
    assert page.locator("#token-panel").is_hidden()
    assert page.evaluate("document.querySelectorAll('#tokens li').length") == 0
    assert page.locator("#output").text_content() == golden_text(case)
