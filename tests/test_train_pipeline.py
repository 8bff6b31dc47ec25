"""Corpus to page, through the real commands: data, vocab, pretokenize, train, export, run.

The corpus is tests/storygrammar.py's synthetic stories (a known entropy); the model is
`--preset tiny` trained for a minute (tests/train_fixtures.py). Runtime: ~2 minutes, most of it
the one training run the session shares with tests/e2e/test_train_page.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import sentencepiece as spm
import torch

import storygrammar
from conftest import ROOT
from llama2c.fetch import ModelFile
from llama2c.tokenizer import BOS
from llama2c.train import data
from train_fixtures import VOCAB, llama2c, ok


def read_jsonl(path):
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


# -- data ------------------------------------------------------------------------------------------

def test_text_files_become_the_corpus_layout(tmp_path):
    (tmp_path / "a.txt").write_text("  First story.\r\nSecond line.  \r\n\r\n\n\nSecond story.\n\n",
                                    encoding="utf-8")
    docs = [{"text": f" Doc {i} é "} for i in range(18)]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n\n")
    proc = ok(llama2c("data", "text", tmp_path / "a.txt", tmp_path / "b.jsonl", "--data", tmp_path / "d"))
    assert b"20 documents in 2 shards" in proc.stdout
    val, train = sorted((tmp_path / "d/corpus").iterdir())
    assert read_jsonl(val) == ["First story.\nSecond line.", "Second story."]  # 10% held out
    assert read_jsonl(train) == [f"Doc {i} é" for i in range(18)]


def make_tinystories_archive(path, shards: int = 3, per_shard: int = 5) -> list[list[str]]:
    """A small file in TinyStories_all_data.tar.gz's format: data00.json ... JSON lists of
    {"story": ...} objects (with the real file's surrounding whitespace)."""
    stories = [storygrammar.stories(per_shard, seed=s) for s in range(shards)]
    with tarfile.open(path, "w:gz") as tar:
        for i, shard in enumerate(stories):
            payload = json.dumps([{"story": "\n\n" + s + "\n", "instruction": {}} for s in shard]).encode()
            info = tarfile.TarInfo(f"data{i:02d}.json")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return stories


def test_tinystories_from_a_mirror(tmp_path):
    """The real download path (fetch_file: mirror, size, sha256, atomic rename) on a small archive
    in the real format; the real file's pinned size and sha256 cannot be checked here."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / data.TINYSTORIES.filename
    stories = make_tinystories_archive(archive)
    small = ModelFile(archive.name, data.TINYSTORIES.url, archive.stat().st_size,
                      hashlib.sha256(archive.read_bytes()).hexdigest())
    shards, docs = data.tinystories(tmp_path / "d", mirror=mirror, archive=small, progress=False)
    assert (shards, docs) == (3, 15)
    corpus = sorted((tmp_path / "d/corpus").iterdir())
    assert [read_jsonl(p) for p in corpus] == stories  # data00 is shard 0, the validation shard
    assert not list((tmp_path / "d").glob("*.part"))


def test_tinystories_mirror_file_must_match_the_pinned_size(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_tinystories_archive(mirror / data.TINYSTORIES.filename)
    proc = llama2c("data", "tinystories", "--from", mirror, "--data", tmp_path / "d")
    progress, error = proc.stderr.decode().splitlines()  # the fetcher says where it copies from
    assert progress.endswith(f"copying from {mirror}")
    assert proc.returncode == 1 and proc.stdout == b""
    assert error.startswith("llama2c: error: ") and "size mismatch" in error
    assert str(data.TINYSTORIES.size) in error
    assert not (tmp_path / "d/corpus").exists() and not list((tmp_path / "d").glob("*.part"))


# -- vocab and pretokenize -----------------------------------------------------------------------------

def test_pretokenize_writes_bos_separated_uint16_shards(story_data):
    folder, _ = story_data
    shards = folder / f"tok{VOCAB}"
    meta = json.loads((shards / "meta.json").read_text())
    assert meta["vocab_size"] == VOCAB and sorted(meta["tokens"]) == ["train_0001.bin", "val.bin"]
    val = np.fromfile(shards / "val.bin", dtype=np.uint16)
    docs = read_jsonl(folder / "corpus/0000.jsonl")
    assert len(val) == meta["tokens"]["val.bin"] and val[0] == BOS
    starts = np.nonzero(val == BOS)[0]
    assert len(starts) == len(docs)  # one BOS per document, no EOS
    processor = spm.SentencePieceProcessor(model_file=str(folder / f"tok{VOCAB}.model"))
    pieces = np.split(val, starts[1:])
    assert [processor.decode(p[1:].tolist()) for p in pieces] == docs
    assert val.max() < VOCAB


def test_training_batches_are_a_function_of_the_step(tmp_path):
    """Sample i of the stream is chunk perm_e[i % n] of epoch e = i // n, whatever else was read
    before: a batch that spans two epochs, and the same batches read again out of order."""
    from llama2c.train.loop import Chunks, TrainStream
    seq, tokens = 4, np.arange(2 * 23 + 7, dtype=np.uint16)  # two shards of 23 and 30 tokens
    tokens[:23].tofile(tmp_path / "a.bin")
    tokens[23:].tofile(tmp_path / "b.bin")
    chunks = Chunks([tmp_path / "a.bin", tmp_path / "b.bin"], seq)
    n = len(chunks)
    assert n == (23 // seq - 1) + (30 // seq - 1) == 10
    perms = [np.random.default_rng([7, e]).permutation(n) for e in range(3)]
    expected = np.concatenate(perms)  # the stream's chunk numbers, three epochs long
    batch = 3  # 10 is not a multiple of 3: micro-batches 3 and 6 span two epochs
    stream = TrainStream(chunks, 7)
    for micro, reader in [(0, stream), (3, stream), (9, stream), (6, stream), (3, stream),
                          (0, stream), (6, TrainStream(chunks, 7)), (1, stream)]:
        x, y = reader.batch(micro, batch)
        samples = expected[micro * batch:(micro + 1) * batch]
        shard, start = chunks.index[samples].T
        rows = np.stack([np.arange(s, s + seq + 1) + 23 * sh for sh, s in zip(shard, start)])
        assert x.tolist() == rows[:, :-1].tolist() and y.tolist() == rows[:, 1:].tolist()


# -- learning ------------------------------------------------------------------------------------------

def test_tiny_preset_learns_the_story_grammar(trained_tiny):
    """Threshold from the grammar's entropy. A story is 10.40 nats of choices (6 ln 4 + ln 8) and
    T tokens (measured: ~39 with this vocabulary, BOS included), so no model gets below 10.40 / T
    ~ 0.27 nats per token. A model that knows the template and picks every slot well but guesses
    the three repeated names anew pays 3 ln 8 more: (10.40 + 6.24) / T ~ 0.43. Training chunks
    start mid-story, so a chunk's first tokens lack the context that fixes them: 0.1 nats of
    slack. Below that line the model has learned the template; a model of token frequencies alone
    scores the unigram entropy, measured here at ~3 nats."""
    val = np.fromfile(trained_tiny.data / f"tok{VOCAB}/val.bin", dtype=np.uint16)
    tokens_per_story = len(val) / int((val == BOS).sum())
    threshold = storygrammar.ENTROPY_WITHOUT_COPYING / tokens_per_story + 0.1
    counts = np.bincount(val, minlength=VOCAB)
    p = counts[counts > 0] / len(val)
    unigram = float(-(p * np.log(p)).sum())
    assert threshold < unigram / 4

    history = list(csv.DictReader(open(trained_tiny.out / "history.csv")))
    val_losses = [float(h["val_loss"]) for h in history if h["val_loss"]]
    assert len(val_losses) == 3 and val_losses[-1] < threshold, (val_losses, threshold)
    assert float(history[0]["train_loss"]) > 2 * threshold  # it did start from nothing
    assert (trained_tiny.out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = torch.load(trained_tiny.out / "best.pt", weights_only=False)
    assert best["best_val_loss"] == min(val_losses)

    story = ok(llama2c("run", trained_tiny.model, "-z", trained_tiny.tokenizer, "-t", "0",
                       "-n", "60")).stdout.decode()
    first = story.split(" The end.")[0] + " The end."
    assert storygrammar.STORY_SHAPE_RE.fullmatch(first), story


def test_without_a_compiler_training_runs_eager_and_says_so(trained_tiny, tmp_path):
    """torch.compile is the default (the learning test above trains with it); where it cannot
    work, here a C++ compiler that does not exist and an empty kernel cache, training still runs."""
    from train_fixtures import TINY_ARGS, train_env
    env = train_env(CXX=str(tmp_path / "no-such-g++"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "k"))
    args = dict(zip(TINY_ARGS[::2], TINY_ARGS[1::2]))
    args.update({"--max_iters": "4", "--lr_decay_iters": "4", "--eval_interval": "4",
                 "--eval_iters": "1"})
    proc = ok(llama2c("train", *[x for kv in args.items() for x in kv], "--data", trained_tiny.data,
                      "--out", tmp_path / "out", "--quiet", env=env))
    out = proc.stdout.decode() + proc.stderr.decode()
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "training without torch.compile" in warnings[0], out
    assert "no-such-g++" in warnings[0], warnings
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=False)["iter_num"] == 4


# -- export ------------------------------------------------------------------------------------------------

def test_round_trip_prints_a_story(trained_tiny):
    proc = ok(llama2c("run", trained_tiny.model, "-z", trained_tiny.tokenizer, "-s", "7", "-n", "80"))
    assert proc.stdout.startswith(b"Once upon a time") and proc.stdout.endswith(b"\n")
    assert b"achieved tok/s" in proc.stderr


def test_int8_export_equals_invoke_quantize(trained_tiny, tmp_path):
    ok(llama2c("export", trained_tiny.out / "best.pt", tmp_path / "q.bin", "--version", "2"))
    import subprocess
    import sys
    subprocess.run([sys.executable, "-m", "invoke", "quantize", trained_tiny.model, tmp_path / "r.bin"],
                   cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / "q.bin").read_bytes() == (tmp_path / "r.bin").read_bytes()
    assert (tmp_path / "q.tok.bin").read_bytes() == trained_tiny.tokenizer.read_bytes()
    story = ok(llama2c("run", tmp_path / "q.bin", "-z", tmp_path / "q.tok.bin", "-t", "0", "-n", "40"))
    assert story.stdout.startswith(b"Once upon a time")


def test_llama2c_train_py_checkpoint_exports_the_same_bytes(trained_tiny, tmp_path):
    """llama2.c's ckpt.pt: torch.compile's `_orig_mod.` prefixes, model_args without hidden_dim
    (derived from multiple_of) or a classifier flag (tied), and its own config keys."""
    ours = torch.load(trained_tiny.out / "best.pt", weights_only=False)
    args = ours["model_args"]
    assert args["hidden_dim"] is None  # the tiny preset derives it, as llama2.c always does
    theirs = {
        "model": {"_orig_mod." + k: v for k, v in ours["model"].items()},
        "optimizer": ours["optimizer"],
        "model_args": {k: args[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                                            "multiple_of", "max_seq_len", "dropout")},
        "iter_num": ours["iter_num"],
        "best_val_loss": torch.tensor(ours["best_val_loss"]),
        "config": {"batch_size": 16, "compile": True, "dtype": "float32", "out_dir": "out"},
    }
    tied = theirs["model"]["_orig_mod.output.weight"], theirs["model"]["_orig_mod.tok_embeddings.weight"]
    assert tied[0].data_ptr() == tied[1].data_ptr()  # one tensor saved under both names
    torch.save(theirs, tmp_path / "ckpt.pt")
    ok(llama2c("export", tmp_path / "ckpt.pt", tmp_path / "theirs.bin"))
    assert (tmp_path / "theirs.bin").read_bytes() == trained_tiny.model.read_bytes()


def test_export_site_puts_model_and_tokenizer_in_models(trained_tiny, tmp_path):
    ok(llama2c("export", trained_tiny.out / "best.pt", "mine.bin", "--site",
               "--tokenizer", trained_tiny.tokenizer, cwd=tmp_path))
    assert (tmp_path / "models/mine.bin").read_bytes() == trained_tiny.model.read_bytes()
    assert (tmp_path / "models/mine.tok.bin").read_bytes() == trained_tiny.tokenizer.read_bytes()


# -- bad input: one line, nothing lost ----------------------------------------------------------------------

def assert_error(proc, *fragments: str) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, (proc.returncode, err)
    assert proc.stdout == b"" and err.count("\n") == 1 and err.startswith("llama2c: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("content", [b"", b"  \n\n \r\n"])
def test_empty_corpus(tmp_path, content):
    (tmp_path / "empty.txt").write_bytes(content)
    assert_error(llama2c("data", "text", tmp_path / "empty.txt", "--data", tmp_path / "d"),
                 "corpus is empty")
    assert (tmp_path / "empty.txt").read_bytes() == content and not (tmp_path / "d/corpus").exists()


def test_non_utf8_corpus(tmp_path):
    content = "Once upon a time.\n\nCaf".encode() + b"\xe9 au lait.\n"
    (tmp_path / "latin1.txt").write_bytes(content)
    assert_error(llama2c("data", "text", tmp_path / "latin1.txt", "--data", tmp_path / "d"),
                 "latin1.txt is not UTF-8", "0xe9", "offset 22")
    assert (tmp_path / "latin1.txt").read_bytes() == content


def test_vocab_too_big_for_the_corpus(story_data, tmp_path):
    folder, _ = story_data
    before = sorted(p.name for p in folder.iterdir())
    assert_error(llama2c("vocab", "--size", 4000, "--data", folder), "cannot make 4000 tokens",
                 "Vocabulary size too high")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_checkpoint_shape_mismatch(trained_tiny, tmp_path):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(trained_tiny.out, out)
    saved = (out / "ckpt.pt").read_bytes()
    assert_error(llama2c("train", "--preset", "tiny", "--dim", 96, "--data", trained_tiny.data,
                         "--out", out, "--quiet"), "dim 64", "config asks for 96")
    assert (out / "ckpt.pt").read_bytes() == saved
    # the same for a checkpoint whose tensors do not fit its own model_args
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    ckpt["model"]["layers.0.attention.wq.weight"] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "bad.pt")
    assert_error(llama2c("export", tmp_path / "bad.pt", tmp_path / "bad.bin"),
                 "layers.0.attention.wq.weight", "(3, 3)")
    assert not (tmp_path / "bad.bin").exists()


def test_export_over_an_existing_file_needs_force(trained_tiny, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"my precious model")
    assert_error(llama2c("export", trained_tiny.out / "best.pt", tmp_path / "m.bin"),
                 "m.bin exists", "--force")
    assert (tmp_path / "m.bin").read_bytes() == b"my precious model"
    ok(llama2c("export", trained_tiny.out / "best.pt", tmp_path / "m.bin", "--force"))
    assert (tmp_path / "m.bin").read_bytes() == trained_tiny.model.read_bytes()


def limit_file_size(max_bytes: int):
    """preexec_fn: files may not grow past max_bytes. Python ignores SIGXFSZ, so a write past the
    limit fails with EFBIG, as on a full disk."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


# The CLI with SIGXFSZ's default action restored: the kernel kills it in the middle of the write.
KILLED_MID_WRITE = ("import signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_DFL); "
                    "from llama2c.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("killed", [False, True], ids=["disk_full", "killed_mid_write"])
def test_failed_export_write_leaves_no_half_file(trained_tiny, tmp_path, killed):
    import signal
    import subprocess
    import sys
    (tmp_path / "m.bin").write_bytes(b"old model")
    command = [sys.executable] + (["-c", KILLED_MID_WRITE] if killed else ["-m", "llama2c"])
    proc = subprocess.run(command + ["export", str(trained_tiny.out / "best.pt"),
                                     str(tmp_path / "m.bin"), "--force"],
                          capture_output=True, preexec_fn=limit_file_size(100_000))
    if killed:
        assert proc.returncode == -signal.SIGXFSZ, proc.stderr
    else:
        assert_error(proc, "cannot write", "File too large")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]
    assert (tmp_path / "m.bin").read_bytes() == b"old model"
    assert not (tmp_path / "m.tok.bin").exists()


def test_failed_checkpoint_write_keeps_the_last_checkpoint(trained_tiny, tmp_path):
    import shutil
    import subprocess
    import sys
    out = tmp_path / "out"
    shutil.copytree(trained_tiny.out, out)
    saved, best = (out / "ckpt.pt").read_bytes(), (out / "best.pt").read_bytes()
    from train_fixtures import TINY_ARGS, train_env
    args = [a if a != "120" else "160" for a in TINY_ARGS]  # resume at 120, next save at 160
    args += ["--compile", "false"]  # the file size limit is for the checkpoint, not compile's cache
    proc = subprocess.run([sys.executable, "-m", "llama2c", "train", *args, "--data",
                           str(trained_tiny.data), "--out", str(out), "--quiet"], env=train_env(),
                          capture_output=True, preexec_fn=limit_file_size(len(saved) // 2))
    assert_error(proc, "cannot write", "ckpt.pt", "disk full")
    assert (out / "ckpt.pt").read_bytes() == saved and (out / "best.pt").read_bytes() == best
    assert not list(out.glob(".*.tmp"))


# -- the two halves stay apart ------------------------------------------------------------------------------

def test_inference_never_imports_torch(trained_tiny):
    import subprocess
    import sys
    script = ("import sys, io; from llama2c.cli import main; code = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules and 'sentencepiece' not in sys.modules, 'imported'; "
              "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", script, "run", str(trained_tiny.model), "-z",
                           str(trained_tiny.tokenizer), "-n", "20"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"Once upon a time")


def test_browser_wheel_holds_only_what_the_page_runs():
    """The wheel `invoke build` ships to Pyodide: the modules llama2c.browser imports, and no
    training, command line, native engine or build tool (setup.py's NATIVE_ONLY)."""
    import zipfile

    wheels = sorted((ROOT / "site/pyodide").glob("llama2c-*.whl"))
    assert len(wheels) == 1, f"site/ is not built: run `invoke build` ({wheels})"
    names = {n for n in zipfile.ZipFile(wheels[0]).namelist() if n.startswith("llama2c/")}
    modules = {n.removeprefix("llama2c/").rsplit(".", 1)[0] for n in names}
    assert modules == {"__init__", "backend", "browser", "checkpoint", "errors", "generate",
                       "params", "sampler", "tokenizer"}, sorted(names)
