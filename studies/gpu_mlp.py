# Study 2, GPU scale: only the MLP width changes, n_embd / 4 .. 4 * n_embd (n_embd = 384), everything else
# as config/small_base.py. The paper (GPT-2-small shape, MLP 64 / 256 / 1024 / 4096): Spearman
# 0.95 / 0.90 / 0.68 / 0.42.
#     python -m scripts.study studies/gpu_mlp.py --device=cuda        # 5 runs, a few minutes each on one GPU
exec(open("studies/scale_gpu.py").read())
runs = {f"mlp{width}": {"mlp_dim": width} for width in (96, 192, 384, 768, 1536)}
