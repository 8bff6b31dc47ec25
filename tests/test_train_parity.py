"""The PyTorch module (llama2c.train.model), the C engine and the numpy reference: one architecture.

Each shape's random weights are loaded into the PyTorch Transformer, exported with `llama2c.train`'s
exporter, and read back by the C engine (llama2c.native) and the numpy reference. PyTorch's fp32
forward over a 64-token sequence and the engine's token-by-token forward must give logits within
1e-5 (max abs) at every position, and greedy decoding must pick the same tokens. Weights have std
0.1 (embedding 0.2): attention is far from uniform, and a RoPE or GQA mistake moves logits by
whole units. The honest float32 disagreement grows with the logits' scale and the model's width:
measured here, PyTorch fp32 vs the engine is 0.8-6e-6 on these shapes (logit std 1.4-1.9, max
|logit| 4-8, like a small trained model's); with embedding std 0.3 (logit max ~12) a dim-96,
3-layer model reaches 1.4e-5, and the engine against PyTorch in float64 differs just as much, so
that is float32 rounding in the engine, not a mismatch of the computation.
"""

from __future__ import annotations

import numpy as np
import pytest

import torch  # noqa: E402  (the train extra, which `invoke setup` installs)

from conftest import teacher_forced  # noqa: E402
from llama2c.checkpoint import random_weights, read_weights  # noqa: E402
from llama2c.native import NativeModel  # noqa: E402
from llama2c.reference import ReferenceModel  # noqa: E402
from llama2c.train.export import write_fp32  # noqa: E402
from llama2c.train.model import ModelArgs, Transformer  # noqa: E402

TOLERANCE = 1e-5
STEPS = 64

SHAPES = {
    "gqa_shared": ModelArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=96,
                            hidden_dim=160, max_seq_len=64),
    "mha_unshared": ModelArgs(dim=48, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=150,
                              hidden_dim=128, max_seq_len=64, shared_classifier=False),
    "gqa_unshared_odd_hidden": ModelArgs(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=200,
                                         hidden_dim=257, max_seq_len=80, shared_classifier=False),
    "one_kv_head_derived_hidden": ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=1,
                                            vocab_size=64, multiple_of=4, max_seq_len=64),
    "seq_len_1": ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=80,
                           hidden_dim=128, max_seq_len=1),
    "seq_len_1_unshared": ModelArgs(dim=48, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=70,
                                    hidden_dim=97, max_seq_len=1, shared_classifier=False),
}


def load_numpy_weights(model: Transformer, weights: dict[str, np.ndarray]) -> None:
    """Copies run.c-named numpy tensors into the PyTorch module (the inverse of the exporter)."""
    t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(t(weights["token_embedding"]))
        for i, layer in enumerate(model.layers):
            layer.attention_norm.weight.copy_(t(weights["rms_att"][i]))
            layer.ffn_norm.weight.copy_(t(weights["rms_ffn"][i]))
            for name in ("wq", "wk", "wv", "wo"):
                getattr(layer.attention, name).weight.copy_(t(weights[name][i]))
            for name in ("w1", "w2", "w3"):
                getattr(layer.feed_forward, name).weight.copy_(t(weights[name][i]))
        model.norm.weight.copy_(t(weights["rms_final"]))
        if not model.args.shared_classifier:
            model.output.weight.copy_(t(weights["wcls"]))


@pytest.fixture(scope="module", params=sorted(SHAPES))
def exported(request, tmp_path_factory):
    """(PyTorch model in eval mode, path of its fp32 export, tokens to feed)."""
    args = SHAPES[request.param]
    model = Transformer(args).eval()
    load_numpy_weights(model, random_weights(args.config(), seed=len(request.param), scale=0.1,
                                             embedding_scale=0.2))
    path = tmp_path_factory.mktemp("parity") / f"{request.param}.bin"
    write_fp32(model, path)
    rng = np.random.default_rng(len(request.param))
    tokens = [int(x) for x in rng.integers(0, args.vocab_size, min(STEPS, args.max_seq_len))]
    return model, path, tokens


def test_export_reads_back_as_the_same_weights(exported):
    model, path, _ = exported
    config, weights = read_weights(path.read_bytes())
    assert config == model.args.config()
    assert np.array_equal(weights["wq"][-1], model.layers[-1].attention.wq.weight.detach().numpy())
    assert np.array_equal(weights["wcls"], model.output.weight.detach().numpy())


def test_pytorch_matches_the_engine_at_every_position(exported):
    model, path, tokens = exported
    with torch.no_grad():
        ours = model(torch.tensor([tokens]))[0].numpy()  # (steps, vocab), one causal pass
    with NativeModel.open(path, threads=1) as engine:
        engine_logits = teacher_forced(engine, tokens)
    diff = np.abs(ours - engine_logits).max(axis=1)  # per position
    assert diff.max() <= TOLERANCE, f"positions over {TOLERANCE}: {np.nonzero(diff > TOLERANCE)[0]}"
    assert engine_logits.std() > 1.0  # the comparison is not between near-zero logits


def test_reference_matches_the_engine_on_the_same_file(exported):
    _, path, tokens = exported
    config, weights = read_weights(path.read_bytes())
    reference = teacher_forced(ReferenceModel(config, weights), tokens)
    with NativeModel.open(path, threads=1) as engine:
        engine_logits = teacher_forced(engine, tokens)
    assert np.abs(reference - engine_logits).max() <= TOLERANCE


def test_greedy_tokens_are_identical(exported):
    model, path, tokens = exported
    steps = min(STEPS, model.args.max_seq_len)
    ours = [tokens[0]]
    with torch.no_grad():
        while len(ours) < steps:
            ours.append(int(model(torch.tensor([ours]))[0, -1].argmax()))
    engine_tokens = [tokens[0]]
    with NativeModel.open(path, threads=1) as engine:
        for pos in range(steps - 1):
            engine_tokens.append(int(engine.forward(engine_tokens[-1], pos).argmax()))
    assert ours == engine_tokens
    # Random weights settle on repeating one token, so also compare the choice at every position
    # of the varied teacher-forced sequence.
    with torch.no_grad():
        picks = model(torch.tensor([tokens]))[0].argmax(-1).tolist()
    with NativeModel.open(path, threads=1) as engine:
        assert picks == teacher_forced(engine, tokens).argmax(-1).tolist()
    if steps > 8:
        assert len(set(picks)) > 8
