# Study 6, CPU scale: does distillation from a less condensed teacher cure condensation? (The paper measured
# only released pairs, base against DeepSeek-R1-distilled, and found the distilled ones no less condensed;
# studies/distill_survey.py measures those.) Here everything but the teacher's part of the loss is held fixed:
# the 4 x 64 students of studies/scale_cpu.py, same data, steps and seeds, and five arms:
#     ce           cross-entropy only: the student trained alone
#     kd           logit distillation, alpha 0.5, T 2: (1 - alpha) ce + alpha T^2 KL(teacher || student)
#     kd_disp      the same + the dispersion loss (angular, 0.1, all layers)
#     disp         the dispersion loss alone (angular, 0.1, all layers)
#     kd_geometry  kd + 10 x the geometry term: mean (student cos - teacher cos)^2 between the tokens of a
#                  window at the last hidden state. The weight 10 was chosen on a pilot seed (99, not one of
#                  these) from 1 and 10: at 10 the student's last-layer mean cosine came out at the
#                  teacher's (0.189), at 1 it stayed above (0.212).
# The teacher (config/tiny_teacher.py: 6 x 128, 1,000 steps, its own seed, initialised independently of every
# student) is trained first, once, and measured: it must condense less than the `ce` arm, or the experiment
# says nothing (docs/results.md, study 6, checks it).
#     OMP_NUM_THREADS=1 python train.py config/tiny_teacher.py       # out/tiny_teacher: 304 s measured
#     python measure.py --out_dir=out/tiny_teacher                   # out/tiny_teacher/condensation.json
#     OMP_NUM_THREADS=1 python -m scripts.study studies/cpu_distill.py   # 15 runs: 651 s on 2 cores
exec(open("studies/scale_cpu.py").read())
_teacher = "out/tiny_teacher"
exec(open("studies/distill_arms.py").read())
