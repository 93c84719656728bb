"""Tests of scripts/study.py (the experiment runner) and data/fineweb/prepare.py (the web corpus, on local
text).

    python -m pytest tests/test_study.py -q

The runner test trains two tiny models of 4 steps each on a tiny data set in a temporary folder.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configurator import configure  # noqa: E402
from data.common import gpt2_encoding, load_tokenizer, prepare_text  # noqa: E402
from data.fineweb import prepare as fineweb  # noqa: E402
from measure import MEASURE_SETTINGS  # noqa: E402
from scripts import study  # noqa: E402
from settings import defaults as train_settings  # noqa: E402

TEXT = "".join(f"{i} First Citizen: Before we proceed any further, hear me speak.\n" for i in range(60))

STUDY = """
base = "config/tiny_base.py"
shared = dict(data_dir={data!r}, n_layer=2, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=4,
              eval_interval=2, eval_iters=2, log_interval=1, warmup_iters=1, track_sequences=2, compile=False,
              device="cpu")
runs = {{
    "a": {{}},
    "b": {{"dispersion_weight": 0.1, "dispersion_layers": "late_half"}},
    "bad": {{"data_dir": {data!r} + "-gone"}},  # right settings, but no data there: train.py stops at once
}}
seeds = [7]
measure = {{"num_sequences": 4}}
"""


def run_study(path, results, *extra):
    return subprocess.run([sys.executable, "-m", "scripts.study", str(path), f"--results={results}",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)


def read_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def image_pixels(path):
    import matplotlib.image
    return matplotlib.image.imread(path)


def test_study_runs_skips_resumes_and_survives_a_failure(tmp_path):
    prepare_text(TEXT, tmp_path / "data", tokenizer="char", val_fraction=0.2, block_size=16)
    path = tmp_path / "tiny_study.py"
    path.write_text(STUDY.format(data=str(tmp_path / "data")))
    results = tmp_path / "results"
    out = results / "tiny_study"

    first = run_study(path, results)
    assert first.returncode != 0, first.stdout  # one run failed ...
    assert "bad-s7: FAILED" in first.stdout and "holds no prepared data set" in first.stdout  # ... said why
    assert "a-s7: trained" in first.stdout and "b-s7: trained" in first.stdout  # ... and the others ran
    assert "holds no prepared data set" in (out / "bad-s7" / "log.txt").read_text()  # its log is kept

    table = json.loads((out / "results.json").read_text())["runs"]
    assert list(table) == ["a", "b", "bad"]
    assert table["bad"]["summary"] == {} and table["bad"]["seeds"][0]["status"] == "failed"
    for name in ("a", "b"):
        run_dir = out / f"{name}-s7"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["seed"] == 7 and config["n_embd"] == 16 and config["out_dir"] == str(run_dir)
        assert (run_dir / "log.txt").read_text().count("train.py") == 1  # the command, once
        evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "val_loss" in r]
        cond = json.loads((run_dir / "condensation.json").read_text())
        s = table[name]["summary"]
        assert s["final_val_loss"]["mean"] == pytest.approx(evals[-1]["val_loss"]) and evals[-1]["iter"] == 4
        assert s["best_val_loss"]["mean"] == pytest.approx(min(r["val_loss"] for r in evals))
        # n_layer 2: the late half is entry 2
        assert s["late_cos"]["mean"] == pytest.approx(cond["mean_cos"][2])
        assert s["spearman"]["mean"] == pytest.approx(cond["spearman"])
        for k, v in s.items():
            assert v["n"] == 1 and v["std"] is None and math.isfinite(v["mean"]) and v["min"] == v["max"], k
        assert s["wall_s"]["mean"] > 0
    assert json.loads((out / "b-s7" / "config.json").read_text())["dispersion_layers"] == "late_half"

    md = (out / "results.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"a", "b", "bad"}
    assert f"{table['a']['summary']['final_val_loss']['mean']:.4f}" in rows["a"]
    assert "0/1 (FAILED)" in rows["bad"] and "1/1" in rows["a"]
    pixels = image_pixels(out / "condensation.png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600 and pixels.std() > 0.05  # drawn, not blank

    # a second call retrains nothing that finished (but says when its settings differ now), resumes a run
    # that was interrupted (a checkpoint but no done.json), and the failure still counts
    os.remove(out / "a-s7" / "done.json")
    ckpt_time = os.stat(out / "b-s7" / "ckpt.pt").st_mtime_ns
    second = run_study(path, results, "--eval_iters=2")  # the same value, but not the same command
    assert second.returncode != 0 and "bad-s7: FAILED" in second.stdout
    assert "b-s7: skipped" in second.stdout and os.stat(out / "b-s7" / "ckpt.pt").st_mtime_ns == ckpt_time
    assert "b-s7: finished earlier with other settings" in (out / "results.md").read_text()
    assert (out / "b-s7" / "log.txt").read_text().count("train.py") == 1  # b was not trained again
    assert "a-s7: trained" in second.stdout and (out / "a-s7" / "done.json").exists()
    assert "--init_from=resume" in (out / "a-s7" / "log.txt").read_text()
    again = json.loads((out / "results.json").read_text())["runs"]
    assert again["b"]["summary"] == table["b"]["summary"]
    assert again["a"]["summary"]["final_val_loss"] == table["a"]["summary"]["final_val_loss"]


def test_measure_commands_name_the_run_and_its_initial_model(tmp_path, monkeypatch):
    path = tmp_path / "s.py"
    path.write_text(STUDY.format(data="/somewhere") + "measure_init = True\nhistory = True\n")
    monkeypatch.chdir(ROOT)
    s = study.load_study(str(path))
    train_args, jobs = study.commands(s, "b", 7, "/r/b-s7", ["--device=cpu", "--max_iters=9"])
    defaults = {**train_settings(), **MEASURE_SETTINGS}
    run = configure(train_settings(), train_args)
    assert ((run["n_embd"], run["max_iters"], run["seed"], run["out_dir"], run["dispersion_weight"])
            == (16, 9, 7, "/r/b-s7", 0.1))
    assert list(jobs) == ["condensation.json", "condensation_init.json", "history.png"]
    assert configure(defaults, jobs["history.png"])["history"] == "/r/b-s7"
    final, init = (configure(defaults, jobs[f]) for f in ("condensation.json", "condensation_init.json"))
    assert not final["init"] and init["init"] and final["num_sequences"] == init["num_sequences"] == 4
    for key in ("seed", "out_dir", "n_layer", "n_embd", "block_size", "mlp_dim", "data_dir"):
        assert init[key] == run[key], key  # the same model settings and seed: the run's initial weights


def test_settings_reach_train_py_unchanged():
    settings = {"learning_rate": 0.1, "mlp_dim": 64, "compile": False, "lr_decay_iters": None,
                "dispersion_layers": "1,3", "dispersion_variant": "l2_repel", "max_iters": 5000}
    defaults = {"learning_rate": 1e-3, "mlp_dim": None, "compile": None, "lr_decay_iters": None,
                "dispersion_layers": "all", "dispersion_variant": "angular", "max_iters": 1}
    assert configure(defaults, study.setting_args(settings)) == settings


def test_spread_and_study_file_errors(tmp_path, monkeypatch):
    s = study.spread([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert study.cell(s, ".2f") == "2.00 ± 1 [1.00, 3.00]"
    bad = tmp_path / "typo.py"
    bad.write_text('base = "config/tiny_base.py"\nrun = {"a": {}}\n')  # 'run' for 'runs'
    with pytest.raises(SystemExit, match="unknown setting 'run' in config file .*typo.py. Did you mean runs"):
        study.load_study(str(bad))
    monkeypatch.chdir(ROOT)  # as scripts/study.py does: study files name their paths from the repo root
    for name in sorted(os.listdir("studies")):
        # every shipped study reads, and names only real train.py settings
        if name.startswith(("cpu_", "gpu_")):
            s = study.load_study(os.path.join("studies", name))
            for run in s["runs"].values():
                assert set({**s["shared"], **run}) <= set(train_settings()), name
            assert set(s["measure"]) <= set(MEASURE_SETTINGS), name


# -----------------------------------------------------------------------------
# data/fineweb/prepare.py on local documents

DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog. " * (1 + i % 3) for i in range(12)]
DOCS[3] = "A page that quotes <|endoftext|> literally, ça va?"


def test_corpus_tokens_separators_splits_and_meta(tmp_path):
    enc = gpt2_encoding()
    meta = fineweb.write_corpus(iter(DOCS), tmp_path / "fw", tokens=100, val_docs=2, block_size=8)
    val = np.fromfile(tmp_path / "fw" / "val.bin", dtype=np.uint16)
    train = np.fromfile(tmp_path / "fw" / "train.bin", dtype=np.uint16)
    expected_val = sum(([50256] + enc.encode_ordinary(d) for d in DOCS[:2]), [])
    expected_train = sum(([50256] + enc.encode_ordinary(d) for d in DOCS[2:]), [])[:100]
    assert val.tolist() == expected_val and len(train) == 100 and train.tolist() == expected_train
    assert (val == 50256).sum() == 2 and val[0] == 50256  # one separator before each document
    # where each train document begins
    starts = np.cumsum([0] + [1 + len(enc.encode_ordinary(d)) for d in DOCS[2:]])
    assert (train == 50256).sum() == (starts < 100).sum() >= 3  # one per document: the quoted one stayed text
    assert meta == {"vocab_size": 50257, "tokenizer": "gpt2", "train_tokens": 100,
                    "val_tokens": len(expected_val), "val_docs": 2}
    assert json.loads((tmp_path / "fw" / "meta.json").read_text()) == meta
    # no temporary files left
    assert sorted(os.listdir(tmp_path / "fw")) == ["meta.json", "train.bin", "val.bin"]
    _, decode = load_tokenizer(tmp_path / "fw")  # what train.py and sample.py read
    assert decode(val) == "<|endoftext|>" + "<|endoftext|>".join(DOCS[:2])
    starts = np.flatnonzero(train == 50256)
    documents = [decode(train[a + 1:b]) for a, b in zip(starts, starts[1:])]
    assert len(documents) >= 2 and documents == DOCS[2:2 + len(documents)]  # round trip, documents intact


def test_corpus_workers_and_short_streams(tmp_path, capsys):
    one = fineweb.write_corpus(iter(DOCS), tmp_path / "one", tokens=10**6, val_docs=3, block_size=8)
    two = fineweb.write_corpus(iter(DOCS), tmp_path / "two", tokens=10**6, val_docs=3, workers=2,
                               block_size=8)
    assert one == two
    for split in ("train", "val"):
        assert ((tmp_path / "one" / f"{split}.bin").read_bytes()
                == (tmp_path / "two" / f"{split}.bin").read_bytes())
    assert "documents ran out" in capsys.readouterr().out  # fewer tokens than asked: said, not hidden
    with pytest.raises(ValueError, match="the train split has 0 tokens"):
        fineweb.write_corpus(iter(DOCS[:2]), tmp_path / "one", tokens=100, val_docs=2, block_size=8)
    assert not (tmp_path / "one" / "meta.json").exists()  # the folder no longer counts as prepared
    # the old files, no temporary ones
    assert sorted(os.listdir(tmp_path / "one")) == ["train.bin", "val.bin"]


def test_token_counts_and_missing_datasets(monkeypatch):
    assert fineweb.parse_count("100M") == 100_000_000 and fineweb.parse_count("1.5B") == 1_500_000_000
    assert fineweb.parse_count("5e8") == 500_000_000 and fineweb.parse_count("20k") == 20_000
    with pytest.raises(Exception, match="is not a token count"):
        fineweb.parse_count("lots")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(SystemExit, match="pip install datasets"):
        fineweb.fineweb_documents("sample-10BT")
