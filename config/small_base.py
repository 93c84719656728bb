# A GPT-2-BPE model on Shakespeare's complete works, sized for one GPU: the baseline of the paper's
# condensation study at small scale (6 layers, 384 wide, 30M parameters of which 19M are the tied embedding).
# Cost: on a GPU, not measured yet (python -m scripts.gpu_suite measures it). It still runs on a CPU, slowly:
# on 2 cores of an Intel Xeon (torch 2.13.0) the first step of small_disp took 19 s, and train.py estimated
# about 14 hours for the run (README, Quick start).
# config/small_disp.py is the same run with the dispersion loss.
out_dir = "out/small_base"
dataset = "shakespeare"
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
batch_size = 32
gradient_accumulation_steps = 1
max_iters = 2000
eval_interval = 200
eval_iters = 20
log_interval = 20
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 100
dropout = 0.2  # 1.4M training tokens: a 30M-parameter model needs regularising
