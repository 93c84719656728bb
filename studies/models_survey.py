# The paper's trend across pretrained families: condensation against model size, one line per family
# (docs/condensation.md, section 2: larger models condense less, in every family tried). A survey, not a
# study: nothing is trained, every model is measured as `measure.py --hf=NAME` does (100 windows of 512 of
# its own tokens of the validation text of --dataset) and the figure is out/models_survey/survey.png.
#
# Online only: each model is downloaded from the Hugging Face hub on first use (about 40 GB for all of them
# in their stored precision; transformers keeps them in ~/.cache/huggingface). A model that cannot be had is
# reported and the others go on; a rerun measures only what is missing.
#
#     python measure.py --survey=studies/models_survey.py --dtype=bfloat16       # on one GPU
#     python measure.py --survey=studies/models_survey.py --num_sequences=20     # a CPU: fewer windows
#
# Time per model, 100 windows of 512 tokens, the statistics included (survey.md lists the measured time of
# each model once it has run):
# - CPU, float32, 2 cores: measured on a GPT-2-small-shaped model (scripts/bench_measure.py, 16 windows: 12.8
# s, of   which the forward passes 10.0 s), so 100 windows take about 80 s: 63 s of forward passes, which grow
# with   the parameters outside the embedding (85M here), and 17 s of statistics, which grow with the number
# of   layers (1.3 s per hidden state). ESTIMATES scaled that way: GPT-2 medium 4 min, Pythia-1.4B 16 min,
#   GPT-2 xl 19 min, Qwen3-4B 45 min (16 GB in float32); the 7B needs a GPU, or --dtype=bfloat16 and 16 GB.
# - GPU: not measured yet. By FLOPs the forward passes of a 1B model are about 0.1 PFLOP, a fraction of a
#   second in bf16; the per-layer eigendecompositions of 512 x 512 matrices (effective rank) gain less from a
#   GPU and probably dominate. Downloads come on top.
families = {
    "GPT-2": ["openai-community/gpt2", "openai-community/gpt2-medium", "openai-community/gpt2-large",
              "openai-community/gpt2-xl"],
    "Pythia": ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m",
               "EleutherAI/pythia-1b", "EleutherAI/pythia-1.4b"],
    "SmolLM2": ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M", "HuggingFaceTB/SmolLM2-1.7B"],
    "Qwen3": ["Qwen/Qwen3-0.6B-Base", "Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-4B-Base"],
    "OLMo 2": ["allenai/OLMo-2-0425-1B", "allenai/OLMo-2-1124-7B"],
}
