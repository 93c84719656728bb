# Study 3, CPU scale: depth and width scaled together, the same steps and tokens for each (head size 16).
# The paper: the larger the model, the less it condenses, in every family tried. 6 x 96 is the largest that
# keeps the study within a few CPU minutes (measured per step, one thread: 23 / 85 / 258 ms).
#     python -m scripts.study studies/cpu_size.py          # 3 runs, about 3-4 minutes on 2 CPU cores
exec(open("studies/scale_cpu.py").read())
runs = {
    "2x32": {"n_layer": 2, "n_head": 2, "n_embd": 32},
    "4x64": {"n_layer": 4, "n_head": 4, "n_embd": 64},
    "6x96": {"n_layer": 6, "n_head": 6, "n_embd": 96},
}
