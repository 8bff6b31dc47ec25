"""`llama2c export`: a training checkpoint (ours or llama2.c's ckpt.pt) -> a model file run.c reads.

    fp32 (default)  llama2.c's legacy format (version 0), written by llama2c.checkpoint
    int8            llama2.c's version 2 (Q8_0), written by llama2c.quantize from that fp32 file,
                    so it is byte for byte what `invoke quantize` makes of the fp32 export

Both checkpoint layouts are the same dict: `model` (a state dict with llama2.c's parameter names,
maybe prefixed `_orig_mod.` by torch.compile) and `model_args`. llama2.c's model_args lack
hidden_dim (derived from multiple_of) and a classifier flag: its classifier is always tied, which
the exporter sees as output.weight equal to tok_embeddings.weight, llama2.c's own test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..checkpoint import write_checkpoint
from ..errors import CheckpointError
from ..quantize import quantize_checkpoint
from .model import ModelArgs, Transformer, checkpoint_tensors, rope_tables, strip_compile_prefix
from .util import TrainError, check_writable, fsync_replace

MODELS_DIR = Path("models")  # what `invoke build` copies into the site


def load_checkpoint(path: str | Path) -> tuple[Transformer, dict]:
    """Loads ours or llama2.c's ckpt.pt into a Transformer; returns it and the raw dict."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise TrainError(f"no checkpoint {path}") from None
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise TrainError(f"{path} is not a PyTorch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise TrainError(f"{path} has no `model` and `model_args` (not a llama2.c training checkpoint)")
    state = strip_compile_prefix(ckpt["model"])
    args = ModelArgs.from_dict(ckpt["model_args"])
    if "shared_classifier" not in ckpt["model_args"]:  # llama2.c's layout: tied unless they differ
        out, emb = state.get("output.weight"), state.get("tok_embeddings.weight")
        args.shared_classifier = out is None or (emb is not None and torch.equal(out, emb))
    model = Transformer(args)
    load_state(model, state, str(path))
    return model, ckpt


def load_state(model: Transformer, state: dict, name: str) -> None:
    """load_state_dict with a one-line error naming the first tensor that does not fit."""
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in state:
            raise TrainError(f"{name}: missing tensor {key}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise TrainError(f"{name}: tensor {key} has shape {tuple(state[key].shape)}, the config "
                             f"needs {tuple(tensor.shape)} (checkpoint shape does not match the config)")
    extra = sorted(set(state) - set(own))
    if extra:
        raise TrainError(f"{name}: unexpected tensor {extra[0]} (checkpoint does not match the config)")
    model.load_state_dict(state)


def write_fp32(model: Transformer, path: Path) -> None:
    """The legacy v0 file, with llama2.c's RoPE tables in the slots run.c skips."""
    config = model.args.config()
    weights = checkpoint_tensors(model)
    cos, sin = rope_tables(config.head_size, config.seq_len)
    weights["freq_cis_real"], weights["freq_cis_imag"] = cos.reshape(-1).numpy(), sin.reshape(-1).numpy()
    write_checkpoint(path, config, weights)


def export(checkpoint: str | Path, out: str | Path, *, version: int = 0, tokenizer: str | Path | None
           = None, force: bool = False, site: bool = False, group_size: int = 64) -> list[Path]:
    """Writes the model (and its tokenizer beside it as NAME.tok.bin). Returns the paths written.

    version 0: fp32; version 2: int8. site=True writes into models/ (the site's model folder).
    Nothing is replaced without force, and every file appears whole or not at all.
    """
    out = MODELS_DIR / Path(out).name if site else Path(out)
    tok_out = out.with_name(out.name.removesuffix(".bin") + ".tok.bin")
    targets = [out] + ([tok_out] if tokenizer else [])
    for target in targets:
        check_writable(target, force, folder_may_be_made=site)
    if version not in (0, 2):
        raise TrainError(f"unknown export version {version} (0: fp32, 2: int8)")
    if tokenizer and not Path(tokenizer).is_file():
        raise TrainError(f"no tokenizer {tokenizer}")
    model, _ = load_checkpoint(checkpoint)
    try:
        model.args.config().validate()
    except CheckpointError as e:
        raise TrainError(str(e)) from None
    out.parent.mkdir(exist_ok=True)  # models/ for --site; otherwise it exists already
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
            fp32 = Path(tmp) / "model.bin"
            write_fp32(model, fp32)
            if version == 2:
                quantize_checkpoint(fp32, Path(tmp) / "q80.bin", group_size)
                fp32 = Path(tmp) / "q80.bin"
            copy = Path(tmp) / "tok.bin"
            if tokenizer:
                shutil.copyfile(tokenizer, copy)
            # both are complete on disk before either is renamed into place
            fsync_replace(fp32, out)
            if tokenizer:
                fsync_replace(copy, tok_out)
    except OSError as e:  # e.g. the disk is full: the temporary folder goes, the targets stay
        raise TrainError(f"cannot write {out}: {e.strerror or e}") from None
    return targets


def default_tokenizer(checkpoint: Path) -> Path | None:
    """The tokenizer a training run recorded beside its checkpoint (train writes tokenizer.txt)."""
    note = checkpoint.parent / "tokenizer.txt"
    if note.is_file():
        path = Path(note.read_text().strip())
        return path if path.is_file() else None
    return None


def size_text(path: Path) -> str:
    return f"{os.path.getsize(path):,} bytes"
