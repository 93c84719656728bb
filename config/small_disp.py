# The canonical run: small_base plus the paper's dispersion loss (angular, all layers, weight 0.1, tau 1,
# 256 tokens per sequence). Compare with out/small_base: val loss, and condensation with measure.py.
# Cost: as small_base (a GPU job); what the loss adds per step is in docs/performance.md.
exec(open("config/small_base.py").read())
out_dir = "out/small_disp"
dispersion_weight = 0.1
dispersion_variant = "angular"
dispersion_layers = "all"
