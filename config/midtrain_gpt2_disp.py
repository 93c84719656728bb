# The paper's main experiment, arm 2 of 2: config/midtrain_gpt2_base.py (GPT-2 124M mid-trained from OpenAI's
# weights on 200M tokens of WikiText-103; commands, cost and choices there) plus the dispersion loss as the
# paper's main setting: angular, on all 12 layers, weight 0.1, tau 1, 256 tokens per sequence.
#     python train.py config/midtrain_gpt2_disp.py
#     python -m scripts.evaluate --out_dir=out/midtrain_gpt2_disp --tasks=paper
# Cost: as the base arm, plus the loss: its matrices add ~0.4% to the FLOPs per token (12 layers x 16
# sequences x 256^2 pairs x 768 wide, forward and backward); its elementwise passes a few percent more on top
# (estimated).
exec(open("config/midtrain_gpt2_base.py").read())
out_dir = "out/midtrain_gpt2_disp"
dispersion_weight = 0.1
dispersion_variant = "angular"
dispersion_layers = "all"
dispersion_tau = 1.0
dispersion_tokens = 256
