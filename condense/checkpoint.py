"""
From settings and checkpoints to a model: the GPT that train.py's settings describe, and a checkpoint that
train.py wrote, read safely and rebuilt. Used by train.py, measure.py, sample.py and the scripts; model.py
itself knows nothing of settings or files.
"""

import os

import torch

from data.common import data_fingerprint
from model import GPT, GPTConfig, padded_vocab


def config_from_settings(settings, vocab_size):
    """The GPTConfig of the model that train.py's settings (a dict) describe, for a tokenizer of vocab_size
    ids: one definition of "the same model" for train.py, measure.py --init and scripts/bench.py."""
    keys = ("block_size", "n_layer", "n_head", "n_embd", "mlp_dim", "dropout", "bias", "embed_noise_alpha")
    return GPTConfig(vocab_size=padded_vocab(vocab_size), **{k: settings[k] for k in keys})


def runs_under(folder="out"):
    """The run folders below folder (out_dir's default parent) that hold a ckpt.pt, newest first."""
    found = [os.path.join(folder, name) for name in (os.listdir(folder) if os.path.isdir(folder) else [])
             if os.path.isfile(os.path.join(folder, name, "ckpt.pt"))]
    return sorted(found, key=lambda run: -os.path.getmtime(os.path.join(run, "ckpt.pt")))


def no_checkpoint(path):
    """The sentence for a checkpoint that is not there: the runs there are instead, and how to pick one."""
    runs = runs_under()
    if runs:
        return (f"error: no checkpoint at {path}; the runs under out/ are {', '.join(runs)}: pick one with "
                f"--out_dir={runs[0]}.")
    return f"error: no checkpoint at {path}: train one first (python train.py ...) or pass the right path."


def load_checkpoint(path, device="cpu"):
    """Read a checkpoint written by train.py. Safe: weights_only=True never runs code from the file. A
    missing, unreadable or foreign file stops with one sentence (SystemExit), for every command alike."""
    if not os.path.exists(path):
        raise SystemExit(no_checkpoint(path))
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated file, not a zip, pickled code, ...
        raise SystemExit(f"error: cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or not "
                         "ours.") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise SystemExit(f"error: {path} is not a checkpoint written by train.py (no model weights in it).")
    return ckpt


def checkpoint_iteration(path):
    """The iteration of the checkpoint at path, or None if there is none (or it cannot be read); quick even
    for a large file, whose tensors are mapped, not read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["iter_num"]
    except Exception:  # missing, or not a checkpoint: said as "no checkpoint"
        return None


def data_changed(ckpt, meta):
    """Why the data set whose meta.json is meta is not the one ckpt was trained on, or None if it is (or the
    checkpoint is from before the fingerprint and the vocabulary fits). Its token ids would mean other tokens:
    a resume, sample.py, measure.py and export all refuse it."""
    saved = ckpt.get("data")  # older checkpoints lack "data": the vocabulary check only
    if saved is not None and saved != data_fingerprint(meta):
        return f"its meta.json has changed: vocabulary {saved['vocab_size']} then, {meta['vocab_size']} now"
    if ckpt["model_args"]["vocab_size"] < meta["vocab_size"]:
        return (f"its {meta['vocab_size']} tokens do not fit the checkpoint's "
                f"{ckpt['model_args']['vocab_size']}")
    return None


def model_from_checkpoint(ckpt):
    """Build the GPT a checkpoint describes and load its weights."""
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    return model

