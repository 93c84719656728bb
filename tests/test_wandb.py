"""Tests of train.py's optional Weights & Biases logging, with a stand-in `wandb` module (nothing installed,
nothing sent): wandb_log=True logs exactly the records of metrics.jsonl; off (the default), wandb is never
imported; on without the package, one sentence.

    python -m pytest tests/test_wandb.py -q
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2", "--max_iters=4",
        "--eval_interval=2", "--eval_iters=1", "--log_interval=1", "--warmup_iters=1", "--track_sequences=2",
        "--device=cpu", "--compile=False"]
FAKE_WANDB = """
import json, os
LOG = os.environ["FAKE_WANDB_LOG"]

def write(entry):
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\\n")

write({"imported": True})

def init(project=None, name=None, config=None, **kwargs):
    write({"init": {"project": project, "name": name, "config": config}})

def log(record, step=None):
    write({"log": record, "step": step})
"""


def train(tmp_path, data_dir, name, *args, fake="def init(**k): pass\ndef log(*a, **k): pass\n"):
    """train.py with a `wandb` module of source `fake` first on the path; (result, out_dir, the fake's
    records)."""
    fake_dir, log = tmp_path / f"fake_{name}", tmp_path / f"{name}.jsonl"
    fake_dir.mkdir()
    (fake_dir / "wandb.py").write_text(fake)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(fake_dir), "FAKE_WANDB_LOG": str(log)}
    out = tmp_path / name
    result = subprocess.run([sys.executable, "train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={out}",
                             *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, out, records


def test_wandb_logs_the_records_of_metrics_jsonl(data_dir, tmp_path):
    result, out, records = train(tmp_path, data_dir, "on", "--wandb_log=True", "--wandb_project=cond",
                                 fake=FAKE_WANDB)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0] == {"imported": True}
    init = records[1]["init"]
    assert (init["project"], init["name"]) == ("cond", "on")  # the name defaults to out_dir's folder
    assert init["config"] == json.loads((out / "config.json").read_text())  # every setting, as config.json
    logged = [r for r in records if "log" in r]
    # 4 steps and 3 evaluations, same fields
    assert [r["log"] for r in logged] == metrics and len(metrics) == 7
    assert [r["step"] for r in logged] == [m["iter"] for m in metrics]
    assert any("val_loss" in m and "spearman" in m for m in metrics)  # the evaluation records too

    result, _, records = train(tmp_path, data_dir, "off", fake=FAKE_WANDB)  # wandb_log=False, the default
    assert result.returncode == 0, result.stderr[-3000:]
    assert records == []  # never imported


def test_wandb_log_without_wandb_installed(data_dir, tmp_path):
    result, out, _ = train(tmp_path, data_dir, "missing", "--wandb_log=True",
                           fake="raise ImportError('No module named wandb')\n")
    message = result.stderr.strip()
    assert result.returncode != 0 and "Traceback" not in message and len(message.splitlines()) == 1, message
    assert "pip install wandb" in message and "wandb_log" in message
