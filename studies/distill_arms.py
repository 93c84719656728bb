# The five arms of study 6 (distillation), shared by studies/cpu_distill.py and studies/gpu_distill.py, which
# set _teacher to the out_dir of their teacher first; what each arm asks is in studies/cpu_distill.py. Not a
# study itself.
_distill = {"distill_from": _teacher, "distill_weight": 0.5, "distill_temperature": 2.0}
_dispersion = {"dispersion_weight": 0.1, "dispersion_variant": "angular", "dispersion_layers": "all"}
runs = {
    "ce": {},
    "kd": _distill,
    "kd_disp": {**_distill, **_dispersion},
    "disp": _dispersion,
    "kd_geometry": {**_distill, "distill_hidden_weight": 10.0},
}
seeds = [1, 2, 3]
