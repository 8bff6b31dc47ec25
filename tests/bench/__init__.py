"""The benchmark behind `invoke bench`, one module per job (pytest collects nothing here):

    common.py      settings, paths, the Row and Table the results go into
    models.py      the models measured: generated shapes, their int8 copies, real ones
    native_runs.py the command line and the in-process loop, timed, with peak memory
    page_runs.py   the built site on two servers, driven in Chromium through Playwright
    server_bench.py the dev server under load
    targets.py     issue 13's target table: paired, alternating rounds
    token_view.py  the token view's cost to the sampler, off and on
    tables.py      the printed tables, bench.json and the chart
    runbench.py    what runs in which order: preflight, native rows, page rows, output
"""
