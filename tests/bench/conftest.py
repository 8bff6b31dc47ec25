"""tests/bench/ holds the benchmark that `invoke bench` runs; pytest collects nothing here."""

collect_ignore_glob = ["*"]
