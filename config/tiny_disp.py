# The CPU twin of config/small_disp.py: tiny_base plus the dispersion loss (angular, all layers, weight 0.1).
# Cost: as tiny_base (about 3 minutes on 2 CPU cores) plus the loss's share (README, Performance).
exec(open("config/tiny_base.py").read())
out_dir = "out/tiny_disp"
dispersion_weight = 0.1
dispersion_variant = "angular"
dispersion_layers = "all"
