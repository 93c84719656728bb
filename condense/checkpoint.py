"""
From settings and checkpoints to a model: the GPT that train.py's settings describe, and a checkpoint that
train.py wrote, read safely and rebuilt. Used by train.py, measure.py, sample.py and the scripts; model.py
itself knows nothing of settings or files.
"""

import os

import torch

from model import GPT, GPTConfig, padded_vocab


def config_from_settings(settings, vocab_size):
    """The GPTConfig of the model that train.py's settings (a dict) describe, for a tokenizer of vocab_size
    ids: one definition of "the same model" for train.py, measure.py --init and scripts/bench.py."""
    keys = ("block_size", "n_layer", "n_head", "n_embd", "mlp_dim", "dropout", "bias", "embed_noise_alpha")
    return GPTConfig(vocab_size=padded_vocab(vocab_size), **{k: settings[k] for k in keys})


def load_checkpoint(path, device="cpu"):
    """Read a checkpoint written by train.py. Safe: weights_only=True never runs code from the file."""
    if not os.path.exists(path):
        raise SystemExit(f"no checkpoint at {path}: train one first (python train.py ...) or pass the right "
                         "path.")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated file, not a zip, pickled code, ...
        raise SystemExit(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or not "
                         "ours.") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise SystemExit(f"{path} is not a checkpoint written by train.py (no model weights in it).")
    return ckpt


def model_from_checkpoint(ckpt):
    """Build the GPT a checkpoint describes and load its weights."""
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    return model
