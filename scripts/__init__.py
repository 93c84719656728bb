"""
Research commands, each run from the repository root as `python -m scripts.NAME`: the benchmarks (bench,
bench_loss, bench_measure), experiments over settings and seeds (study), the one-GPU suite (gpu_suite,
gpu_report), a checkpoint as a Hugging Face model (export) and its benchmark scores (evaluate). They build on
the root's files; nothing at the root imports them.
"""
