"""
A survey: measure pretrained model families at several sizes and draw the paper's trend figure, Spearman and
late-layer mean cosine against parameter count, one line per family. It only measures (scripts/study.py
trains).

    python measure.py --survey=studies/models_survey.py                     # out/models_survey/
    python measure.py --survey=studies/models_survey.py --dtype=bfloat16 --num_sequences=20

A survey file is plain Python that sets `families`, a dict: family name -> list of models, each a Hugging Face
name, NAME@REVISION, or a local folder, smallest first. Every model is measured as `measure.py --hf=NAME` with
the same settings (the validation text of --dataset, 100 windows of 512 of its own tokens by default) and
saved at once, so a survey that stops can be run again and goes on where it stopped. A model that cannot be
measured (not downloaded, gated, ...) is reported and left out of the figure; the others go on.
"""

import json
import os
import re
import time
from dataclasses import asdict

from condensation import Result
from condense.hf_models import short_name
from condense.plots import plot_trend
from configurator import configure


def read_survey(path):
    """{family: [model, ...]} from a survey file, or one sentence saying what is wrong with it."""
    if not os.path.isfile(path):
        raise ValueError(f"survey file {path} does not exist; give one such as studies/models_survey.py.")
    families = configure(dict(families=None), [path])["families"]
    if not isinstance(families, dict) or not families or not all(
            isinstance(models, list) and models and all(isinstance(m, str) for m in models)
            for models in families.values()):
        raise ValueError(f"{path} must set families: a dict of family name -> list of model names.")
    return families


def late_cos(result):
    """Mean of mean_cos over the late half of the hidden-state entries (n_layer//2+1 .. n_layer), as
    scripts/study.py."""
    L = len(result.mean_cos) - 1
    return result.last_n_mean[L - L // 2 - 1]  # the mean of the last L - L // 2 entries


def run_survey(s, measure_entry):
    """Measure every model of the survey file s.survey that is not measured yet; write out_dir/<survey>/
    survey.{json,md,png}. measure_entry(entry, s) -> (Result, parameter count) is measure.py's."""
    families = read_survey(s.survey)
    folder = os.path.join(s.out_dir, os.path.splitext(os.path.basename(s.survey))[0])
    os.makedirs(folder, exist_ok=True)
    rows, failed = [], []
    for family, models in families.items():
        for model in models:
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
            rows.append({**row, "family": family, "result": Result(**row["result"])})
    with open(os.path.join(folder, "survey.json"), "w") as f:
        json.dump([{**r, "result": asdict(r["result"])} for r in rows], f, indent=1)
    table = ["| family | model | parameters | layers | Spearman | Kendall | late-layer mean cos | time s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        res = r["result"]
        table.append(f"| {r['family']} | {short_name(r['model'])} | {r['params'] / 1e6:,.0f}M | "
                     f"{len(res.mean_cos) - 1} | {res.spearman:+.2f} | {res.kendall:+.2f} | "
                     f"{late_cos(res):.3f} | {r['seconds']:.0f} ({r['device']}, {r['dtype']}) |")
    with open(os.path.join(folder, "survey.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))
    if rows:
        plot_trend(rows, late_cos, os.path.join(folder, "survey.png"))
    print(f"wrote {folder}/survey.json, survey.md" + (" and survey.png" if rows else ""))
    if failed:
        raise ValueError(f"{len(failed)} of {len(rows) + len(failed)} models could not be measured "
                         f"({', '.join(failed)}); the reasons are above, and a rerun measures only those.")
