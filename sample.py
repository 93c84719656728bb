"""
Sample text from a trained checkpoint, or from Hugging Face GPT-2.

    python sample.py --out_dir=out/tiny_base --start="ROMEO:" --num_samples=3
    python sample.py --out_dir=out/tiny_base --start=FILE:prompt.txt --max_new_tokens=200
    python sample.py --init_from=gpt2 --start="The meaning of life is"   # online, with transformers
"""

import json
import os
import sys

import torch

from configurator import ConfigError, configure
from data.common import gpt2_encoding, load_tokenizer
from model import GPT, load_checkpoint, model_from_checkpoint, pick_device

# -----------------------------------------------------------------------------
out_dir = "out"  # the run whose out_dir/ckpt.pt is sampled (init_from='resume')
init_from = "resume"  # 'resume' for out_dir's checkpoint, or a GPT-2 name such as 'gpt2', 'gpt2-medium'
start = "\n"  # the prompt; "FILE:path.txt" reads it from a file
num_samples = 3  # independent samples
max_new_tokens = 300  # tokens generated per sample
temperature = 0.8  # 1.0 samples the model's distribution; lower is more conservative
top_k = 200  # sample among the top_k most likely tokens only; 0 keeps all
seed = 1337
device = ""  # empty picks cuda, then mps, then cpu
dtype = ""  # empty picks bfloat16 on a GPU that has it, else float32
# -----------------------------------------------------------------------------
defaults = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
try:
    globals().update(configure(defaults, sys.argv[1:]))
    device, device_type, dtype, autocast = pick_device(device, dtype)
except (ConfigError, ValueError) as e:
    sys.exit(f"error: {e}")
torch.manual_seed(seed)

if init_from == "resume":
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))
    model = model_from_checkpoint(ckpt)
    dataset = ckpt["config"]["dataset"]
    data_dir = ckpt["config"].get("data_dir") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", dataset)
    try:
        encode, decode = load_tokenizer(data_dir)
        with open(os.path.join(data_dir, "meta.json")) as f:
            vocab_size = json.load(f)["vocab_size"]  # the model's embedding is padded past it
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
elif init_from.startswith("gpt2"):
    model = GPT.from_pretrained(init_from)
    vocab_size = model.config.vocab_size
    enc = gpt2_encoding()
    encode, decode = (lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})), enc.decode
else:
    sys.exit(f"error: init_from must be 'resume' or a GPT-2 name like 'gpt2', not '{init_from}'.")
model.eval().to(device)

if start.startswith("FILE:"):
    try:
        with open(start[5:], encoding="utf-8") as f:
            start = f.read()
    except OSError:
        sys.exit(f"error: cannot read the prompt file '{start[5:]}'.")
try:
    start_ids = encode(start)
except ValueError as e:
    sys.exit(f"error: {e}")
if not start_ids:
    sys.exit("error: the prompt is empty; give at least one character with --start=...")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

with torch.no_grad(), autocast:
    for _ in range(num_samples):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None, vocab_size=vocab_size)
        print(decode(y[0].tolist()))
        print("---------------")
