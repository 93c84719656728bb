# The CPU scale of the cpu_* studies (each of them starts with this file): config/tiny_base.py shrunk so that
# one run (4 layers x 64 wide, block 64, 400 steps of 2,048 characters, val loss about 2.41) takes under a
# minute on a CPU: measured 49 s (41 s of CPU time, one thread, on a busy 2-core machine), plus about 4 s
# for measure.py. The five cpu_* studies are 32 runs: about 30 minutes in all. Not a study itself.
base = "config/tiny_base.py"
shared = dict(
    n_embd=64,
    block_size=64,
    max_iters=400,
    warmup_iters=30,
    eval_interval=50,
    eval_iters=10,
    log_interval=50,
    track_sequences=8,  # condensation of 8 fixed val windows at every evaluation (metrics.jsonl)
)
seeds = [1337]
