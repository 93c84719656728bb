# GPT-2 small (124M: 12 layers x 768, block 1024) pre-trained from scratch on 1B tokens of FineWeb-Edu,
# with and without the dispersion loss (angular, weight 0.1, all layers). 524,288 tokens per step
# (16 sequences x 1024 tokens x 32 micro-batches), 1,907 steps = 1B tokens, one pass; bf16 and
# torch.compile (train.py's defaults on CUDA). Needs internet once, for the data:
#     pip install datasets
#     python data/fineweb/prepare.py --tokens=1B              # data/fineweb/: 2 GB; minutes on 16 cores
#     python -m scripts.study studies/gpu_fineweb.py --nproc=8        # 8 GPUs: roughly 5-10 minutes per run
#     python -m scripts.study studies/gpu_fineweb.py            # one H100: roughly 30-60 minutes per run
base = "config/small_base.py"
shared = dict(
    dataset="fineweb",
    n_layer=12,
    n_head=12,
    n_embd=768,
    block_size=1024,
    batch_size=16,  # per micro-batch and GPU: lower it (and raise the next) if memory runs out
    gradient_accumulation_steps=32,  # global micro-batches per step, divided among the GPUs
    max_iters=1907,
    warmup_iters=150,
    learning_rate=6e-4,
    min_lr=6e-5,
    dropout=0.0,  # one pass over the data: nothing to regularise
    eval_interval=250,
    eval_iters=20,
    log_interval=10,
    track_sequences=16,
)
runs = {
    "plain": {},
    "dispersion": {"dispersion_weight": 0.1, "dispersion_variant": "angular", "dispersion_layers": "all"},
}
seeds = [1337]
measure = dict(num_sequences=100, seq_len=512)  # the paper's measurement: 100 texts of 512 tokens
