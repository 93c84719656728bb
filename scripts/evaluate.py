"""
Score a trained run on downstream benchmarks with lm-evaluation-harness (EleutherAI's lm-eval).

    pip install "lm-eval[hf]==0.4.13"        # optional; the version this file is tested with
    python -m scripts.evaluate --out_dir=out/midtrain_gpt2_disp --tasks=paper
    python -m scripts.evaluate --out_dir=out/RUN --tasks=piqa,arc_easy --limit=100  # a quick look only
    python -m scripts.evaluate --out_dir=out/gpt2 --hf=gpt2 --tasks=paper           # GPT-2, where it starts

The run's checkpoint (out_dir/ckpt.pt) is exported first to out_dir/hf (scripts/export.py) when that folder is
missing or older than the checkpoint. The scores are merged into out_dir/lm_eval.json, one entry per task: the
headline metric (acc, or word_perplexity for wikitext), its standard error, and every number the harness
reported; scripts/study.py reads them into its table. A new checkpoint in out_dir starts the file afresh, so
scores of different checkpoints never mix.

tasks=paper is the paper's list: ANLI-r2, LAMBADA (OpenAI's version), OpenBookQA, PIQA, TruthfulQA-MC2,
Winogrande, ARC-Easy, ARC-Challenge, MedMCQA, MMLU, and wikitext perplexity, each with the harness's own
default number of examples in the prompt (0 for all of them; --num_fewshot changes it). The harness downloads
each data set from the Hugging Face Hub once and caches it (HF_HOME); offline, only cached ones work.

Which checkpoint is scored: the one in out_dir, which train.py chose by its own rule: the last evaluation
(always_save_checkpoint=True, a fixed step) or the lowest validation loss. Never pick a checkpoint, a seed or
a setting by these benchmarks and then report them: the maximum over noisy scores is biased upwards, so the
numbers would overstate the method (the paper picked each seed's best checkpoint on the reported tasks).
"""

import difflib
import json
import os
import sys

from configurator import ConfigError, configure
from settings import check_ranges

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
SCORES_FILE = "lm_eval.json"  # in out_dir
PAPER_TASKS = ["anli_r2", "lambada_openai", "openbookqa", "piqa", "truthfulqa_mc2", "winogrande", "arc_easy",
               "arc_challenge", "medmcqa", "mmlu", "wikitext"]
HEADLINE = ("acc", "word_perplexity", "perplexity")  # the first a task reports: its column in the study table

# -----------------------------------------------------------------------------
out_dir = "out"  # the run: its ckpt.pt is exported to out_dir/hf and scored; lm_eval.json is written here
tasks = "paper"  # 'paper' (the list above) and/or lm-eval task names, comma-separated
hf = ""  # score this Hugging Face folder or Hub name (e.g. gpt2) instead of out_dir's checkpoint
num_fewshot = -1  # examples in each prompt; -1 keeps each task's default (0 for the paper's tasks)
batch_size = 32  # sequences per forward pass
limit = 0  # score only the first `limit` examples of each task (a quick look: not the benchmark's number)
include_path = ""  # a folder of extra task YAML files (the harness's --include_path)
device = ""  # cpu, cuda, cuda:1; empty picks cuda if there is one, else cpu
dtype = "float32"  # float32 or bfloat16 (the model's weights are exported in float32)
# -----------------------------------------------------------------------------
RULES = {  # the range of each, as settings.RULES gives train.py's: (test, what it must be)
    "num_fewshot": (lambda v: v >= -1, "-1 (each task's default) or more"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "limit": (lambda v: v >= 0, "0 (every example) or more"),
    "dtype": (lambda v: v in ("float32", "bfloat16"), "float32 or bfloat16"),
}


def expand_tasks(text):
    """'paper,hellaswag' -> the paper's tasks, then hellaswag; each name once, in order."""
    names = []
    for name in (t.strip() for t in text.split(",")):
        for task in (PAPER_TASKS if name == "paper" else [name] if name else []):
            if task not in names:
                names.append(task)
    return names


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_scores(run_dir, task_names):
    """{'<task> <metric>': value} from run_dir/lm_eval.json for those of task_names it holds, if its scores
    are of run_dir's current checkpoint (a resumed or retrained run's older scores do not count)."""
    path, ckpt_path = os.path.join(run_dir, SCORES_FILE), os.path.join(run_dir, "ckpt.pt")
    saved = read_json(path) if os.path.exists(path) else {}
    stamp = saved.get("source", {}).get("checkpoint_mtime_ns")
    if stamp is not None and os.path.exists(ckpt_path) and os.stat(ckpt_path).st_mtime_ns != stamp:
        return {}
    scores = saved.get("scores", {})
    return {f"{t} {scores[t]['metric']}": scores[t]["value"] for t in task_names if t in scores}


def headline(metrics):
    """(metric name, value, stderr) of a task's results dict, whose keys look like 'acc,none'."""
    for name in HEADLINE:
        if f"{name},none" in metrics:
            return name, metrics[f"{name},none"], metrics.get(f"{name}_stderr,none")
    name = next(k for k, v in metrics.items()
                if "," in k and "_stderr" not in k and isinstance(v, (int, float)))
    return name.split(",")[0], metrics[name], None


def model_folder(s):
    """(folder or Hub name to score, what the scores are of): out_dir/hf, exported again if it is missing or
    older than out_dir/ckpt.pt; or the hf setting."""
    if s["hf"]:
        return s["hf"], {"model": s["hf"]}
    ckpt_path, hf_dir = os.path.join(s["out_dir"], "ckpt.pt"), os.path.join(s["out_dir"], "hf")
    info_path = os.path.join(hf_dir, "export.json")
    if os.path.exists(ckpt_path):
        stamp = os.stat(ckpt_path).st_mtime_ns
        if not os.path.exists(info_path) or read_json(info_path).get("checkpoint_mtime_ns") != stamp:
            from scripts.export import export  # imports torch and transformers
            print(f"exporting {ckpt_path} to {hf_dir}")
            export(ckpt_path, hf_dir)
    elif not os.path.exists(info_path):
        raise ValueError(f"no checkpoint at {ckpt_path} and no exported model in {hf_dir}; train a run first "
                         "(python train.py ...) or give a Hugging Face model with --hf=NAME_OR_FOLDER.")
    info = read_json(info_path)
    if info["tokenizer"] != "gpt2":
        raise ValueError(f"{hf_dir} holds a model without a GPT-2 tokenizer (tokenizer {info['tokenizer']}); "
                         "benchmark harnesses need a GPT-2-BPE model, trained on a data set such as "
                         "wikitext.")
    return hf_dir, {"model": os.path.abspath(hf_dir), "iter_num": info["iter_num"],
                    "best_val_loss": info["best_val_loss"],
                    "checkpoint_mtime_ns": info["checkpoint_mtime_ns"]}


def task_manager(names, include):
    """An lm-eval TaskManager that knows every name, or ValueError naming the unknown ones. Only the local
    folder is indexed when it holds them all (indexing the harness's ~14,000 built-in tasks takes seconds)."""
    from lm_eval.tasks import TaskManager
    if include and not os.path.isdir(include):
        raise ValueError(f"include_path {include} is not a folder; give the folder that holds your task YAML "
                         "files.")
    manager = TaskManager(include_path=include, include_defaults=False) if include else None
    if manager is None or not set(names) <= set(manager.all_tasks):
        manager = TaskManager(include_path=include or None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        raise ValueError(f"unknown task '{unknown[0]}'"
                         + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + "; `lm-eval ls tasks` lists the harness's tasks, and tasks=paper is the paper's "
                           "list.")
    return manager


def run_harness(model_path, names, s, manager):
    """The harness's results dict for model_path on names (a list of task names)."""
    from lm_eval import simple_evaluate
    from condense.device import pick_device
    dev = pick_device(s["device"], s["dtype"])[0]
    return simple_evaluate(model="hf", model_args={"pretrained": model_path, "dtype": s["dtype"]},
                           tasks=names, num_fewshot=None if s["num_fewshot"] < 0 else s["num_fewshot"],
                           batch_size=s["batch_size"], device=dev, limit=s["limit"] or None,
                           task_manager=manager, log_samples=False)


def save_scores(out, source, names, results, s):
    """Merge this call's scores into out/lm_eval.json (started afresh if it holds another model's) and return
    the file's contents."""
    path = os.path.join(out, SCORES_FILE)
    saved = read_json(path) if os.path.exists(path) else {}
    if saved.get("source") != source:
        saved = {"source": source, "scores": {}, "results": {}}
    import lm_eval
    import transformers
    settings = {"num_fewshot": s["num_fewshot"], "limit": s["limit"] or None, "batch_size": s["batch_size"],
                "dtype": s["dtype"], "lm_eval": lm_eval.__version__, "transformers": transformers.__version__}
    for task in names:
        metric, value, stderr = headline(results["results"][task])
        saved["scores"][task] = {"metric": metric, "value": value, "stderr": stderr,
                                 "n_shot": results["n-shot"].get(task), **settings}
    # every metric of every task and subtask, as the harness gave it
    saved["results"].update(results["results"])
    os.makedirs(out, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(saved, f, indent=1, default=str)
    os.replace(tmp, path)  # an interruption never leaves half a file
    return saved


def main(argv):
    defaults = {k: v for k, v in globals().items() if k in ("out_dir", "tasks", "hf", "num_fewshot",
                                                            "batch_size", "limit", "include_path", "device",
                                                            "dtype")}
    try:
        s = configure(defaults, argv, __doc__, [("evaluate's settings", "scripts/evaluate.py", RULES, None)])
        check_ranges(s, RULES)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    names = expand_tasks(s["tasks"])
    if not names:
        sys.exit("error: tasks is empty; give tasks=paper or task names such as piqa,arc_easy.")
    try:
        import transformers  # noqa: F401
    except ImportError:
        sys.exit("error: scripts/evaluate.py needs transformers, which is not installed: pip install "
                 "transformers==5.24.0")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        sys.exit('error: scripts/evaluate.py needs lm-eval, which is not installed: '
                 'pip install "lm-eval[hf]==0.4.13"')
    try:
        manager = task_manager(names, s["include_path"])
        model_path, source = model_folder(s)
        print(f"scoring {model_path} on {', '.join(names)}")
        results = run_harness(model_path, names, s, manager)
    except ConnectionError as e:  # the datasets library: no network, and the data set is not in the cache
        sys.exit(f"error: cannot get a task's data set ({e}); connect to the internet once so that it is "
                 "cached (under HF_HOME), or score only tasks whose data are cached.")
    except (ValueError, RuntimeError, OSError) as e:
        sys.exit(f"error: {e}")
    saved = save_scores(s["out_dir"], source, names, results, s)
    print(f"\n{'task':<16} {'metric':<16} {'value':>10} {'stderr':>8}")
    for task in names:
        e = saved["scores"][task]
        print(f"{task:<16} {e['metric']:<16} {e['value']:>10.4f} {e['stderr'] or float('nan'):>8.4f}")
    print(f"wrote {os.path.join(s['out_dir'], SCORES_FILE)}"
          + (f" (limit={s['limit']}: a quick look, not the benchmarks' numbers)" if s["limit"] else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
