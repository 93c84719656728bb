# A character-level GPT on Shakespeare's complete works (0.8M parameters), small enough to train on 2 CPU
# cores in under 4 minutes. The CPU baseline for the condensation experiments; config/tiny_disp.py is its twin
# with dispersion. Measured on 2 cores of an AMD EPYC, torch 2.13.0: val loss 1.703 after 1,800 steps, 224 s
# (python train.py config/tiny_base.py). For scale, the best bigram model (next-character counts on
# train.bin, evaluated on val.bin) reaches 2.541, and unigram frequencies 3.329.
out_dir = "out/tiny_base"
dataset = "shakespeare_char"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64  # short windows: attention cost on a CPU grows with T
batch_size = 32
max_iters = 1800
eval_interval = 250
eval_iters = 20
log_interval = 50
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
dropout = 0.0
