"""
The settings of a training run: every name train.py reads, with its default and its meaning, in one place.

A config file (plain Python in config/) assigns some of them and --key=value overrides follow, left to right
(configurator.py). measure.py, scripts/bench.py and scripts/study.py take the same settings, so one config
file describes the same model and data for all of them:

    from configurator import configure
    from settings import defaults
    config = configure(defaults(), sys.argv[1:])   # a dict: name -> value

The defaults train a small character-level model on Shakespeare. Below them, RULES says what range each
setting may take, and check_config(config) checks a whole set of settings before anything runs.
"""

import math
import os

from configurator import ConfigError

# I/O
out_dir = "out"  # checkpoint, config.json and metrics.jsonl go here
eval_interval = 250  # evaluate (and checkpoint) every this many iterations
log_interval = 10  # print and record one training line every this many iterations
eval_iters = 20  # fixed batches per split in each evaluation
always_save_checkpoint = True  # save at every evaluation, not only when val loss improves
init_from = "scratch"  # 'scratch', 'resume' (from out_dir/ckpt.pt) or a GPT-2 name such as 'gpt2'
seed = 1337  # seeds the model, the batches and the fixed evaluation batches
# data
dataset = "shakespeare_char"  # a folder under data/ holding train.bin, val.bin and meta.json
# the data set's folder if it is not data/<dataset>, e.g. one made elsewhere by data/prepare_text.py
data_dir = ""
gradient_accumulation_steps = 1  # global count of micro-batches per step, divided among processes
batch_size = 32  # sequences per micro-batch, per process
block_size = 256  # tokens per sequence
# model
n_layer = 6  # transformer blocks
n_head = 6  # attention heads per block; n_embd must be a multiple of it
n_embd = 384  # width of the hidden states
mlp_dim = 0  # MLP hidden width; 0 means 4 * n_embd (GPT-2)
dropout = 0.0  # 0 for pre-training, 0.1+ when fine-tuning small data
bias = False  # biases in Linear and LayerNorm layers
# AdamW optimizer and learning-rate schedule
learning_rate = 1e-3  # peak learning rate
max_iters = 5000  # total optimizer steps
weight_decay = 0.1  # on weight matrices only
beta1 = 0.9  # AdamW's decay of the gradient's running mean
beta2 = 0.95  # AdamW's decay of the squared gradient's running mean
grad_clip = 1.0  # clip the global gradient norm to this; 0 disables
warmup_iters = 100  # linear warm-up steps
lr_decay_iters = 0  # cosine decay ends here; 0 means max_iters
min_lr = 1e-4  # learning rate at the end of the decay, about learning_rate / 10 (Chinchilla)
# dispersion loss (dispersion.py; docs/condensation.md, section 3)
dispersion_weight = 0.0  # total loss = cross-entropy + weight * dispersion; 0 turns it off entirely
dispersion_variant = "angular"  # angular, cosine, l2_repel, orthogonal, decorrelation, entropy
dispersion_layers = "all"  # all, last, early_half, late_half, or hidden-state indices like "1,3,5"
dispersion_tau = 1.0  # temperature of the exp-based variants
dispersion_clamp = 0.1  # delta of the straight-through clamp on the cosine, in [0, 1)
dispersion_margin = 0.5  # hinge margin of 'orthogonal', as a fraction of pi
dispersion_norm_weight = 0.1  # weight of the mean(z^2) term of 'l2_repel'
dispersion_tokens = 256  # tokens sampled per sequence for the loss; 0 keeps all of them (exact)
dispersion_path = ""  # "stacked" (layers as one batch) or "per_layer"; empty: per_layer on CPUs, else stacked
# the paper's baselines (docs/condensation.md, section 4)
embed_noise_alpha = 0.0  # NEFTune: uniform noise alpha / sqrt(T * C) on token embeddings, training only
forget_every = 0  # active forgetting: re-initialise the token embedding every this many steps; 0 = off
# knowledge distillation from a frozen teacher (condense/distill.py; docs/condensation.md, section 7)
distill_from = ""  # the teacher: an out_dir or a Hugging Face causal LM (NAME[@REVISION], folder); "": none
distill_weight = 0.5  # alpha: loss = (1 - alpha) * cross-entropy + alpha * T^2 * KL(teacher || student)
distill_temperature = 2.0  # T: both distributions in the KL are softmax(logits / T)
distill_hidden_weight = 0.0  # + this * mean (student cos - teacher cos)^2 between tokens at the last layer
# condensation tracking at each evaluation (measure.py)
track_sequences = 16  # fixed validation windows measured at each evaluation; 0 turns tracking off
# optional live logging to Weights & Biases (pip install wandb); metrics.jsonl is written either way
wandb_log = False  # send every record of metrics.jsonl to wandb as well
wandb_project = "condense"  # the Weights & Biases project the run is logged to
wandb_run_name = ""  # empty means the out_dir's folder name
# system
device = ""  # cpu, cuda, cuda:3, mps; empty picks cuda, then mps, then cpu
dtype = ""  # float32, bfloat16 or float16; empty picks bfloat16 where supported, else float32
compile = None  # torch.compile the model; None means on for CUDA only
backend = ""  # DDP backend; empty picks nccl on CUDA, gloo otherwise


# -----------------------------------------------------------------------------
# The range of each setting. configurator.py has checked its type against the default already; a value of the
# right type can still be meaningless (a negative learning rate, dropout 1.5, a variant that does not exist),
# and torch would then fail deep inside, or worse, train something else than meant. A setting without a rule
# here (free text such as a path, or a bool) takes any value of its type. Each rule: (test, what it must be:
# text, or a function returning it).
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def dispersion_variants():
    """The names in dispersion.VARIANTS, read there so that a loss added to the table is accepted here too
    (imported only when a setting is checked, so that reading the settings does not need torch)."""
    from dispersion import VARIANTS
    return tuple(VARIANTS)


RULES = {
    "out_dir": (lambda v: v != "", "a folder, not empty"),
    "eval_interval": (lambda v: v >= 1, "at least 1"),
    "log_interval": (lambda v: v >= 1, "at least 1"),
    "eval_iters": (lambda v: v >= 1, "at least 1"),
    "init_from": (lambda v: v in ("scratch", "resume", *GPT2_NAMES),
                  f"scratch, resume or one of {', '.join(GPT2_NAMES)}"),
    "seed": (lambda v: 0 <= v < 2**32, "a whole number in [0, 2**32)"),
    "dataset": (lambda v: v != "" and "/" not in v, "the name of a folder under data/"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "block_size": (lambda v: v >= 1, "at least 1"),
    "n_layer": (lambda v: v >= 1, "at least 1"),
    "n_head": (lambda v: v >= 1, "at least 1"),
    "n_embd": (lambda v: v >= 1, "at least 1"),
    "mlp_dim": (lambda v: v >= 0, "0 (meaning 4 * n_embd) or more"),
    "dropout": (lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    "learning_rate": (lambda v: 0 < v < math.inf, "a number above 0"),
    "max_iters": (lambda v: v >= 1, "at least 1"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "0 (off) or more"),
    "beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "grad_clip": (lambda v: 0 <= v < math.inf, "0 (off) or more"),
    "warmup_iters": (lambda v: v >= 0, "0 (no warm-up) or more"),
    "lr_decay_iters": (lambda v: v >= 0, "0 (meaning max_iters) or more"),
    "min_lr": (lambda v: 0 <= v < math.inf, "0 or more, and at most learning_rate"),
    "dispersion_weight": (lambda v: 0 <= v < math.inf, "0 (off) or more"),
    "dispersion_variant": (lambda v: v in dispersion_variants(),
                           lambda: f"one of {', '.join(dispersion_variants())}"),
    "dispersion_path": (lambda v: v in ("", "stacked", "per_layer"), "'' (automatic), stacked or per_layer"),
    "dispersion_tau": (lambda v: 0 < v < math.inf, "a number above 0"),
    "dispersion_clamp": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dispersion_margin": (lambda v: 0 <= v < math.inf, "0 or more"),
    "dispersion_norm_weight": (lambda v: 0 <= v < math.inf, "0 or more"),
    "dispersion_tokens": (lambda v: v == 0 or v >= 2, "0 (all tokens) or at least 2"),
    "embed_noise_alpha": (lambda v: 0 <= v < math.inf, "0 (off) or more"),
    "forget_every": (lambda v: v >= 0, "0 (off) or a number of steps"),
    "distill_weight": (lambda v: 0 <= v <= 1, "alpha in [0, 1]"),
    "distill_temperature": (lambda v: 0 < v < math.inf, "a temperature above 0"),
    "distill_hidden_weight": (lambda v: 0 <= v < math.inf, "0 (off) or more"),
    "track_sequences": (lambda v: v >= 0, "0 (off) or more"),
    "device": (lambda v: v in ("", "cpu", "cuda", "mps") or (v[:5] == "cuda:" and v[5:].isdigit()),
               "'' (automatic), cpu, cuda, cuda:N or mps"),
    "dtype": (lambda v: v in ("", "float32", "bfloat16", "float16"),
              "'' (automatic), float32, bfloat16 or float16"),
    "compile": (lambda v: v is None or isinstance(v, bool), "True, False or None (on for CUDA only)"),
    "backend": (lambda v: v in ("", "nccl", "gloo", "mpi", "ucc"), "'' (automatic), nccl, gloo, mpi or ucc"),
    "wandb_project": (lambda v: v != "", "a Weights & Biases project name, not empty"),
}


# what --help shows for these settings (configurator.help_text): where they are declared, and their ranges
HELP = ("train.py's settings", "settings.py", RULES, None)


def defaults():
    """The settings above, as a dict of name -> default value."""
    return {k: v for k, v in globals().items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None)))}


def check_ranges(config, rules):
    """Raise ConfigError for the first setting in config whose value breaks its rule in rules."""
    for key, value in config.items():
        if key in rules and not rules[key][0](value):
            what = rules[key][1]() if callable(rules[key][1]) else rules[key][1]  # a list read when needed
            raise ConfigError(f"{key}={value!r} is not allowed: it must be {what}; change it in the "
                              f"config file or with --{key}=...")


def check_config(config):
    """Check train.py's settings (a dict, as configure returns it) before anything runs: each against its
    rule, then the rules that tie settings together. Raises ConfigError with one sentence naming the fix."""
    check_ranges(config, RULES)
    c = config
    if c["n_embd"] % c["n_head"]:
        raise ConfigError(f"n_embd={c['n_embd']} must be a multiple of n_head={c['n_head']} (each head gets "
                          "n_embd / n_head channels); change one of them.")
    if c["min_lr"] > c["learning_rate"]:
        raise ConfigError(f"min_lr={c['min_lr']} is above learning_rate={c['learning_rate']}, but the "
                          "schedule decays from learning_rate down to min_lr; set min_lr lower (about "
                          "learning_rate / 10).")
    if c["track_sequences"] and c["block_size"] < 2:
        raise ConfigError("condensation tracking compares the tokens of a window, so it needs block_size >= "
                          "2; raise block_size or set track_sequences=0.")
    if c["distill_hidden_weight"] > 0 and not c["distill_from"]:
        raise ConfigError(f"distill_hidden_weight={c['distill_hidden_weight']} compares the student's hidden "
                          "states with a teacher's, but distill_from names none; set distill_from or set "
                          "distill_hidden_weight=0.")
    if c["distill_from"] and os.path.abspath(c["distill_from"]) == os.path.abspath(c["out_dir"]):
        raise ConfigError(f"distill_from={c['distill_from']!r} is this run's own out_dir, but a student "
                          "cannot be its own teacher; train the teacher into another folder.")
    # GPT-2's own depth replaces n_layer: train.py checks the layers then
    if c["init_from"] not in GPT2_NAMES:
        from dispersion import select_layers  # here, so that reading the settings does not need torch
        try:
            select_layers(c["dispersion_layers"], c["n_layer"])
        except ValueError as e:
            raise ConfigError(f"dispersion_layers={c['dispersion_layers']!r}: {e}.") from None
