"""
Measure embedding condensation: how the tokens of one sequence crowd into a narrow cone, layer by layer.

The numbers are defined in docs/condensation.md, sections 1 and 2; condensation.py computes them. As a library:

    from measure import measure
    result = measure(model, sequences)   # our GPT or a transformers causal LM; list of 1-D token tensors or (N, T)
    result.mean_cos, result.spearman, result.save("cond.json")

As a command, settings work as in train.py (config files, then --key=value overrides). The settings are
train.py's own, so its config files work here (a checkpoint keeps its own model and data set; --init builds
the model they describe), plus those in MEASURE_SETTINGS below. Each run writes a JSON and a PNG and prints
a table per model:

    python measure.py --out_dir=out/tiny_base                 # a checkpoint: out_dir/condensation.{json,png}
    python measure.py config/tiny_base.py --init=True         # the same model freshly initialised
    python measure.py --hf=gpt2 --dataset=shakespeare         # a Hugging Face model (transformers)
    python measure.py --compare=out/a,out/b,init,hf:gpt2      # side-by-side figure and table: out_dir/compare.*
    python measure.py --history=out/tiny_disp                 # condensation over training, from metrics.jsonl
"""

import json
import os
import sys
from dataclasses import asdict
from types import SimpleNamespace

import torch

# The library lives in condensation.py; these names stay importable from measure.py, as they always were.
from condensation import (Result, add_batch, hidden_stats, kendall, measure, model_limits,  # noqa: F401
                          spearman, text_windows, val_windows)
from configurator import configure
from model import GPT, config_from_settings, load_checkpoint, model_from_checkpoint
from plots import plot_history, plot_signatures
from settings import defaults

# -----------------------------------------------------------------------------
# command: settings are settings.py's (so train.py's config files work here) plus these


MEASURE_SETTINGS = dict(
    ckpt="",  # checkpoint file; empty means out_dir/ckpt.pt
    init=False,  # measure a freshly initialised model of the model settings (n_layer, n_embd, ...) instead
    hf="",  # measure a Hugging Face model instead: a name (gpt2) or a local folder; needs transformers
    compare="",  # comma-separated models, each an out_dir, a checkpoint file, 'init' or 'hf:NAME'
    history="",  # an out_dir: draw condensation over training from its metrics.jsonl
    num_sequences=100,  # validation windows measured (the paper: 100)
    seq_len=0,  # tokens per window; 0 means the model's context, capped at 512 (the paper: 512)
    text_file="",  # measure consecutive windows of this text file instead of the validation split
    texts=None,  # or a list of strings (in a config file), each one sequence
    data_dir="",  # folder with val.bin and meta.json; empty means data/<dataset> (a checkpoint's own dataset)
    bins=128,  # histogram bins on [-1, 1]
    measure_batch_size=8,  # sequences per forward pass
    save="",  # path stem of the files written (SAVE.json, SAVE.png); empty picks a name in out_dir
)


def data_meta(s, dataset, run_data_dir=""):
    """(folder, meta.json) of the data set: --data_dir, else the run's own data_dir, else data/<dataset>,
    where the default data sets prepare themselves on first use, as in train.py."""
    given = s.data_dir or run_data_dir
    folder = given or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", dataset)
    if not given and not os.path.exists(os.path.join(folder, "meta.json")):
        from data.common import prepare_default
        prepare_default(dataset)  # does nothing (returns False) for a name that is not a default data set
    if not os.path.exists(os.path.join(folder, "meta.json")):
        raise ValueError(f"{folder} holds no prepared data set (meta.json, val.bin); prepare it with "
                         "data/prepare_text.py, or pick another --dataset, --data_dir or --text_file.")
    with open(os.path.join(folder, "meta.json")) as f:
        return folder, json.load(f)


def load_entry(entry, s):
    """(model, name, data set, the run's data_dir or "") for 'init', 'hf:NAME' or a checkpoint (file or out_dir)."""
    if entry == "init":
        meta = data_meta(s, s.dataset)[1]
        torch.manual_seed(s.seed)
        model = GPT(config_from_settings(vars(s), meta["vocab_size"]))
        return model, "init", s.dataset, ""
    if entry.startswith("hf:"):
        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise ValueError("measuring a Hugging Face model needs transformers: pip install transformers") from None
        try:
            model = AutoModelForCausalLM.from_pretrained(entry[3:])
        except OSError as e:  # unknown name, no internet and no cached copy, a folder without weights
            raise ValueError(f"cannot load Hugging Face model {entry[3:]} ({type(e).__name__}); check the name, "
                             "or download it once while online.") from None
        return model, os.path.basename(entry[3:].rstrip("/")), s.dataset, ""
    path = os.path.join(entry, "ckpt.pt") if os.path.isdir(entry) else entry
    ckpt = load_checkpoint(path)  # exits with one sentence if it is missing or unreadable
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    run = ckpt.get("config", {})
    return model_from_checkpoint(ckpt), name, run.get("dataset", s.dataset), run.get("data_dir", "")


def measure_entry(entry, s, device):
    """Load one model, make its sequences (windows of val.bin, of a text file, or strings) and measure it.
    A Hugging Face model reads GPT-2 tokens; ours read the tokens of their data set."""
    model, name, dataset, run_data_dir = load_entry(entry, s)
    hf = entry.startswith("hf:")
    length = s.seq_len or min(model_limits(model)[0], 512)
    if s.text_file or s.texts:
        if hf:
            from data.common import gpt2_encoding
            encode = gpt2_encoding().encode_ordinary
        else:
            from data.common import load_tokenizer
            encode = load_tokenizer(data_meta(s, dataset, run_data_dir)[0])[0]
        if s.texts:
            texts = [s.texts] if isinstance(s.texts, str) else s.texts  # --texts=word is one string
            sequences = [torch.tensor(encode(text), dtype=torch.long) for text in texts]
        elif not os.path.isfile(s.text_file):
            raise ValueError(f"text_file {s.text_file} does not exist; give the path of a text file.")
        else:
            with open(s.text_file) as f:
                sequences = text_windows(f.read(), encode, s.num_sequences, length)
    else:
        folder, meta = data_meta(s, dataset, run_data_dir)
        tokenizer = meta["tokenizer"]
        if hf and tokenizer != "gpt2":
            raise ValueError(f"{name} reads GPT-2 tokens but {folder} holds '{tokenizer}' tokens; "
                             "add --dataset=shakespeare, or give --text_file=FILE.")
        sequences = val_windows(folder, s.num_sequences, length, s.seed)
    print(f"measuring {name}: {len(sequences)} sequences on {device}")
    return measure(model, sequences, bins=s.bins, batch_size=s.measure_batch_size, device=device, name=name)


def print_table(r):
    L = len(r.mean_cos) - 1
    print(f"{r.name}: {r.num_sequences} sequences, {r.num_tokens} tokens\nentry  l/L   mean_cos   erank  top_share")
    for l in range(L + 1):
        print(f"{l:5d}  {l / L:4.2f}  {r.mean_cos[l]:+8.4f}  {r.erank[l]:6.1f}  {r.top_share[l]:9.3f}")
    print(f"spearman {r.spearman:+.3f}  kendall {r.kendall:+.3f}\n")


def command(args):
    s = SimpleNamespace(**configure({**defaults(), **MEASURE_SETTINGS}, args))
    modes = [m for m in ("history", "compare", "hf", "init") if getattr(s, m)]
    if len(modes) > 1:
        raise ValueError(f"give only one of --history, --compare, --hf and --init, not {' and '.join(modes)}.")
    if s.history:
        if not os.path.exists(os.path.join(s.history, "metrics.jsonl")):
            raise ValueError(f"{s.history}/metrics.jsonl does not exist; give the out_dir of a training run.")
        path = (s.save or os.path.join(s.history, "history")) + ".png"
        plot_history(s.history, path)
        print(f"wrote {path}")
        return
    if s.compare:
        entries, stem = [e.strip() for e in s.compare.split(",") if e.strip()], os.path.join(s.out_dir, "compare")
    elif s.init or s.hf:  # no run folder of their own: the files go into out_dir
        entries = ["init" if s.init else "hf:" + s.hf]
        stem = os.path.join(s.out_dir, "condensation_" + ("init" if s.init else os.path.basename(s.hf.rstrip("/"))))
    else:
        entries = [s.ckpt or os.path.join(s.out_dir, "ckpt.pt")]
        stem = os.path.join(entries[0] if os.path.isdir(entries[0]) else os.path.dirname(entries[0]), "condensation")
    # mps only when asked for: not every torch version runs linalg.eigvalsh there
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = [measure_entry(e, s, device) for e in entries]
    stem = s.save or stem
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump([asdict(r) for r in results] if s.compare else asdict(results[0]), f, indent=1)
    plot_signatures(results, stem + ".png")
    for r in results:
        print_table(r)
    if s.compare:
        print(f"{'model':20s} {'spearman':>9s} {'kendall':>8s} {'cos first':>10s} {'cos last':>9s}")
        for r in results:
            print(f"{r.name:20s} {r.spearman:+9.3f} {r.kendall:+8.3f} {r.mean_cos[0]:+10.4f} {r.mean_cos[-1]:+9.4f}")
    print(f"wrote {stem}.json and {stem}.png")


def main(args):
    try:
        command(args)
    except ValueError as e:  # ConfigError too: a mistake the user can fix, said in one sentence
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
