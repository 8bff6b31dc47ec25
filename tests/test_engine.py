"""The C engine (wasm/run.c through llama2c.native) against the numpy reference forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import STORIES260K, teacher_forced
from llama2c.checkpoint import SHAPES, Config, read_config, read_weights
from llama2c.errors import EngineError
from llama2c.native import NativeModel
from llama2c.reference import ReferenceModel

TOLERANCE = 1e-4  # max abs difference between float32 engine logits and the float64 reference
# Random models use projection weights of std 0.1 (make_model's scale): with the default 0.02,
# attention is nearly uniform and a RoPE mistake moves the logits by only ~1e-2; at 0.1 it moves
# them by ~3, while the honest float32 error stays ~5e-6.

SHAPES_UNDER_TEST = {
    # name: (config, steps)
    "gqa_shared": (Config(64, 160, 2, 8, 2, 96, 64), 64),
    "mha_unshared": (Config(48, 128, 2, 4, 4, 150, 64, shared_classifier=False), 64),
    "gqa_unshared_odd_hidden": (Config(96, 257, 3, 6, 3, 200, 80, shared_classifier=False), 64),
    "odd_hidden_one_kv_head": (Config(64, 99, 2, 4, 1, 64, 64), 64),
    "head_size_2": (Config(16, 40, 1, 8, 8, 33, 64), 64),
    "seq_len_1": (Config(64, 128, 2, 4, 2, 80, 1), 1),
    "seq_len_1_unshared": (Config(48, 97, 1, 2, 1, 70, 1, shared_classifier=False), 1),
}


def compare(native: NativeModel, reference: ReferenceModel, tokens: list[int]) -> float:
    """Runs both over tokens at positions 0.. and returns the worst max-abs logit difference."""
    worst = 0.0
    previous = None
    for pos, token in enumerate(tokens):
        ref = reference.forward(token, pos)
        got = native.forward(token, pos)
        assert got.shape == ref.shape == (native.config.vocab_size,)
        assert got.dtype == np.float32
        assert np.isfinite(got).all()
        diff = float(np.max(np.abs(got.astype(np.float64) - ref)))
        assert diff < TOLERANCE, f"position {pos}: max abs diff {diff}"
        worst = max(worst, diff)
        if previous is not None:
            assert not np.array_equal(previous, got)  # the logits do move with the position
        previous = got.copy()
    return worst


@pytest.mark.parametrize("name", sorted(SHAPES_UNDER_TEST))
def test_engine_matches_reference(make_model, name):
    config, steps = SHAPES_UNDER_TEST[name]
    path = make_model(config, seed=len(name), scale=0.1)
    data = path.read_bytes()
    assert len(data) == config.file_size()
    cfg, weights = read_weights(data)
    assert cfg == config
    rng = np.random.default_rng(len(name))
    tokens = [int(t) for t in rng.integers(0, config.vocab_size, steps)]
    with NativeModel.open(path) as native:
        assert native.config == config
        compare(native, ReferenceModel(cfg, weights), tokens)
        # the classifier really is unshared when the header says so: it is not the embedding
        if not config.shared_classifier:
            assert not np.array_equal(weights["wcls"], weights["token_embedding"])


def test_real_model_matches_reference(shared):
    data = STORIES260K.read_bytes()
    cfg, weights = read_weights(data)
    assert cfg == SHAPES["stories260K"] and cfg.n_kv_heads < cfg.n_heads
    tokens = [1, 403, 407, 261, 378] + [int(t) for t in np.random.default_rng(0).integers(0, 512, 59)]
    with NativeModel.open(STORIES260K) as native:
        assert native.config == cfg
        compare(native, ReferenceModel(cfg, weights), tokens)


def test_stories15m_shape_matches_reference(stories15m_shaped):
    """The shape that matters most (dim 288, 6 layers, vocab 32000), a few positions."""
    data = stories15m_shaped.read_bytes()
    cfg, weights = read_weights(data)
    assert cfg.vocab_size == 32000 and cfg.dim == 288
    with NativeModel(data, name="15M") as native:
        compare(native, ReferenceModel(cfg, weights), [1, 9038, 2501, 263, 931, 31999])


def test_last_position_of_the_cache(make_model):
    config = Config(32, 64, 2, 4, 2, 50, 12)
    path = make_model(config, seed=3, scale=0.1)
    cfg, weights = read_weights(path.read_bytes())
    tokens = [(7 * i + 1) % 50 for i in range(12)]
    with NativeModel.open(path) as native:
        compare(native, ReferenceModel(cfg, weights), tokens)  # positions 0..seq_len-1
        with pytest.raises(EngineError, match="position 12 out of range"):
            native.forward(0, 12)


def run_tokens(model: NativeModel, tokens: list[int]) -> np.ndarray:
    return np.stack([model.forward(t, pos).copy() for pos, t in enumerate(tokens)])


def test_forward_is_deterministic_after_reload(make_model):
    path = make_model(SHAPES_UNDER_TEST["gqa_shared"][0], seed=11)
    tokens = [int(t) for t in np.random.default_rng(5).integers(0, 96, 40)]
    with NativeModel.open(path) as a:
        first = run_tokens(a, tokens)
        again = run_tokens(a, tokens)  # a second sequence on the same engine overwrites the cache
    with NativeModel.open(path) as b:
        reloaded = run_tokens(b, tokens)
    with NativeModel(path.read_bytes()) as c:  # from bytes instead of a memory map
        from_bytes = run_tokens(c, tokens)
    assert np.array_equal(first, again)
    assert np.array_equal(first, reloaded)
    assert np.array_equal(first, from_bytes)


def test_two_engines_are_independent(make_model):
    path_a = make_model(SHAPES_UNDER_TEST["gqa_shared"][0], seed=21)
    path_b = make_model(SHAPES_UNDER_TEST["mha_unshared"][0], seed=22)
    tokens = list(range(1, 30))
    with NativeModel.open(path_a) as a:
        alone_a = run_tokens(a, tokens)
    with NativeModel.open(path_b) as b:
        alone_b = run_tokens(b, tokens)
    with NativeModel.open(path_a) as a, NativeModel.open(path_b) as b:
        mixed_a, mixed_b = [], []
        for pos, t in enumerate(tokens):  # interleaved calls
            mixed_a.append(a.forward(t, pos).copy())
            mixed_b.append(b.forward(t, pos).copy())
    assert np.array_equal(alone_a, np.stack(mixed_a))
    assert np.array_equal(alone_b, np.stack(mixed_b))


def test_logits_are_a_zero_copy_view(shared):
    with NativeModel.open(STORIES260K) as model:
        first = model.forward(1, 0)
        snapshot = first.copy()
        second = model.forward(403, 1)
        assert second is first or np.shares_memory(first, second)
        assert first.ctypes.data == second.ctypes.data
        assert not first.flags.owndata
        # the earlier array sees the new logits: it is the engine's buffer, not a copy
        assert np.array_equal(first, second) and not np.array_equal(first, snapshot)
        for pos in range(2, 10):
            assert model.forward(5, pos).ctypes.data == first.ctypes.data


def test_forward_after_close_raises(shared):
    model = NativeModel.open(STORIES260K)
    model.forward(1, 0)
    model.close()
    with pytest.raises(EngineError, match="closed"):
        model.forward(1, 1)
    model.close()  # closing twice is harmless


def test_header_parsing_agrees_with_checkpoint_module(make_model):
    for config, _ in SHAPES_UNDER_TEST.values():
        path = make_model(config, seed=len(str(config)))
        data = path.read_bytes()
        with NativeModel(data) as native:
            assert native.config == read_config(data) == config


@pytest.mark.parametrize("name", ["stories15M", "gqa_unshared_odd_hidden", "odd_hidden_one_kv_head"])
def test_threads_give_the_same_logits_to_the_bit(make_model, stories15m_shaped, name):
    """Threads share rows in chunks (tails and odd sizes included): every row is still computed
    whole, in order, by one thread, so 2 and 3 threads give exactly the 1-thread logits."""
    path = stories15m_shaped if name == "stories15M" else make_model(SHAPES_UNDER_TEST[name][0])
    runs = {}
    for threads in (1, 2, 3):
        with NativeModel.open(path, threads=threads) as model:
            assert model.threads == threads
            tokens = list(np.random.default_rng(1).integers(0, model.config.vocab_size, 24))
            runs[threads] = teacher_forced(model, tokens)
    assert np.array_equal(runs[1], runs[2]) and np.array_equal(runs[1], runs[3])
