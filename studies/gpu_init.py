# Study 1, GPU scale: condensation at initialisation and during training (the paper, OLMo checkpoints:
# Spearman 1.0 at init, below 0 by the end), with and without the dispersion loss. Measured at init
# (measure_init), at every evaluation (every 100 steps, 16 val windows) and at the end (100 windows).
#     python -m scripts.study studies/gpu_init.py --device=cuda       # 2 runs, a few minutes each on one GPU
exec(open("studies/scale_gpu.py").read())
shared = {**shared, "eval_interval": 100}
runs = {
    "plain": {},
    "dispersion": {"dispersion_weight": 0.1},  # angular, all layers
}
measure_init = True
history = True  # each run folder: history.png, condensation per layer over training
