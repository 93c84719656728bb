# The teacher of studies/gpu_distill.py: GPT-2 124M (12 layers x 768) from OpenAI's weights (init_from=gpt2,
# online once), fine-tuned briefly on the students' data (Shakespeare, GPT-2 BPE, windows of 256), so that its
# next-token distribution is one of this text. Its weights come from GPT-2's own pre-training, independent of
# every student; the paper measured GPT-2 124M at Spearman +0.38, the small students may or may not condense
# more: measure both (python measure.py --out_dir=out/small_teacher) before reading the study.
#
# Cost, estimated, not measured: 500 steps x 8,192 tokens x 8.55e8 FLOPs per token (model.flops_per_token at
# 1024; less at 256) = 3.5e15 FLOPs, under a minute of compute on one H100/H200 at an assumed 40% MFU, plus
# the download of GPT-2 and compilation. Memory: about 2 GB of weights, gradients and AdamW moments, and the
# logits of 8,192 positions x 50,257 (about 4 GB in bf16 and fp32 with their gradient).
exec(open("config/small_base.py").read())
out_dir = "out/small_teacher"
init_from = "gpt2"
max_iters = 500
learning_rate = 6e-5  # fine-tuning: a tenth of small_base's rate
min_lr = 6e-6
warmup_iters = 50
dropout = 0.1  # GPT-2's own
eval_interval = 100
seed = 4242  # none of the students' seeds
track_sequences = 16
