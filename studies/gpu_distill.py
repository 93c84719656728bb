# Study 6, GPU scale (the CPU scale, its reasons and its arms: studies/cpu_distill.py): students of
# config/small_base.py (6 x 384, GPT-2 BPE Shakespeare, 2,000 steps of 8,192 tokens) trained alone, with
# logit distillation from a GPT-2 124M teacher, with distillation and dispersion, with dispersion alone, and
# with distillation and the geometry term; 3 seeds each. NOT RUN YET: no GPU figure of it exists.
#     python train.py config/small_teacher.py                 # out/small_teacher: GPT-2 124M, fine-tuned
#     python measure.py --out_dir=out/small_teacher --num_sequences=100
#     python -m scripts.study studies/gpu_distill.py --device=cuda
# The teacher must condense less than the `ce` arm (compare its condensation.json with the study's table),
# or the experiment says nothing. Cost, estimated from FLOPs, not measured (docs/performance.md): the
# teacher's forward pass is 1.4x a student's training step in FLOPs, so a run with a teacher takes about
# 2.5-3.5x a run without (a few minutes without on one H100/H200); the study, about an hour of one GPU. The
# geometry weight is the CPU study's (10): check that the geometry term falls at this scale too.
exec(open("studies/scale_gpu.py").read())
_teacher = "out/small_teacher"
exec(open("studies/distill_arms.py").read())
