"""
The settings of a training run: every name train.py reads, with its default and its meaning, in one place.

A config file (plain Python in config/) assigns some of them and --key=value overrides follow, left to right
(configurator.py). measure.py, bench.py and study.py take the same settings, so one config file describes
the same model and data for all of them:

    from configurator import configure
    from settings import defaults
    config = configure(defaults(), sys.argv[1:])   # a dict: name -> value

The defaults train a small character-level model on Shakespeare.
"""

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
data_dir = ""  # the data set's folder if it is not data/<dataset>, e.g. one made elsewhere by data/prepare_text.py
gradient_accumulation_steps = 1  # global count of micro-batches per step, divided among processes
batch_size = 32  # sequences per micro-batch, per process
block_size = 256  # tokens per sequence
# model
n_layer = 6
n_head = 6
n_embd = 384
mlp_dim = 0  # MLP hidden width; 0 means 4 * n_embd (GPT-2)
dropout = 0.0  # 0 for pre-training, 0.1+ when fine-tuning small data
bias = False  # biases in Linear and LayerNorm layers
# AdamW optimizer and learning-rate schedule
learning_rate = 1e-3  # peak learning rate
max_iters = 5000  # total optimizer steps
weight_decay = 0.1  # on weight matrices only
beta1 = 0.9
beta2 = 0.95
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
# condensation tracking at each evaluation (measure.py)
track_sequences = 16  # fixed validation windows measured at each evaluation; 0 turns tracking off
# system
device = ""  # cpu, cuda, cuda:3, mps; empty picks cuda, then mps, then cpu
dtype = ""  # float32, bfloat16 or float16; empty picks bfloat16 where supported, else float32
compile = None  # torch.compile the model; None means on for CUDA only
backend = ""  # DDP backend; empty picks nccl on CUDA, gloo otherwise


def defaults():
    """The settings above, as a dict of name -> default value."""
    return {k: v for k, v in globals().items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None)))}
