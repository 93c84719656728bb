# Study 3, GPU scale: depth and width scaled together (head size 64), the same steps and tokens for each.
# The paper: the larger the model, the less it condenses, in every family tried.
#     python -m scripts.study studies/gpu_size.py --device=cuda       # 4 runs, a few minutes each on one GPU
exec(open("studies/scale_gpu.py").read())
runs = {
    "2x128": {"n_layer": 2, "n_head": 2, "n_embd": 128},
    "4x256": {"n_layer": 4, "n_head": 4, "n_embd": 256},
    "6x384": {"n_layer": 6, "n_head": 6, "n_embd": 384},
    "8x512": {"n_layer": 8, "n_head": 8, "n_embd": 512},
}
