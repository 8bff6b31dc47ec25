"""A model trained here opens in the page and writes, byte for byte, what `llama2c run` writes."""

from __future__ import annotations

import pytest

from .pageutil import cli_story, open_page, output

RUNS = [("-t", "0"), ("-t", "0.8", "-p", "0.9", "-s", "42")]
PARAMS = {"-t": "temperature", "-p": "topp", "-s": "seed"}


@pytest.mark.parametrize("args", RUNS, ids=["greedy", "sampled"])
def test_trained_model_in_the_page_equals_the_cli(page, dev_server, test_site, trained_tiny, args):
    model = test_site.add(trained_tiny.model, "trained-tiny.bin")
    tokenizer = test_site.add(trained_tiny.tokenizer, "trained-tiny.tok.bin")
    expected = cli_story(str(trained_tiny.model), str(trained_tiny.tokenizer), *args, "-n", "120")
    assert expected.startswith("Once upon a time")
    params = {"model": model, "tokenizer": tokenizer, "steps": "120", "autostart": "1"}
    params.update({PARAMS[flag]: value for flag, value in zip(args[::2], args[1::2])})
    open_page(page, dev_server, params, "done")
    assert output(page) == expected
