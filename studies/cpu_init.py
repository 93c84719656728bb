# Study 1, CPU scale: condensation at initialisation and during training (the paper: Spearman 1.0 at init,
# falling with training). Measured at init (measure_init), at every evaluation (every 25 steps, 8 val windows)
# and at the end (100 windows); with and without the dispersion loss. results/cpu_init/condensation.png:
# Spearman against iteration; each run's history.png: mean cosine of every layer against iteration.
#     python -m scripts.study studies/cpu_init.py          # 2 runs, about 2-3 minutes on 2 CPU cores
exec(open("studies/scale_cpu.py").read())
shared = {**shared, "eval_interval": 25}
runs = {
    "plain": {},
    "dispersion": {"dispersion_weight": 0.1},  # angular, all layers
}
measure_init = True
history = True  # each run folder: history.png, condensation per layer over training
