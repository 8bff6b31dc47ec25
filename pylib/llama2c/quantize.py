"""int8 checkpoints: llama2.c's "version 2" export (Q8_0), written from a legacy fp32 checkpoint.

The format (llama2.c export.py `version2_export`, read by runq.c and by wasm/run.c):

    header, 256 bytes: uint32 magic "ak42", int32 version 2, 7 x int32 config, uint8 shared
                       classifier flag, int32 group size, zero padding
    fp32:  rms_att (n_layers, dim), rms_ffn (n_layers, dim), rms_final (dim,)
    int8:  each of token_embedding, wq[l]..., wk[l]..., wv[l]..., wo[l]..., w1[l]..., w2[l]...,
           w3[l]... (and wcls when unshared) as int8 values, then one fp32 scale per group

Each group of `group_size` consecutive values is scaled so its largest magnitude maps to 127.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

from .checkpoint import Config, read_weights
from .errors import CheckpointError

MAGIC = 0x616B3432
VERSION = 2
HEADER_BYTES = 256


def choose_group_size(config: Config, preferred: int = 64) -> int:
    """The largest power of two <= preferred that divides both dim and hidden_dim."""
    group = preferred
    while group > 1 and (config.dim % group or config.hidden_dim % group):
        group //= 2
    return group


def quantize_q80(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(int8 values, fp32 scales, max abs error) of w, in groups of group_size (round half even)."""
    groups = np.asarray(w, np.float32).reshape(-1, group_size)
    scale = (np.abs(groups).max(axis=1) / np.float32(127.0)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))[:, None]
    q = np.round(groups / safe).astype(np.int8)
    error = float(np.abs(q.astype(np.float32) * scale[:, None] - groups).max()) if groups.size else 0.0
    return q.reshape(-1), scale, error


def header(config: Config, group_size: int) -> bytes:
    c = config
    head = struct.pack("<Ii7iB", MAGIC, VERSION, c.dim, c.hidden_dim, c.n_layers, c.n_heads,
                       c.n_kv_heads, c.vocab_size, c.seq_len, int(c.shared_classifier))
    head += struct.pack("<i", group_size)
    return head + b"\0" * (HEADER_BYTES - len(head))


def quantized_tensors(config: Config, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The matrices in the order the format stores them, one entry per layer."""
    tensors = [weights["token_embedding"]]
    for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
        tensors.extend(weights[name][layer] for layer in range(config.n_layers))
    if not config.shared_classifier:
        tensors.append(weights["wcls"])
    return tensors


def quantize_checkpoint(src: str | Path, dst: str | Path, group_size: int = 64) -> dict:
    """Writes an int8 copy of a legacy fp32 checkpoint. Returns a small report."""
    if group_size < 1:
        raise ValueError(f"group size must be a positive number of values, got {group_size}")
    config, weights = read_weights(Path(src).read_bytes())
    group = choose_group_size(config, group_size)
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    max_error = 0.0
    try:
        with open(tmp, "wb") as f:
            f.write(header(config, group))
            for name in ("rms_att", "rms_ffn", "rms_final"):
                f.write(np.asarray(weights[name], "<f4").tobytes())
            for tensor in quantized_tensors(config, weights):
                q, scale, error = quantize_q80(tensor, group)
                max_error = max(max_error, error)
                f.write(q.tobytes())
                f.write(scale.astype("<f4").tobytes())
        tmp.replace(dst)
    except BaseException:  # a failure or Ctrl-C leaves no half-written OUT.bin.tmp behind
        tmp.unlink(missing_ok=True)
        raise
    return {"group_size": group, "max_error": max_error, "bytes": dst.stat().st_size,
            "fp32_bytes": Path(src).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m llama2c.quantize IN.bin OUT.bin [GROUP_SIZE]", file=sys.stderr)
        return 1
    try:
        report = quantize_checkpoint(args[0], args[1], int(args[2]) if len(args) == 3 else 64)
    except (CheckpointError, OSError, ValueError) as e:
        print(f"llama2c quantize: error: {e}", file=sys.stderr)
        return 1
    ratio = report["fp32_bytes"] / report["bytes"]
    # Groups of 1 store a 4-byte scale per 1-byte value: the file is larger than the fp32 one.
    change = f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger than fp32"
    print(f"wrote {args[1]}: {report['bytes']:,} bytes ({change}), "
          f"group size {report['group_size']}, max weight error {report['max_error']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
