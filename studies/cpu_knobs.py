# Study 5, CPU scale: the dispersion loss's knobs, 1 seed (differences below the seed spread of
# studies/cpu_method.py are noise). Every variant at weight 0.1 on all layers; angular also at weight 0.01
# and 1, and on the late half of the layers only; plain as the reference. The full grid (every variant x
# 3 weights x 2 layer sets) is studies/gpu_knobs.py.
#     python -m scripts.study studies/cpu_knobs.py         # 10 runs, about 10 minutes on 2 CPU cores
exec(open("studies/scale_cpu.py").read())
runs = {"plain": {}}
runs |= {variant: {"dispersion_weight": 0.1, "dispersion_variant": variant}
         for variant in ("angular", "cosine", "l2_repel", "orthogonal", "decorrelation", "entropy")}
runs["angular-w0.01"] = {"dispersion_weight": 0.01}
runs["angular-w1"] = {"dispersion_weight": 1.0}
runs["angular-late_half"] = {"dispersion_weight": 0.1, "dispersion_layers": "late_half"}
