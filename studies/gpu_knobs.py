# Study 5, GPU scale: the full grid of the dispersion loss's knobs, 1 seed: every variant x weight
# 0.01 / 0.1 / 1 x all layers / late half, plus plain as the reference (37 runs; compare differences with
# the seed spread of studies/gpu_method.py).
#     python -m scripts.study studies/gpu_knobs.py --device=cuda      # 37 runs, about 2 hours on one GPU
exec(open("studies/scale_gpu.py").read())
runs = {"plain": {}}
runs |= {f"{variant}-w{weight:g}-{layers}": {"dispersion_weight": weight, "dispersion_variant": variant,
                                             "dispersion_layers": layers}
         for variant in ("angular", "cosine", "l2_repel", "orthogonal", "decorrelation", "entropy")
         for weight in (0.01, 0.1, 1.0)
         for layers in ("all", "late_half")}
