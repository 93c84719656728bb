"""
Measure embedding condensation: how the tokens of one sequence crowd into a narrow cone, layer by layer.

The numbers are defined in docs/condensation.md, sections 1 and 2; condensation.py computes them.
As a library:

    from measure import measure
    # model: our GPT or a transformers causal LM; sequences: a list of 1-D token tensors or (N, T)
    result = measure(model, sequences)
    result.mean_cos, result.spearman, result.save("cond.json")

As a command, settings work as in train.py (config files, then --key=value overrides). The settings are
train.py's own, so its config files work here (a checkpoint keeps its own model and data set; --init builds
the model they describe), plus those in MEASURE_SETTINGS below. Each run writes a JSON and a PNG and prints
a table per model:

    python measure.py --out_dir=out/tiny_base                 # a checkpoint: out_dir/condensation.{json,png}
    python measure.py config/tiny_base.py --init=True         # the same model freshly initialised
    python measure.py --hf=gpt2                               # a Hugging Face causal LM (transformers)
    python measure.py --hf=allenai/OLMo-2-1124-7B --dtype=bfloat16   # a 7B model on one GPU
    python measure.py --compare=out/a,out/b,init,hf:gpt2   # side-by-side figure and table: out_dir/compare.*
    python measure.py --compare=hf:EleutherAI/pythia-160m@step0,hf:EleutherAI/pythia-160m   # revisions
    python measure.py --history=out/tiny_disp                 # condensation over training, from metrics.jsonl
    python measure.py --survey=studies/models_survey.py       # model families by size: condense/survey.py

Every model reads its own tokens: ours the tokens of their data set, a Hugging Face model those of its own
tokenizer (condense/hf_models.py). The text is the same for all of them: by default the validation split of
the data set (--dataset or --data_dir), else --text_file or the strings of `texts`, cut into windows of
seq_len tokens.
"""

import functools
import json
import os
import sys
import time
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import torch

from condensation import measure, model_limits, text_windows, val_windows, window_length, windows
from condense.checkpoint import config_from_settings, data_changed, load_checkpoint, model_from_checkpoint
from condense.device import pick_device
from condense.hf_models import bos_prefix, hf_encode, load_hf, parameter_count, short_name
from condense.plots import plot_history, plot_signatures
from configurator import configure
from data.common import find_data, read_meta
from model import GPT, GPTConfig
from settings import HELP, RULES, check_ranges, defaults

# -----------------------------------------------------------------------------
# command: the settings are settings.py's (so train.py's config files work here) plus these, declared and
# checked the same way: a default and its meaning here, its range in MEASURE_RULES


MEASURE_SETTINGS = dict(
    ckpt="",  # checkpoint file; empty means out_dir/ckpt.pt
    init=False,  # measure a freshly initialised model of the model settings (n_layer, n_embd, ...) instead
    hf="",  # measure a Hugging Face causal LM instead: a hub name (gpt2), NAME@REVISION, or a local folder
    compare="",  # comma-separated models, each an out_dir, a checkpoint file, 'init' or 'hf:NAME[@REVISION]'
    history="",  # an out_dir: draw condensation over training from its metrics.jsonl
    survey="",  # a survey file (studies/models_survey.py): model families by size, and the trend figure
    num_sequences=100,  # windows measured (the paper: 100)
    seq_len=0,  # tokens per window, the model's own; 0: 512 (the paper), or the model's context if shorter
    text_file="",  # measure consecutive windows of this UTF-8 text file instead of the validation split
    texts=None,  # or a list of strings (in a config file), each one sequence of at most seq_len tokens
    data_dir="",  # folder with val.bin and meta.json; empty means data/<dataset> (a checkpoint's own dataset)
    # Hugging Face models: 'auto' puts what the tokenizer itself puts before a text (Llama's and Gemma's
    # <bos>; nothing for GPT-2, Qwen, Pythia), as the paper's code did; 'always' or 'never' a BOS token
    bos="auto",
    bins=128,  # histogram bins on [-1, 1]
    # opt-in, for their cost in % of the forward passes on one CPU thread, GPT-2-small / small_base shape
    # (everything else together: 4-6%; docs/performance.md):
    top_share=False,  # the top singular direction's share of sum sigma^2, by Lanczos: adds about 2% / 9%
    erank=False,  # the effective rank, one eigendecomposition per sequence and entry: adds 27% / 35%
    measure_batch_size=1,  # sequences per forward pass; on a CPU 1 is fastest and lightest (bench_measure)
    save="",  # path stem of the files written (SAVE.json, SAVE.png); empty picks a name in out_dir
)


MEASURE_RULES = {  # the range of each, as settings.RULES gives train.py's: (test, what it must be)
    "num_sequences": (lambda v: v >= 1, "at least 1 (the paper: 100)"),
    "seq_len": (lambda v: v == 0 or v >= 2, "0 (512, or the model's context if shorter) or at least 2"),
    "bos": (lambda v: v in ("auto", "always", "never"), "auto, always or never"),
    "bins": (lambda v: v >= 1, "at least 1 (the paper: 128)"),
    "measure_batch_size": (lambda v: v >= 1, "at least 1 (a forward pass takes at least one sequence)"),
}


def read_settings(args):
    """The settings, checked before any model is loaded: one sentence for the first bad one."""
    own = ("measure.py's own settings", "measure.py", MEASURE_RULES, "MEASURE_SETTINGS")
    s = SimpleNamespace(**configure({**defaults(), **MEASURE_SETTINGS}, args, __doc__, [HELP, own]))
    check_ranges(vars(s), {**RULES, **MEASURE_RULES})
    modes = [m for m in ("history", "survey", "compare", "hf", "init") if getattr(s, m)]
    if len(modes) > 1:
        raise ValueError(f"give only one of --history, --survey, --compare, --hf and --init, not "
                         f"{' and '.join(modes)}.")
    # mps only when asked for (eigvalsh)
    s.device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {s.device} is not available here (torch sees no CUDA GPU); "
                         "give --device=cpu.")
    s.dtype = pick_device(s.device, s.dtype)[2]  # empty: bfloat16 where the GPU supports it, else float32
    s.text = read_text(s.text_file) if s.text_file else None
    s.checkpoints = {}  # entry -> open_checkpoint's answer, for checkpoints opened before measuring
    return s


def read_text(path):
    """The contents of a UTF-8 text file, or one sentence saying why it cannot be measured."""
    if os.path.isdir(path):
        raise ValueError(f"text_file {path} is a folder; give the path of a text file.")
    if not os.path.isfile(path):
        raise ValueError(f"text_file {path} does not exist; give the path of a text file.")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"text_file {path} is not UTF-8 text (a binary file?); "
                         "give a plain text file.") from None
    if "\x00" in text:
        raise ValueError(f"text_file {path} holds NUL bytes, so it is not a text file; "
                         "give a plain text file.")
    return text


def data_meta(s, dataset, run_data_dir=""):
    """(folder, meta.json) of the data set: --data_dir, else the run's own data_dir, else data/<dataset>,
    found (and a default one prepared) as train.py finds it."""
    folder = find_data(dataset, s.data_dir or run_data_dir)
    return folder, read_meta(folder)


@functools.cache
def val_text(folder):
    """The raw text of a data set's validation split: val.bin decoded with the data set's own tokenizer."""
    from data.common import load_tokenizer
    return load_tokenizer(folder)[1](np.memmap(os.path.join(folder, "val.bin"), dtype=np.uint16, mode="r"))


SHAPE = ("n_layer", "n_head", "n_embd", "mlp_dim", "bias", "block_size")  # the settings that shape our GPT


def open_checkpoint(entry, s):
    """(checkpoint, name, data set, the run's data_dir) for an out_dir or a checkpoint file, its data set
    checked as a resume checks it: a folder prepared again from other text would give its ids other tokens."""
    path = os.path.join(entry, "ckpt.pt") if os.path.isdir(entry) else entry
    ckpt = load_checkpoint(path)  # exits with one sentence if it is missing or unreadable
    run = ckpt.get("config", {})
    dataset, run_data_dir = run.get("dataset", s.dataset), run.get("data_dir", "")
    folder, meta = data_meta(s, dataset, run_data_dir)
    why = data_changed(ckpt, meta)
    if why:
        raise ValueError(f"the data set in {folder} is not the one {path} was trained on ({why}), so the "
                         "model's ids would mean other tokens; put the run's own data back, or give its "
                         "folder with --data_dir.")
    return ckpt, os.path.basename(os.path.dirname(os.path.abspath(path))), dataset, run_data_dir


def init_model(s):
    """(GPTConfig, data set, data_dir) of 'init', a freshly initialised model: the shape the settings give
    (a config file, --n_layer=...), or, in a comparison whose settings leave the shape at its defaults, the
    shape of the checkpoints compared, reading their data set. Checkpoints of several shapes stop it, saying
    which shape it would build."""
    runs = [(name, GPTConfig(**ckpt["model_args"]), dataset, data_dir)
            for ckpt, name, dataset, data_dir in s.checkpoints.values()]
    settings_given = any(getattr(s, k) != defaults()[k] for k in SHAPE)
    if runs and not settings_given:
        shapes = {(c.n_layer, c.n_head, c.n_embd, c.mlp_dim, c.bias, c.block_size, c.vocab_size, d, r)
                  for _, c, d, r in runs}
        if len(shapes) == 1:
            return runs[0][1], runs[0][2], runs[0][3]
        theirs = ", ".join(f"{n}: {shape_name(c)} on {d}" for n, c, d, _ in runs)
        default = f"{shape_name(config_from_settings(vars(s), 1))} on {s.dataset}"
        raise ValueError(f"the checkpoints compared differ in shape or data ({theirs}), so init would be "
                         f"built in the default shape, {default}: give its shape in a config file "
                         "(measure.py config/tiny_base.py --compare=...) or compare init with one shape at a "
                         "time.")
    return config_from_settings(vars(s), data_meta(s, s.dataset)[1]["vocab_size"]), s.dataset, ""


def shape_name(config):
    return f"{config.n_layer}x{config.n_embd}"  # layers x width


def load_entry(entry, s):
    """(model, name, its tokenizer or None, data set, the run's data_dir or "") for 'init', 'hf:NAME' or a
    checkpoint (file or out_dir). Ours (tokenizer None) read their data set's tokens."""
    dtype = getattr(torch, s.dtype)
    if entry == "init":
        config, dataset, run_data_dir = init_model(s)
        torch.manual_seed(s.seed)
        model = GPT(config)
        return model.to(s.device, dtype), f"init {shape_name(config)}", None, dataset, run_data_dir
    if entry.startswith("hf:"):
        model, tokenizer = load_hf(entry[3:], s.device, s.dtype)
        return model, short_name(entry[3:]), tokenizer, s.dataset, ""
    # opened already when a comparison checked every entry first
    ckpt, name, dataset, run_data_dir = s.checkpoints.pop(entry, None) or open_checkpoint(entry, s)
    model = model_from_checkpoint(ckpt).to(s.device, dtype)
    return model, name, None, dataset, run_data_dir


def sequences_for(s, name, tokenizer, dataset, run_data_dir, length):
    """The windows one model reads, in its own tokens: of the strings of `texts` (one each), of the text file,
    or by default of the validation split (ours: val.bin itself; a Hugging Face model: its decoded text)."""
    prefix = bos_prefix(tokenizer, s.bos, name) if tokenizer is not None else []
    if tokenizer is not None:
        encode = hf_encode(tokenizer)
    elif s.texts or s.text_file:
        from data.common import load_tokenizer
        encode = load_tokenizer(data_meta(s, dataset, run_data_dir)[0])[0]
    if s.texts:
        texts = [s.texts] if isinstance(s.texts, str) else s.texts  # --texts=word is one string
        return [torch.tensor([*prefix, *encode(text)][:length], dtype=torch.long) for text in texts]
    if s.text_file:
        return text_windows(s.text, encode, s.num_sequences, length, prefix,
                            source=f"text_file {s.text_file}")
    folder, _ = data_meta(s, dataset, run_data_dir)
    if tokenizer is None:
        return val_windows(folder, s.num_sequences, length, s.seed)
    ids = np.array(encode(val_text(folder)), dtype=np.int64)
    return windows(ids, s.num_sequences, length, s.seed, prefix, source=f"the validation text of {folder}")


def progress_line(name):
    """progress(done, total) for measure(): one line redrawn in a terminal, a line every 30 s in a log."""
    start, shown, tty = time.time(), [0.0], sys.stderr.isatty()

    def progress(done, total):
        elapsed = time.time() - start
        if not tty and (elapsed - shown[0] < 30 or done == total):
            return
        shown[0] = elapsed
        left = elapsed / done * (total - done)
        print(f"\r  {name}: {done}/{total} sequences, {elapsed:.0f} s, about {left:.0f} s left  ",
              end="\n" if done == total or not tty else "", file=sys.stderr, flush=True)
    return progress


def measure_entry(entry, s):
    """Load one model, make its windows and measure it; (Result, parameter count)."""
    model, name, tokenizer, dataset, run_data_dir = load_entry(entry, s)
    length = window_length(model_limits(model)[0], s.seq_len)
    sequences = sequences_for(s, name, tokenizer, dataset, run_data_dir, length)
    print(f"measuring {name}: {len(sequences)} sequences of up to {length} tokens on {s.device} ({s.dtype})",
          flush=True)
    result = measure(model, sequences, bins=s.bins, batch_size=s.measure_batch_size, device=s.device,
                     name=name, progress=progress_line(name), erank=s.erank, top_share=s.top_share)
    return result, parameter_count(model)


def print_table(r):
    """mean_cos per entry, and erank and top_share where they were asked for (--erank, --top_share)."""
    L = len(r.mean_cos) - 1
    print(f"{r.name}: {r.num_sequences} sequences, {r.num_tokens} tokens\nentry  l/L   mean_cos"
          + "   erank" * (r.erank is not None) + "  top_share" * (r.top_share is not None))
    for l in range(L + 1):
        print(f"{l:5d}  {l / L:4.2f}  {r.mean_cos[l]:+8.4f}" + (f"  {r.erank[l]:6.1f}" if r.erank else "")
              + (f"  {r.top_share[l]:9.3f}" if r.top_share else ""))
    print(f"spearman {r.spearman:+.3f}  kendall {r.kendall:+.3f}\n")


def command(args):
    s = read_settings(args)
    if s.history:
        if not os.path.exists(os.path.join(s.history, "metrics.jsonl")):
            raise ValueError(f"{s.history}/metrics.jsonl does not exist; give the out_dir of a training run.")
        path = (s.save or os.path.join(s.history, "history")) + ".png"
        writable(path)
        plot_history(s.history, path)
        print(f"wrote {path}")
        return
    if s.survey:
        from condense.survey import run_survey
        run_survey(s, measure_entry)
        return
    if s.compare:
        entries, stem = ([e.strip() for e in s.compare.split(",") if e.strip()],
                         os.path.join(s.out_dir, "compare"))
    elif s.init or s.hf:  # no run folder of their own: the files go into out_dir
        entries = ["init" if s.init else "hf:" + s.hf]
        stem = os.path.join(s.out_dir, "condensation_" + ("init" if s.init else short_name(s.hf)))
    else:
        entries = [s.ckpt or os.path.join(s.out_dir, "ckpt.pt")]
        stem = os.path.join(entries[0] if os.path.isdir(entries[0]) else os.path.dirname(entries[0]),
                            "condensation")
    # every checkpoint opened and checked, and the folder written to made, before the first is measured:
    # a mistake in the last one shows now, not after the others
    s.checkpoints = {e: open_checkpoint(e, s) for e in entries if e != "init" and not e.startswith("hf:")}
    stem = s.save or stem
    writable(stem + ".json")
    results = [measure_entry(e, s)[0] for e in entries]
    with open(stem + ".json", "w") as f:
        json.dump([asdict(r) for r in results] if s.compare else asdict(results[0]), f, indent=1)
    plot_signatures(results, stem + ".png")
    for r in results:
        print_table(r)
    if s.compare:
        print(f"{'model':20s} {'spearman':>9s} {'kendall':>8s} {'cos first':>10s} {'cos last':>9s}")
        for r in results:
            print(f"{r.name:20s} {r.spearman:+9.3f} {r.kendall:+8.3f} {r.mean_cos[0]:+10.4f} "
                  f"{r.mean_cos[-1]:+9.4f}")
    print(f"wrote {stem}.json and {stem}.png")


def writable(path):
    """Make path's folder, or stop with one sentence before anything is measured if it cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot make the folder {folder} for {path} ({e.strerror or e}); pick another "
                         "place with --save=...") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {path}: {folder} is read-only; pick another place with --save=...")


def main(args):
    try:
        command(args)
    except ValueError as e:  # ConfigError too: a mistake the user can fix, said in one sentence
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
