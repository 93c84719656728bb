# Study 4, CPU scale: the method against the paper's baselines at the same budget (400 steps), 3 seeds:
# plain, dispersion (angular, weight 0.1, all layers), noisy embeddings (NEFTune, alpha 1) and active
# forgetting (the token embedding, tied to the output head, re-initialised at steps 150 and 300).
# Read: val loss mean and spread over seeds, late-layer mean cosine, Spearman.
#     python -m scripts.study studies/cpu_method.py        # 12 runs, about 11 minutes on 2 CPU cores
exec(open("studies/scale_cpu.py").read())
runs = {
    "plain": {},
    "dispersion": {"dispersion_weight": 0.1, "dispersion_variant": "angular", "dispersion_layers": "all"},
    "noise": {"embed_noise_alpha": 1.0},
    "forget": {"forget_every": 150},
}
seeds = [1, 2, 3]
