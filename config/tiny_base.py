# A character-level GPT on Shakespeare's complete works, small enough to train on 2 CPU cores in about
# 3 minutes. The CPU baseline for the condensation experiments; config/tiny_disp.py is its twin with dispersion.
# Measured: see the table in README.md (val loss, time, machine) and the bigram baseline below.
out_dir = "out/tiny_base"
dataset = "shakespeare_char"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
batch_size = 32
max_iters = 1500
eval_interval = 250
eval_iters = 20
log_interval = 50
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
dropout = 0.0
