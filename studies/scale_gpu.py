# The GPU scale of the gpu_* studies (each of them starts with this file): config/small_base.py as it is
# (GPT-2 BPE Shakespeare, 6 layers x 384, block 256, 2,000 steps of 8,192 tokens, dropout 0.2): a few
# minutes per run on one modern GPU. Not a study itself.
base = "config/small_base.py"
shared = dict(
    track_sequences=16,  # condensation of 16 fixed val windows at every evaluation (every 200 steps)
)
# the final measurement: 100 val windows of 256 tokens (the paper: 100 x 512)
measure = dict(num_sequences=100)
seeds = [1337]
