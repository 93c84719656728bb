"""
Run a study: a few settings x a few seeds of train.py, each final checkpoint measured with measure.py,
summarised in one table (mean and spread over seeds) and a few figures.

    python -m scripts.study studies/cpu_method.py                  # writes results/cpu_method/
    python -m scripts.study studies/gpu_method.py --device=cuda    # a train.py --key=value goes to every run
    python -m scripts.study studies/gpu_fineweb.py --nproc=8       # each run on 8 GPUs (torchrun)
    python -m scripts.study studies/cpu_method.py --results=/tmp/r # the study's folder under /tmp/r
                                                           # instead of results/

A study file is plain Python (paths relative to the repo root) that sets:

    base = "config/tiny_base.py"      # the config file (or list of files) every run starts from
    shared = {"max_iters": 400}       # settings for every run (optional)
    runs = {"plain": {}, "disp": {"dispersion_weight": 0.1}}   # run name -> its own settings
    seeds = [1, 2, 3]                 # each run is trained once per seed (default [1337])
    measure_init = False              # also measure each run's freshly initialised model
    measure = {}                      # measure.py settings for the final measurement,
                                      # e.g. {"num_sequences": 100}
    history = False                   # also draw each run's condensation over training (measure.py --history)
    evaluate = {"tasks": "paper"}     # also score each final checkpoint (scripts/evaluate.py, lm-eval)

Each (run, seed) trains into results/<study>/<run>-s<seed>/ (config.json, metrics.jsonl, ckpt.pt, and log.txt
with everything it printed); measure.py adds condensation.json/.png (and condensation_init.*, history.png).
done.json, written once train.py exited 0 and its last evaluation is at max_iters, marks a finished run:
a second call skips it, resumes a run that has a checkpoint but no done.json, and starts the others again.
With `evaluate`, scripts/evaluate.py exports each final checkpoint (hf/) and writes its scores to lm_eval.json
there. A failed run is reported and the others still run; the exit status is then 1.
Results: results/<study>/results.md (with a table of benchmark scores), results.json and condensation.png.
"""

import json
import math
import os
import shlex
import subprocess
import sys
import time

from configurator import ConfigError, configure, show_help, unknown_key, wants_help
from scripts.evaluate import expand_tasks, read_scores  # torch-free: the scoring runs in its own process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
STUDY_DEFAULTS = dict(  # what a study file sets (the docstring above shows one)
    base=None,  # the config file (or list of files) every run starts from
    shared={},  # settings for every run
    runs=None,  # run name -> its own settings (a dict)
    seeds=[1337],  # each run is trained once per seed
    measure_init=False,  # also measure each run's freshly initialised model
    measure={},  # measure.py settings for the final measurement, e.g. {"num_sequences": 100}
    history=False,  # also draw each run's condensation over training (measure.py --history)
    evaluate=None,  # scripts/evaluate.py settings, e.g. {"tasks": "paper"}: score each final checkpoint
)
COMMAND_SETTINGS = dict(  # the command line's own, after the study file; other --key=value go to train.py
    results="results",  # the study's folder goes under this one
    nproc="1",  # processes (GPUs) per run; above 1 each run starts with torchrun
)
COMMAND_RULES = {"nproc": (lambda v: v.isdigit() and int(v) >= 1, "a whole number, at least 1")}
HELP = [("a study file's settings", "scripts/study.py", {}, "STUDY_DEFAULTS"),
        ("the command line's own, after the study file; any other --key=value is a train.py setting for "
         "every run (python train.py --help)", "scripts/study.py", COMMAND_RULES, "COMMAND_SETTINGS")]
# "late-layer mean cos": the late half of the hidden states, as dispersion_layers="late_half" picks them
LATE = "mean of mean_cos over hidden-state entries n_layer//2+1 .. n_layer (the late half)"
METRICS = [("final_val_loss", "final val loss", ".4f"), ("best_val_loss", "best val loss", ".4f"),
           ("late_cos", "late-layer mean cos", ".3f"), ("spearman", "Spearman", "+.2f"),
           ("kendall", "Kendall", "+.2f"), ("init_spearman", "Spearman at init", "+.2f"),
           ("wall_s", "wall s", ".0f")]


def fail(message):
    sys.exit(f"error: {message}")


def load_study(path):
    """The study file's settings over STUDY_DEFAULTS; stops with one sentence on a mistake in it."""
    if not os.path.isfile(path):
        fail(f"study file {path} does not exist; give one such as studies/cpu_method.py.")
    try:
        # unknown names, wrong types, errors in the file: one sentence
        study = configure(STUDY_DEFAULTS, [path])
    except ConfigError as e:
        fail(e)
    if not study["base"] or not isinstance(study["runs"], dict) or not study["runs"]:
        fail(f"{path} must set base (a config file) and runs (a dict: run name -> dict of settings).")
    for name, settings in study["runs"].items():
        if not isinstance(settings, dict) or not name or os.path.basename(str(name)) != name:
            fail(f"run '{name}' in {path} needs a plain name (it names a folder) and a dict of settings.")
    if not study["seeds"] or not all(isinstance(seed, int) for seed in study["seeds"]):
        fail(f"seeds in {path} must be a list of whole numbers, like [1, 2, 3].")
    if study["evaluate"] is not None and not isinstance(study["evaluate"], dict):
        fail(f"evaluate in {path} must be a dict of scripts/evaluate.py settings, like {{'tasks': 'paper'}}.")
    study["base"] = [study["base"]] if isinstance(study["base"], str) else list(study["base"])
    return study


def check_runs(study, path, extra):
    """Check every run's settings (with each seed) as train.py and measure.py will read them, before the first
    run starts: a typo in the last run then stops the study at once, not after the others trained for
    hours."""
    from measure import MEASURE_SETTINGS
    from settings import check_config, defaults
    train_defaults = defaults()
    for name, settings in study["runs"].items():
        try:
            for key in {**study["shared"], **settings}:
                if key not in train_defaults:
                    raise unknown_key(key, train_defaults, f"the settings of run '{name}'")
            for seed in study["seeds"]:
                train_args, jobs = commands(study, name, seed, "out", extra)
                check_config(configure(train_defaults, train_args))
                for measure_args in jobs.values():
                    configure({**train_defaults, **MEASURE_SETTINGS}, measure_args)
        except ConfigError as e:
            fail(f"run '{name}' of {path} cannot start, so no run was started: {e}")


def setting_args(settings):
    """--key=value arguments as configurator.py reads them: text as is, anything else as a Python literal."""
    return [f"--{k}={v}" if isinstance(v, str) else f"--{k}={v!r}" for k, v in settings.items()]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def eval_records(run_dir):
    """The evaluation records of metrics.jsonl by iteration (a resumed run logs some again: the last one
    wins)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    records = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # an empty line, or the last one of a run that was killed
                    continue
                if "val_loss" in r:
                    records[r["iter"]] = r
    return [records[i] for i in sorted(records)]


def finished_training(run_dir):
    """True if run_dir has a checkpoint and its last evaluation is at max_iters (train.py evaluates there)."""
    evals = eval_records(run_dir)
    return (os.path.exists(os.path.join(run_dir, "ckpt.pt"))
            and os.path.exists(os.path.join(run_dir, "config.json")) and bool(evals)
            and evals[-1]["iter"] >= read_json(os.path.join(run_dir, "config.json"))["max_iters"])


def run_logged(cmd, log_path):
    """Run cmd from the repo root with its output appended to log_path; return its exit status."""
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log fills as the run goes: tail -f it
        return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def last_error(log_path):
    """The last line of the log that says 'error', else its last line: why a run failed, in one line."""
    lines = [l.strip() for l in open(log_path, errors="replace") if l.strip()]
    errors = [l for l in lines if "error" in l.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def commands(study, name, seed, run_dir, extra):
    """The arguments of train.py for one run, and of measure.py for each file measure.py writes there."""
    settings = [*study["base"], *setting_args({**study["shared"], **study["runs"][name]}), *extra]
    train_args = [*settings, f"--seed={seed}", f"--out_dir={run_dir}"]
    # measure.py takes train.py's settings too (a checkpoint brings its own model settings and data set),
    # and the seed picks its validation windows: the same for every run with this seed, at init and at the end
    measure_args = [*settings, *setting_args(study["measure"]), f"--seed={seed}", f"--out_dir={run_dir}"]
    jobs = {"condensation.json": measure_args}
    if study["measure_init"]:
        # the same seed: the run's initial weights
        jobs["condensation_init.json"] = [*measure_args, "--init=True"]
    if study["history"]:
        jobs["history.png"] = [f"--history={run_dir}"]
    return train_args, jobs


def train_and_measure(study, name, seed, run_dir, extra, launcher):
    """Train (or skip, or resume) one run and measure it; return (status, note), status 'trained',
    'skipped' or 'failed'. Every command and its output goes to run_dir/log.txt."""
    os.makedirs(run_dir, exist_ok=True)
    log = os.path.join(run_dir, "log.txt")
    args, jobs = commands(study, name, seed, run_dir, extra)
    done_path = os.path.join(run_dir, "done.json")
    status, note = "skipped", ""
    if os.path.exists(done_path) and os.path.exists(os.path.join(run_dir, "ckpt.pt")):
        if read_json(done_path)["args"] != args:
            note = ("finished earlier with other settings (see its log.txt); delete its folder to train it "
                    "again")
    else:
        resume = os.path.exists(os.path.join(run_dir, "ckpt.pt"))
        if not resume:  # a fresh start: no records of an earlier failed attempt
            for file in ("metrics.jsonl", "done.json", *jobs):
                if os.path.exists(os.path.join(run_dir, file)):
                    os.remove(os.path.join(run_dir, file))
        t0 = time.time()
        rc = run_logged([*launcher, "train.py", *args, *(["--init_from=resume"] if resume else [])], log)
        if rc != 0 or not finished_training(run_dir):
            return "failed", f"train.py: {last_error(log)}"
        with open(done_path, "w") as f:  # wall_s: of this call only, if it resumed an interrupted run
            json.dump({"args": args, "wall_s": time.time() - t0, "resumed": resume}, f, indent=1)
        status = "trained"
    for file, measure_args in jobs.items():
        if not os.path.exists(os.path.join(run_dir, file)):
            if run_logged([sys.executable, "measure.py", *measure_args], log) != 0:
                return "failed", f"measure.py: {last_error(log)}"
    return status, note


def score(study, run_dir):
    """Score run_dir's checkpoint with scripts/evaluate.py on the study's tasks, unless its lm_eval.json
    already holds them all for this checkpoint; return '' or why it failed."""
    settings = {"tasks": "paper", **study["evaluate"]}
    if len(read_scores(run_dir, expand_tasks(settings["tasks"]))) == len(expand_tasks(settings["tasks"])):
        return ""
    log = os.path.join(run_dir, "log.txt")
    evaluate = [sys.executable, "-m", "scripts.evaluate", *setting_args(settings), f"--out_dir={run_dir}"]
    if run_logged(evaluate, log) != 0:
        return f"scripts/evaluate.py: {last_error(log)}"
    return ""


def late_half(mean_cos):
    """Mean over hidden-state entries n_layer//2+1 .. n_layer, the layers dispersion_layers='late_half'
    picks."""
    late = mean_cos[(len(mean_cos) - 1) // 2 + 1:]
    return sum(late) / len(late)


def run_numbers(run_dir):
    """The numbers of one finished and measured run (see METRICS), its per-layer mean cosine and history."""
    evals = eval_records(run_dir)
    cond = read_json(os.path.join(run_dir, "condensation.json"))
    numbers = {"final_val_loss": evals[-1]["val_loss"], "best_val_loss": min(r["val_loss"] for r in evals),
               "late_cos": late_half(cond["mean_cos"]), "spearman": cond["spearman"],
               "kendall": cond["kendall"], "wall_s": read_json(os.path.join(run_dir, "done.json"))["wall_s"],
               "mean_cos": cond["mean_cos"],
               "history": [{k: r[k] for k in ("iter", "val_loss", "spearman",
                                              "mean_cos") if k in r} for r in evals]}
    init_path = os.path.join(run_dir, "condensation_init.json")
    if os.path.exists(init_path):
        init = read_json(init_path)
        numbers |= {"init_spearman": init["spearman"], "init_late_cos": late_half(init["mean_cos"]),
                    "init_mean_cos": init["mean_cos"]}
    return numbers


def spread(values):
    """Mean, sample standard deviation (None for one value), min and max."""
    n, mean = len(values), sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def summarize(study, results):
    """Per run: its settings, each seed's outcome and numbers, and the spread over the seeds that finished."""
    table = {}
    for name, settings in study["runs"].items():
        seeds = [r for r in results if r["run"] == name]
        ok = [r["numbers"] for r in seeds if r["numbers"]]
        keys = [k for k, _, _ in METRICS if ok and all(k in n for n in ok)]
        table[name] = {"settings": settings, "seeds": seeds,
                       "summary": {k: spread([n[k] for n in ok]) for k in keys}}
        # benchmark scores ('<task> <metric>'), over the seeds that have them all
        tasks = [k for k in (ok[0].get("scores", {}) if ok else {})
                 if all(k in n.get("scores", {}) for n in ok)]
        table[name]["scores"] = {k: spread([n["scores"][k] for n in ok]) for k in tasks}
    return table


def cell(s, fmt):
    if s is None:
        return "-"
    if s["n"] == 1:
        return format(s["mean"], fmt)
    return f"{s['mean']:{fmt}} ± {s['std']:.2g} [{s['min']:{fmt}}, {s['max']:{fmt}}]"


def markdown(study_name, study, table, notes, extra):
    shown = [(k, title, fmt) for k, title, fmt in METRICS if any(k in t["summary"] for t in table.values())]
    lines = [f"# {study_name}", "",
             f"Mean ± std [min, max] over seeds {study['seeds']}; late-layer mean cos = {LATE}. "
             "Spearman and Kendall: measure.py on the final checkpoint.", "",
             "| run | seeds ok | " + " | ".join(title for _, title, _ in shown) + " |",
             "|---" * (len(shown) + 2) + "|"]
    for name, t in table.items():
        ok = sum(1 for r in t["seeds"] if r["numbers"])
        lines.append(f"| {name} | {ok}/{len(t['seeds'])}" + ("" if ok == len(t["seeds"]) else " (FAILED)")
                     + " | " + " | ".join(cell(t["summary"].get(k), fmt) for k, _, fmt in shown) + " |")
    scored = list(dict.fromkeys(k for t in table.values() for k in t["scores"]))  # each column once, in order
    if scored:
        lines += ["",
                  f"Benchmarks (lm-evaluation-harness: scripts/evaluate.py with {study['evaluate']}) of the "
                  "checkpoint train.py kept, never one chosen on these scores:", "",
                  "| run | " + " | ".join(scored) + " |", "|---" * (len(scored) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(cell(t["scores"].get(k), ".4g") for k in scored) + " |"
                  for name, t in table.items()]
    lines += ["", "Settings (over " + " + ".join(study["base"]) + f", shared {study['shared']}"
              + (f", then {' '.join(extra)} for every run" if extra else "") + "):", ""]
    lines += [f"- {name}: {t['settings'] or 'base'}" for name, t in table.items()]
    if notes:
        lines += ["", "Notes and failures:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(study, table, out):
    """condensation.png: final mean cosine per layer (mean over seeds; dashed: at init), and Spearman and
    val loss over training (every seed), one colour per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    colours = plt.get_cmap("tab10")
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, (name, t) in enumerate(table.items()):
        runs = [r["numbers"] for r in t["seeds"] if r["numbers"]]
        if not runs:
            continue
        c = colours(i % 10)
        cos = np.mean([n["mean_cos"] for n in runs], axis=0)  # (n_layer + 1,) mean over seeds
        ax1.plot(np.arange(len(cos)) / (len(cos) - 1), cos, "o-", color=c, label=name)
        if "init_mean_cos" in runs[0]:
            init = np.mean([n["init_mean_cos"] for n in runs], axis=0)
            ax1.plot(np.arange(len(init)) / (len(init) - 1), init, "--", color=c, alpha=0.6)
        for j, n in enumerate(runs):  # every seed, so the spread shows
            it = [h["iter"] for h in n["history"]]
            ax2.plot(it, [h.get("spearman", np.nan) for h in n["history"]], color=c, lw=1,
                     label=None if j else name)
            ax3.plot(it, [h["val_loss"] for h in n["history"]], color=c, lw=1, label=None if j else name)
    ax1.set(xlabel="layer fraction l / n_layer", ylabel="mean cosine (final; dashed: init)",
            title="condensation")
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set(xlabel="iteration", ylabel="Spearman (mean cos vs depth)", ylim=(-1.05, 1.05),
            title="during training")
    ax3.set(xlabel="iteration", ylabel="val loss", title="validation loss")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "condensation.png"), dpi=110)
    plt.close(fig)


def main(argv):
    if wants_help(argv):
        show_help(__doc__, {**STUDY_DEFAULTS, **COMMAND_SETTINGS}, HELP)
    if not argv or argv[0].startswith("--"):
        fail("give a study file first: python -m scripts.study studies/cpu_method.py [--key=value ...].")
    own, extra = dict(COMMAND_SETTINGS), []
    for arg in argv[1:]:
        key, eq, value = arg[2:].partition("=")
        if not arg.startswith("--") or not eq:
            fail(f"'{arg}' is not a --key=value override; write it like --device=cuda.")
        if key in ("seed", "out_dir", "init_from"):
            fail(f"--{key} is set by the runner for each run; change the study file instead.")
        if key in own:
            own[key] = value
        else:
            extra.append(arg)
    name = os.path.splitext(os.path.basename(argv[0]))[0]
    out = os.path.abspath(os.path.join(own["results"], name))
    path = os.path.abspath(argv[0])
    os.chdir(ROOT)  # study files and config files name their paths from the repo root
    study = load_study(path)
    if not COMMAND_RULES["nproc"][0](own["nproc"]):
        fail(f"--nproc must be a number of processes (GPUs) per run, like --nproc=8, not '{own['nproc']}'.")
    nproc = int(own["nproc"])
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone",
                                    f"--nproc_per_node={nproc}"]
                                   if nproc > 1 else [])
    check_runs(study, argv[0], extra)
    jobs = [(run, seed) for run in study["runs"] for seed in study["seeds"]]
    print(f"{name}: {len(study['runs'])} runs x {len(study['seeds'])} seeds into {out}")
    results, notes, eval_failed = [], [], 0
    for k, (run, seed) in enumerate(jobs, 1):
        run_dir = os.path.join(out, f"{run}-s{seed}")
        print(f"[{k}/{len(jobs)}] {run}-s{seed}:", end=" ", flush=True)  # its output goes to its log.txt
        t0 = time.time()
        status, note = train_and_measure(study, run, seed, run_dir, extra, launcher)
        numbers = run_numbers(run_dir) if status != "failed" else None
        if numbers and study["evaluate"]:
            why = score(study, run_dir)
            numbers["scores"] = read_scores(run_dir, expand_tasks(study["evaluate"].get("tasks", "paper")))
            if why:
                eval_failed += 1
                notes.append(f"{run}-s{seed} scoring FAILED: {why} (log: {os.path.join(run_dir, 'log.txt')})")
        results.append({"run": run, "seed": seed, "dir": run_dir, "status": status, "note": note,
                        "numbers": numbers})
        if status == "failed":
            notes.append(f"{run}-s{seed} FAILED: {note} (log: {os.path.join(run_dir, 'log.txt')})")
        elif note:
            notes.append(f"{run}-s{seed}: {note}")
        said = (f"FAILED: {note} (log: {run_dir}/log.txt)" if status == "failed" else
                f"{status} ({time.time() - t0:.0f} s): val loss {numbers['final_val_loss']:.4f}, "
                f"Spearman {numbers['spearman']:+.2f}" + (f"; note: {note}" if note else ""))
        print(said, flush=True)
    table = summarize(study, results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"study": path, "extra": extra, "base": study["base"], "shared": study["shared"],
                   "late_cos": LATE, "runs": table}, f, indent=1)
    text = markdown(name, study, table, notes, extra)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    plot(study, table, out)
    print(f"\n{text}\nwrote {out}/results.md, results.json, condensation.png")
    failed = sum(r["status"] == "failed" for r in results)
    if failed or eval_failed:
        sys.exit(f"error: {failed} of {len(jobs)} runs failed"
                 + (f", {eval_failed} could not be scored" if eval_failed else "")
                 + "; see the notes above and their log.txt.")


if __name__ == "__main__":
    main(sys.argv[1:])
