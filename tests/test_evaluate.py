"""Tests of scripts/evaluate.py (lm-evaluation-harness on an exported run) and of the scores in
scripts/study.py's table.

    python -m pytest tests/test_evaluate.py -q

Offline: the harness reads a two-question multiple-choice task from local files (a task YAML whose
dataset_path is json, pointing at a local JSON file), and scores two tiny GPT-2-BPE checkpoints. Needs
lm-eval (requirements-dev.txt); the tests that need it are skipped without it. scripts/evaluate.py runs in
this process (importing lm-eval takes seconds, so it is imported once), except where a fresh interpreter
matters.
"""
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.common import gpt2_encoding, prepare_text
from model import GPT, GPTConfig
from scripts import evaluate
from scripts import study

REPO = Path(__file__).resolve().parents[1]
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason='needs lm-eval: pip install "lm-eval[hf]==0.4.13"')
QUESTIONS = [{"question": "The quick brown fox jumps over the lazy", "choices": ["dog", "kings"], "label": 0},
             {"question": "Seven wizards quietly hex jovial", "choices": ["fox", "kings"], "label": 1}]
TASK = """task: {name}
dataset_path: {path}
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def write_run(folder, seed, data_dir):
    """A tiny GPT-2-BPE checkpoint as train.py writes it (tests/test_export.py exports one that train.py
    wrote)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=50304, block_size=32, n_layer=2, n_head=2, n_embd=16, bias=False))
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_args": vars(model.config), "iter_num": 10 * seed,
                "best_val_loss": 10.0, "config": {"dataset": "bpe", "data_dir": str(data_dir)}},
               folder / "ckpt.pt")
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two runs (seeds 1 and 2) and a folder of task files: tiny_mc (the two questions in a local JSON file)
    and hub_mc (the same, but its data set on the Hugging Face Hub, which no test downloads)."""
    root = tmp_path_factory.mktemp("evaluate")
    text = " ".join(random.Random(0).choice("the quick brown fox jumps over a lazy dog".split())
                    for _ in range(400))
    prepare_text(text, root / "data", tokenizer="gpt2", block_size=32)
    runs = {seed: (root / f"run-s{seed}",
                   write_run(root / f"run-s{seed}", seed, root / "data")) for seed in (1, 2)}
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "two.json").write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    (tasks / "tiny_mc.yaml").write_text(TASK.format(name="tiny_mc", path="json", data=tasks / "two.json"))
    (tasks / "hub_mc.yaml").write_text(TASK.format(name="hub_mc", path="condense-tests/never-downloaded",
                                                   data="test.json"))
    return root, runs, tasks


def expected_accuracy(model):
    """The accuracy the harness should report, computed with our model: a question is right when its answer
    has the highest log-likelihood as a continuation of the question (after a space), over the 50257 real
    tokens."""
    enc, right = gpt2_encoding(), 0
    for q in QUESTIONS:
        context = enc.encode_ordinary(q["question"])
        scores = []
        for choice in q["choices"]:
            whole = enc.encode_ordinary(q["question"] + " " + choice)
            with torch.no_grad():
                logp = model(torch.tensor([whole[:-1]]))[0][0, :, :50257].log_softmax(-1)  # (T - 1, vocab)
            scores.append(sum(logp[i - 1, whole[i]].item() for i in range(len(context), len(whole))))
        right += max(range(len(scores)), key=scores.__getitem__) == q["label"]
    return right / len(QUESTIONS)


def stop_message(argv):
    """scripts/evaluate.py's message when it stops: one line starting with 'error: ' (sys.exit prints it,
    status 1)."""
    with pytest.raises(SystemExit) as stop:
        evaluate.main(argv)
    message = stop.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


@needs_lm_eval
def test_harness_scores_reach_lm_eval_json_and_the_study_table(setup):
    root, runs, tasks = setup
    for seed, (run_dir, model) in runs.items():
        evaluate.main([f"--out_dir={run_dir}", "--tasks=tiny_mc", f"--include_path={tasks}", "--device=cpu"])
        saved = json.loads((run_dir / "lm_eval.json").read_text())
        entry = saved["scores"]["tiny_mc"]
        assert entry["metric"] == "acc" and entry["value"] == expected_accuracy(model), seed
        assert entry["n_shot"] == 0 and entry["limit"] is None and entry["lm_eval"] == "0.4.13"
        assert saved["source"]["iter_num"] == 10 * seed  # which checkpoint was scored
        assert saved["results"]["tiny_mc"]["sample_len"] == 2  # both questions were asked
        assert (run_dir / "hf" / "export.json").exists()  # exported on the way

    # scripts/study.py's table: mean ± std [min, max] over the seeds, one column per task and metric
    s = {"base": ["config/x.py"], "shared": {}, "seeds": [1, 2], "runs": {"disp": {}},
         "evaluate": {"tasks": "tiny_mc"}}
    results = [{"run": "disp", "seed": seed, "status": "trained", "note": "",
                "numbers": {"scores": evaluate.read_scores(run_dir, ["tiny_mc"])}}
               for seed, (run_dir, _) in runs.items()]
    table = study.summarize(s, results)
    accs = [expected_accuracy(model) for _, model in runs.values()]
    assert table["disp"]["scores"]["tiny_mc acc"] == study.spread(accs)
    rows = [line for line in study.markdown("t", s, table, [], []).splitlines() if "tiny_mc acc" in line or
            line.startswith("| disp | " + study.cell(study.spread(accs), ".4g"))]
    assert len(rows) == 2, rows  # the header and the run's row

    # the study does not score a run twice, and a newer checkpoint's scores are not those of the old one
    assert study.score(s, runs[1][0]) == ""  # lm_eval.json has every task: nothing to run
    ckpt = runs[1][0] / "ckpt.pt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # as after a resume
    assert evaluate.read_scores(runs[1][0], ["tiny_mc"]) == {}


@needs_lm_eval
def test_unknown_task_character_model_and_missing_checkpoint(setup, data_dir, tmp_path):
    root, runs, tasks = setup
    run_dir = runs[2][0]
    said = stop_message([f"--out_dir={run_dir}", "--tasks=tiny_mc,piqaa", f"--include_path={tasks}"])
    assert "unknown task 'piqaa'" in said and "piqa" in said.split("did you mean")[1]
    said = stop_message([f"--out_dir={run_dir}", "--tasks=tiny_mc", f"--include_path={tmp_path / 'x'}"])
    assert "is not a folder" in said
    char = tmp_path / "char"
    char.mkdir()
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_embd=16))
    torch.save({"model": model.state_dict(), "model_args": vars(model.config), "iter_num": 1,
                "best_val_loss": 1.0, "config": {"dataset": "words", "data_dir": data_dir}}, char / "ckpt.pt")
    said = stop_message([f"--out_dir={char}", "--tasks=tiny_mc", f"--include_path={tasks}"])
    assert "without a GPT-2 tokenizer" in said and "BPE" in said
    said = stop_message([f"--out_dir={tmp_path / 'none'}", "--tasks=tiny_mc", f"--include_path={tasks}"])
    assert "no checkpoint at" in said and "--hf=" in said
    assert "it must be float32 or bfloat16" in stop_message([f"--out_dir={run_dir}", "--dtype=float16"])


@needs_lm_eval
def test_no_network_and_no_cached_data_set(setup, tmp_path):
    """A task whose data set is on the Hub, with the Hub switched off and an empty cache: one line, status 1.
    (A fresh interpreter: the Hub's offline switch is read at import.)"""
    root, runs, tasks = setup
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "scripts.evaluate", f"--out_dir={runs[1][0]}",
                             "--tasks=hub_mc",
                             f"--include_path={tasks}", "--device=cpu"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    message = result.stderr.strip().splitlines()[-1]
    assert (result.returncode == 1
            and message.startswith("error: cannot get a task's data set")), result.stderr[-2000:]
    assert "condense-tests/never-downloaded" in message and "internet" in message
    assert "Traceback" not in result.stderr


def test_missing_packages_and_task_lists(setup, monkeypatch):
    assert evaluate.expand_tasks("paper") == evaluate.PAPER_TASKS and len(evaluate.PAPER_TASKS) == 11
    assert evaluate.expand_tasks("piqa, paper,hellaswag")[:2] == ["piqa", "anli_r2"]
    assert evaluate.expand_tasks("piqa, paper,hellaswag")[-1] == "hellaswag"
    assert "tasks is empty" in stop_message(["--tasks= ,"])
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if it were not installed
    assert 'pip install "lm-eval[hf]==0.4.13"' in stop_message(["--out_dir=x"])
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert "pip install transformers" in stop_message(["--out_dir=x"])
