# Baseline 2 of the paper: active forgetting on small_base. Every forget_every steps the token embedding is
# re-initialised and its AdamW moments dropped. Our embedding is tied to the output head, so the head is
# reset with it (train.py, forget_embedding). The paper used K = 1000 on long runs; 500 here keeps three
# resets within the 2000 steps. Cost: as small_base.
exec(open("config/small_base.py").read())
out_dir = "out/small_forget"
forget_every = 500
