# The paper's main experiment: GPT-2 124M mid-trained from OpenAI's weights on 200M tokens of WikiText-103,
# without and with the dispersion loss (angular, all layers, weight 0.1), 3 seeds each; every final checkpoint
# is measured (condensation, 100 windows of 512 tokens) and scored on the paper's benchmarks with
# lm-evaluation-harness (scripts/evaluate.py --tasks=paper). The recipe, its choices and its cost per run are
# in config/midtrain_gpt2_base.py. The seed changes the batches and the dropout, not the starting weights.
#     pip install datasets "lm-eval[hf]==0.4.13"
#     python data/wikitext/prepare.py
#     python -m scripts.study studies/midtrain_gpt2.py        # one GPU: 6 runs of ~8 minutes each (estimated)
#     python -m scripts.study studies/midtrain_gpt2.py --nproc=8   # each run on 8 GPUs
# Writes results/midtrain_gpt2/results.md: validation loss and condensation, then one column per benchmark,
# mean ± std [min, max] over the seeds.
base = "config/midtrain_gpt2_base.py"
runs = {
    "base": {},
    "dispersion": {"dispersion_weight": 0.1, "dispersion_variant": "angular", "dispersion_layers": "all"},
}
seeds = [1, 2, 3]
measure = dict(num_sequences=100, seq_len=512)  # the paper's measurement: 100 texts of 512 tokens
evaluate = dict(tasks="paper")  # scripts/evaluate.py settings for each run's final checkpoint
