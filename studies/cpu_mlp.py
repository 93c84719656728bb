# Study 2, CPU scale: only the MLP width changes, n_embd / 4 .. 4 * n_embd (n_embd = 64), everything else
# fixed.
# The paper (GPT-2-small shape, MLP 64 / 256 / 1024 / 4096): Spearman 0.95 / 0.90 / 0.68 / 0.42, narrower
# MLP, more condensation.
#     python -m scripts.study studies/cpu_mlp.py           # 5 runs, about 4 minutes on 2 CPU cores
exec(open("studies/scale_cpu.py").read())
runs = {f"mlp{width}": {"mlp_dim": width} for width in (16, 32, 64, 128, 256)}
