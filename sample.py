"""
Sample text from a trained checkpoint, or from Hugging Face GPT-2.

    python sample.py --out_dir=out/tiny_base --start="ROMEO:" --num_samples=3
    python sample.py --out_dir=out/tiny_base --start=FILE:prompt.txt --max_new_tokens=200
    python sample.py --init_from=gpt2 --start="The meaning of life is"   # online, with transformers
"""

import math
import os
import sys

import torch

from condense.checkpoint import data_changed, load_checkpoint, model_from_checkpoint
from condense.device import pick_device
from configurator import configure
from data.common import gpt2_encoding, load_tokenizer, read_meta
from model import GPT
from settings import GPT2_NAMES, RULES as TRAIN_RULES, check_ranges

# -----------------------------------------------------------------------------
out_dir = "out"  # the run whose out_dir/ckpt.pt is sampled (init_from='resume')
init_from = "resume"  # 'resume' for out_dir's checkpoint, or a GPT-2 name such as 'gpt2', 'gpt2-medium'
start = "\n"  # the prompt; "FILE:path.txt" reads it from a file
num_samples = 3  # independent samples
max_new_tokens = 300  # tokens generated per sample
temperature = 0.8  # 1.0 samples the model's distribution; lower is more conservative; 0 is greedy
top_k = 200  # sample among the top_k most likely tokens only; 0 keeps all
seed = 1337  # seeds the sampling
device = ""  # empty picks cuda, then mps, then cpu
dtype = ""  # empty picks bfloat16 on a GPU that has it, else float32
# -----------------------------------------------------------------------------
RULES = {  # the range of each setting, as settings.RULES gives them for train.py: (test, what it must be)
    "init_from": (lambda v: v in ("resume", *GPT2_NAMES), f"resume or one of {', '.join(GPT2_NAMES)}"),
    "start": (lambda v: v != "" and v != "FILE:", "a prompt of at least one character, or FILE:path.txt"),
    "num_samples": (lambda v: v >= 1, "at least 1"),
    "max_new_tokens": (lambda v: v >= 1, "at least 1"),
    "temperature": (lambda v: 0 <= v < math.inf, "0 (greedy: always the likeliest token) or more"),
    "top_k": (lambda v: v >= 0, "0 (all tokens) or more"),
    **{k: TRAIN_RULES[k] for k in ("out_dir", "seed", "device", "dtype")},
}
defaults = {k: v for k, v in globals().items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
try:
    config = configure(defaults, sys.argv[1:], __doc__, [("sample.py's settings", "sample.py", RULES, None)])
    check_ranges(config, RULES)
    globals().update(config)
    device, device_type, dtype, autocast = pick_device(device, dtype)  # stops if the device is not there
except ValueError as e:  # ConfigError is one
    sys.exit(f"error: {e}")
torch.manual_seed(seed)

if init_from == "resume":
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))
    model = model_from_checkpoint(ckpt)
    dataset = ckpt["config"]["dataset"]
    data_dir = ckpt["config"].get("data_dir") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                              "data", dataset)
    try:
        meta = read_meta(data_dir)
        encode, decode = load_tokenizer(data_dir)
    except (OSError, ValueError) as e:  # missing or broken meta.json
        sys.exit(f"error: {e}.")
    vocab_size = meta["vocab_size"]  # the model's embedding is padded past it
    why = data_changed(ckpt, meta)  # the data folder prepared again from other text since
    if why:
        sys.exit(f"error: the data set in {data_dir} has changed since {out_dir}/ckpt.pt was trained "
                 f"({why}), so the model's ids would decode to other text; put the run's own data back.")
else:  # a GPT-2 name
    model = GPT.from_pretrained(init_from)
    vocab_size = model.config.vocab_size
    try:
        enc = gpt2_encoding()
    except RuntimeError as e:
        sys.exit(f"error: {e}.")
    encode, decode = (lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})), enc.decode
model.eval().to(device)

if start.startswith("FILE:"):
    try:
        with open(start[5:], encoding="utf-8") as f:
            start = f.read()
    except OSError:
        sys.exit(f"error: cannot read the prompt file '{start[5:]}'.")
    except UnicodeDecodeError:
        sys.exit(f"error: the prompt file '{start[5:]}' is not UTF-8 text; give a text file.")
try:
    start_ids = encode(start)
except ValueError as e:
    sys.exit(f"error: {e}")
if not start_ids:
    sys.exit("error: the prompt is empty; give at least one character with --start=...")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

with torch.no_grad(), autocast:
    for _ in range(num_samples):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None,
                           vocab_size=vocab_size)
        print(decode(y[0].tolist()))
        print("---------------")
