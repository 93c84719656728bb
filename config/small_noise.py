# Baseline 1 of the paper: noisy embeddings (NEFTune) on small_base. Uniform noise of size
# alpha / sqrt(T * C) on the token embeddings during training only; the paper used alpha = 1 for GPT-2.
# Cost: as small_base.
exec(open("config/small_base.py").read())
out_dir = "out/small_noise"
embed_noise_alpha = 1.0
