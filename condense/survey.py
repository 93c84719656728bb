"""
A survey: measure pretrained model families at several sizes and draw the paper's trend figure, Spearman and
late-layer mean cosine against parameter count, one line per family; or measure pairs of models (a base model
and its distilled version) and draw each pair side by side. It only measures (scripts/study.py trains).

    python measure.py --survey=studies/models_survey.py                     # out/models_survey/
    python measure.py --survey=studies/models_survey.py --dtype=bfloat16 --num_sequences=20
    python measure.py --survey=studies/distill_survey.py --dtype=bfloat16   # pairs: out/distill_survey/

A survey file is plain Python that sets either `families`, a dict: family name -> list of models, smallest
first, or `pairs`, a dict: pair name -> [model, model] (with `roles`, the names of the two sides, by default
("base", "distilled")). Each model is a Hugging Face name, NAME@REVISION, or a local folder. Every model is
measured as `measure.py --hf=NAME` with the same settings (the validation text of --dataset, 100 windows of
512 of its own tokens by default) and saved at once, so a survey that stops can be run again and goes on where
it stopped. A model that cannot be measured (not downloaded, gated, ...) is reported and left out of the
figure; the others go on.
"""

import json
import os
import re
import time
from dataclasses import asdict

from condensation import Result
from condense.hf_models import short_name
from condense.plots import plot_pairs, plot_trend
from configurator import configure


def read_survey(path):
    """({family or pair: [model, ...]}, roles) from a survey file, roles None for families and the names of
    the two sides for pairs; or one sentence saying what is wrong with it."""
    if not os.path.isfile(path):
        raise ValueError(f"survey file {path} does not exist; give one such as studies/models_survey.py.")
    survey = configure(dict(families=None, pairs=None, roles=("base", "distilled")), [path])
    groups = survey["pairs"] if survey["families"] is None else survey["families"]
    one_of_two = (survey["families"] is None) != (survey["pairs"] is None)
    if not one_of_two or not isinstance(groups, dict) or not groups or not all(
            isinstance(models, list) and models and all(isinstance(m, str) for m in models)
            for models in groups.values()):
        raise ValueError(f"{path} must set families (a dict of family name -> list of model names) or pairs "
                         "(a dict of pair name -> [model, model]), one of the two.")
    if survey["pairs"] is None:
        return groups, None
    if not all(len(models) == 2 for models in groups.values()) or len(survey["roles"]) != 2:
        raise ValueError(f"{path}: each pair must hold two models, and roles must name the two sides.")
    return groups, tuple(survey["roles"])


def late_cos(result):
    """Mean of mean_cos over the late half of the hidden-state entries (n_layer//2+1 .. n_layer), as
    scripts/study.py."""
    L = len(result.mean_cos) - 1
    return result.last_n_mean[L - L // 2 - 1]  # the mean of the last L - L // 2 entries


def run_survey(s, measure_entry):
    """Measure every model of the survey file s.survey that is not measured yet; write out_dir/<survey>/
    survey.{json,md,png}. measure_entry(entry, s) -> (Result, parameter count) is measure.py's."""
    families, roles = read_survey(s.survey)
    folder = os.path.join(s.out_dir, os.path.splitext(os.path.basename(s.survey))[0])
    os.makedirs(folder, exist_ok=True)
    rows, failed = [], []
    for family, models in families.items():
        for side, model in enumerate(models):
            path = os.path.join(folder, re.sub(r"[^\w.@-]+", "_", model.strip("/")) + ".json")
            if not os.path.exists(path):
                start = time.time()
                try:
                    result, params = measure_entry("hf:" + model, s)
                except ValueError as e:  # one sentence from hf_models or measure; the other models go on
                    print(f"error: {model}: {e}")
                    failed.append(model)
                    continue
                row = dict(family=family, model=model, params=params, seconds=round(time.time() - start, 1),
                           device=s.device, dtype=s.dtype, result=asdict(result))
                with open(path, "w") as f:
                    json.dump(row, f)
            with open(path) as f:
                row = json.load(f)
            rows.append({**row, "family": family, "result": Result(**row["result"]),
                         **({"role": roles[side]} if roles else {})})
    with open(os.path.join(folder, "survey.json"), "w") as f:
        json.dump([{**r, "result": asdict(r["result"])} for r in rows], f, indent=1)
    table = [f"| {'pair' if roles else 'family'} | model | parameters | layers | Spearman | Kendall | "
             "late-layer mean cos | time s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        res = r["result"]
        model = short_name(r["model"]) + (f" ({r['role']})" if roles else "")
        table.append(f"| {r['family']} | {model} | {r['params'] / 1e6:,.0f}M | "
                     f"{len(res.mean_cos) - 1} | {res.spearman:+.2f} | {res.kendall:+.2f} | "
                     f"{late_cos(res):.3f} | {r['seconds']:.0f} ({r['device']}, {r['dtype']}) |")
    with open(os.path.join(folder, "survey.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))
    if rows:
        (plot_pairs if roles else plot_trend)(rows, late_cos, os.path.join(folder, "survey.png"))
    print(f"wrote {folder}/survey.json, survey.md" + (" and survey.png" if rows else ""))
    if failed:
        raise ValueError(f"{len(failed)} of {len(rows) + len(failed)} models could not be measured "
                         f"({', '.join(failed)}); the reasons are above, and a rerun measures only those.")
