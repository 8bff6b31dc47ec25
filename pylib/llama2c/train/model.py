"""The Llama 2 transformer in PyTorch, computing exactly what wasm/run.c computes.

One module, three definitions held together by tests (tests/test_train_parity.py): this one, the
numpy reference (llama2c.reference) and the C engine. What run.c does, and so what this does:

- RMSNorm in fp32: x * 1/sqrt(mean(x^2) + 1e-5) * weight
- RoPE with theta 1e4 on interleaved pairs (x[2i], x[2i+1]) of each head
- grouped-query attention: each of n_kv_heads key/value heads serves n_heads / n_kv_heads queries
- SwiGLU feed-forward: w2(silu(w1 x) * w3 x)
- a classifier shared with the token embedding, or a separate one
- no biases anywhere

Parameter names are llama2.c's model.py names, so a state dict from llama2.c's train.py loads here
unchanged (tok_embeddings.weight, layers.{i}.attention.wq.weight, ..., norm.weight, output.weight).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import Config

NORM_EPS = 1e-5  # run.c's rmsnorm
ROPE_THETA = 10000.0  # run.c's RoPE base
INIT_STD = 0.02  # llama2.c's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layers)
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) has a kernel


@dataclass
class ModelArgs:
    """llama2.c's ModelArgs, plus whether the classifier is shared (llama2.c always shares it)."""

    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    hidden_dim: int | None = None
    multiple_of: int = 32
    norm_eps: float = NORM_EPS
    max_seq_len: int = 256
    dropout: float = 0.0
    shared_classifier: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> "ModelArgs":
        """From a checkpoint's model_args, ours or llama2.c's (which lack some keys)."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn_dim(self) -> int:
        """llama2.c's FeedForward rule: multiple_of * ceil(int(8 dim / 3) / multiple_of)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def config(self) -> Config:
        """The run.c header this model exports with."""
        return Config(self.dim, self.ffn_dim, self.n_layers, self.n_heads, self.kv_heads,
                      self.vocab_size, self.max_seq_len, self.shared_classifier)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).type_as(x)


def rope_tables(head_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of pos * theta^(-2i/head_size), (seq_len, head_size/2), computed in float64 and
    rounded once to float32 (run.c's cosf/sinf of a float angle agree to ~1 ulp)."""
    freq = 1.0 / ROPE_THETA ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freq)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, head_size); rotates each interleaved pair (x[2i], x[2i+1])."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (b, t, h, head_size/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, t, 1, head_size/2)
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads = args.n_heads, args.kv_heads
        self.head_size = args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_size, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_size, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_size, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_size, args.dim, bias=False)
        self.dropout = args.dropout
        self.resid_dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        hs = self.head_size
        q = apply_rope(self.wq(x).view(b, t, self.n_heads, hs), cos, sin)
        k = apply_rope(self.wk(x).view(b, t, self.n_kv_heads, hs), cos, sin)
        v = self.wv(x).view(b, t, self.n_kv_heads, hs)
        repeat = self.n_heads // self.n_kv_heads  # GQA: query head h reads kv head h // repeat
        if repeat > 1:
            k = k.repeat_interleave(repeat, dim=2)
            v = v.repeat_interleave(repeat, dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (b, heads, t, hs)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * hs)
        return self.resid_dropout(self.wo(out))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        hidden = args.ffn_dim
        self.w1 = nn.Linear(args.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, hidden, bias=False)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.dropout = nn.Dropout(args.dropout)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.shared_classifier:
            self.output.weight = self.tok_embeddings.weight  # tied, as in llama2.c
        cos, sin = rope_tables(args.dim // args.n_heads, args.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        residual_std = INIT_STD / math.sqrt(2 * args.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("w3.weight") or name.endswith("wo.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None):
        """tokens (batch, t) -> logits (batch, t, vocab); with targets, also the mean loss."""
        t = tokens.shape[1]
        h = self.dropout(self.tok_embeddings(tokens))
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        for layer in self.layers:
            h = layer(h, cos, sin)
        logits = self.output(self.norm(h))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                               ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, weight_decay: float, learning_rate: float,
                            betas: tuple[float, float]) -> torch.optim.AdamW:
        """AdamW with decay on every 2-D tensor (matrices and the embedding), none on norms.

        The fused kernel updates every tensor in one pass, where the default CPU path runs a
        dozen small ops per tensor: an optimizer step measured 0.97 -> 0.18 ms for the tiny
        preset and 1.97 -> 0.46 ms for 260K on 2 CPU cores (the same update up to float32
        rounding)."""
        params = [p for p in self.parameters() if p.requires_grad]  # a tied weight appears once
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = all(p.device.type in FUSED_ADAMW_DEVICES for p in params)
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 per weight (forward + backward) plus attention scores,
        12 * n_layers * dim * seq_len (PaLM appendix B), as llama2.c's estimate_mfu counts them."""
        a = self.args
        n = sum(p.numel() for p in self.parameters())
        return 6 * n + 12 * a.n_layers * a.dim * a.max_seq_len


# -- between PyTorch state dicts and run.c's tensors ---------------------------------------------

def strip_compile_prefix(state: dict) -> dict:
    """A torch.compile'd model saves every key as `_orig_mod.<key>`; loaders strip it."""
    prefix = "_orig_mod."
    return {k.removeprefix(prefix): v for k, v in state.items()}


def checkpoint_tensors(model: Transformer) -> dict:
    """The model's weights as run.c's named float32 numpy arrays (llama2c.checkpoint names)."""
    layers = model.layers

    def stack(get):  # -> (n_layers, *shape) float32 numpy array
        return torch.stack([get(layer).detach().float().cpu() for layer in layers]).numpy()

    weights = {
        "token_embedding": model.tok_embeddings.weight.detach().float().cpu().numpy(),
        "rms_att": stack(lambda l: l.attention_norm.weight),
        "wq": stack(lambda l: l.attention.wq.weight),
        "wk": stack(lambda l: l.attention.wk.weight),
        "wv": stack(lambda l: l.attention.wv.weight),
        "wo": stack(lambda l: l.attention.wo.weight),
        "rms_ffn": stack(lambda l: l.ffn_norm.weight),
        "w1": stack(lambda l: l.feed_forward.w1.weight),
        "w2": stack(lambda l: l.feed_forward.w2.weight),
        "w3": stack(lambda l: l.feed_forward.w3.weight),
        "rms_final": model.norm.weight.detach().float().cpu().numpy(),
    }
    if not model.args.shared_classifier:
        weights["wcls"] = model.output.weight.detach().float().cpu().numpy()
    return weights
