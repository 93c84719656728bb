# Study 4, GPU scale: the method against the paper's baselines at the same budget (2,000 steps), 3 seeds:
# config/small_base.py, small_disp.py (angular, weight 0.1, all layers), small_noise.py (NEFTune,
# alpha 1) and small_forget.py (token embedding re-initialised every 500 steps: 3 times).
# Read: val loss mean and spread over seeds, late-layer mean cosine, Spearman.
#     python -m scripts.study studies/gpu_method.py --device=cuda     # 12 runs, a few minutes each on one GPU
exec(open("studies/scale_gpu.py").read())
runs = {
    "plain": {},
    "dispersion": {"dispersion_weight": 0.1, "dispersion_variant": "angular", "dispersion_layers": "all"},
    "noise": {"embed_noise_alpha": 1.0},
    "forget": {"forget_every": 500},
}
seeds = [1, 2, 3]
