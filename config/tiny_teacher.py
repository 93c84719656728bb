# The teacher of studies/cpu_distill.py: larger than the study's 4 x 64 students (6 layers x 128, 1.2M
# parameters outside the embedding against their 0.2M) and trained longer (1,000 steps against 400), on the
# same data (shakespeare_char, windows of 64 characters). Its own seed, none of the students' (1, 2, 3): it
# is initialised independently of every student, never from a student's layers.
#     OMP_NUM_THREADS=1 python train.py config/tiny_teacher.py     # out/tiny_teacher/
#     python measure.py --out_dir=out/tiny_teacher                 # it must condense less than the students
exec(open("config/tiny_base.py").read())
out_dir = "out/tiny_teacher"
n_layer = 6
n_head = 8
n_embd = 128
max_iters = 1000
seed = 4242
track_sequences = 8
