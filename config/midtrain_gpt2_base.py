# The paper's main experiment, arm 1 of 2: GPT-2 124M mid-trained from OpenAI's weights on 200M tokens of
# WikiText-103, without dispersion (config/midtrain_gpt2_disp.py is arm 2). The recipe (docs/condensation.md,
# section 5): context 1024, AdamW (0.9, 0.95), lr 5e-5, weight decay 0.1, cosine with 20% warm-up, grad clip
# 1.0, 131,072 tokens per step (16 sequences x 1024 tokens x 8 micro-batches), 1,526 steps = 200.0M tokens.
#
#     pip install datasets transformers==5.24.0        # once: GPT-2's weights and WikiText come from the Hub
#     python data/wikitext/prepare.py                 # data/wikitext/ (see its readme.md)
#     python train.py config/midtrain_gpt2_base.py                                   # one GPU
#     torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2_base.py  # 8 GPUs, the same steps
#     pip install "lm-eval[hf]==0.4.13"
#     python -m scripts.evaluate --out_dir=out/midtrain_gpt2_base --tasks=paper             # the benchmarks
# Both arms over 3 seeds, scored, in one table: python -m scripts.study studies/midtrain_gpt2.py
#
# Cost, estimated (no GPU run of this recipe exists yet): model.flops_per_token(1024) = 6N + 12LTC = 8.55e8
# training FLOPs per token (N = 123.7M without the position table), x 200.0M tokens = 1.71e17 FLOPs. At an
# ASSUMED 40% MFU (bf16 and torch.compile, train.py's defaults on CUDA; the MFU train.py logs tells the real
# figure) that is 7.2 minutes on one H100 or H200 (989 TFLOP/s dense bf16), 23 minutes on an A100 (312);
# at 30% MFU a third more. The 16 evaluations add about 2%. On 8 GPUs (torchrun) each does one micro-batch
# per step: about 1 minute of training, plus 1-2 minutes of start-up (GPT-2's weights, compilation).
# Memory, estimated per GPU at batch_size=16: 2 GB of weights, gradients and AdamW moments, ~6 GB of bf16
# activations (~40 bytes per channel per token per layer), and up to ~8 GB at the loss (16k positions x 50k
# logits in bf16 and float32, and their gradient): about 15-20 GB. (On a CPU in float32, where nothing is
# halved, each extra 1024-token sequence raised a step's peak memory by 1.6 GiB.) If it does not fit, halve
# batch_size and double gradient_accumulation_steps: the same 131,072 tokens per step.
#
# Choices the paper does not state:
# - min_lr = 5e-6, a tenth of the peak: the floor the paper gives for its own pre-training cosine ("to 0.1x");
#   it states none for mid-training. Only the last ~15% of steps run below 1e-5, and both arms share it.
# - dropout = 0.1: GPT-2's own setting, which a transformers GPT2LMHeadModel trains with unless told
#   otherwise; 200M tokens revisit WikiText-103's training text (103M words) nearly twice.
# - The checkpoint scored is the last one (always_save_checkpoint: step 1,526, the end of the schedule), a
#   fixed step for every run; never one picked on the benchmarks (scripts/evaluate.py says why).
out_dir = "out/midtrain_gpt2_base"
init_from = "gpt2"  # OpenAI's weights (GPT.from_pretrained): 12 layers, 768 wide, biases, vocabulary 50257
dataset = "wikitext"
block_size = 1024
batch_size = 16  # sequences per micro-batch and GPU
gradient_accumulation_steps = 8  # micro-batches per step, over all GPUs: 16 x 1024 x 8 = 131,072 tokens
max_iters = 1526  # 1,526 x 131,072 = 200,015,872 tokens
learning_rate = 5e-5
min_lr = 5e-6
warmup_iters = 305  # 20% of the steps
lr_decay_iters = 0  # the cosine ends at max_iters
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dropout = 0.1
eval_interval = 100
eval_iters = 20  # 20 batches of 16 windows per split: 328k tokens, more than WikiText-103's validation split
log_interval = 10
always_save_checkpoint = True
track_sequences = 16
