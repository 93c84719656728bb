"""Tests for sample.py, run as a user runs it, on an untrained checkpoint of a tiny character-level model."""
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from data.common import prepare_text
from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
CHARS = "abcdefgh \n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An untrained checkpoint whose embedding is padded to 64 rows for a 10-character vocabulary: most of its
    probability mass sits on ids that no character has, so sampling them would crash decoding."""
    tmp = tmp_path_factory.mktemp("sample")
    prepare_text(CHARS * 200, tmp / "data", block_size=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    (tmp / "run").mkdir()
    torch.save({"model": model.state_dict(), "model_args": asdict(model.config), "iter_num": 0,
                "best_val_loss": 9.0, "config": {"dataset": "x", "data_dir": str(tmp / "data")}},
               tmp / "run" / "ckpt.pt")
    return tmp


def sample(*args):
    return subprocess.run([sys.executable, "sample.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)


def samples(stdout):
    return [s.rstrip("\n") for s in stdout.split("---------------\n") if s.strip()]


def test_samples_decode_only_real_tokens(run_dir):
    p = sample(f"--out_dir={run_dir / 'run'}", "--start=abc", "--num_samples=3", "--max_new_tokens=40",
               "--temperature=2.0", "--top_k=0")
    assert p.returncode == 0, p.stderr
    texts = samples(p.stdout)
    assert len(texts) == 3
    for text in texts:
        assert text.startswith("abc") and len(text) == 3 + 40 and set(text) <= set(CHARS)


def test_top_k_one_is_greedy_and_a_prompt_file_works(run_dir, tmp_path):
    (tmp_path / "prompt.txt").write_text("hag")
    runs = [sample(f"--out_dir={run_dir / 'run'}", f"--start=FILE:{tmp_path / 'prompt.txt'}",
                   "--num_samples=2", "--max_new_tokens=10", "--top_k=1",
                   f"--seed={seed}") for seed in (1, 2)]
    assert all(p.returncode == 0 for p in runs), runs[0].stderr
    texts = samples(runs[0].stdout) + samples(runs[1].stdout)
    assert len(set(texts)) == 1 and texts[0].startswith("hag")  # the same greedy text, whatever the seed


@pytest.mark.parametrize("args, message", [
    (["--start=xyz"], "character 'x' is not in the vocabulary"),
    (["--start=FILE:/no/such/file.txt"], "cannot read the prompt file"),
    (["--dtype=fp16"],
     "dtype='fp16' is not allowed: it must be '' (automatic), float32, bfloat16 or float16"),
    (["--init_from=bert"], "init_from='bert' is not allowed: it must be resume or one of gpt2"),
])
def test_bad_input_is_one_sentence(run_dir, args, message):
    p = sample(f"--out_dir={run_dir / 'run'}", *args)
    assert p.returncode != 0 and message in p.stderr and "Traceback" not in p.stderr


def test_missing_checkpoint_is_one_sentence(tmp_path):
    p = sample(f"--out_dir={tmp_path}")
    assert p.returncode != 0 and "no checkpoint at" in p.stderr and "Traceback" not in p.stderr


def test_without_out_dir_it_lists_the_runs_under_out_and_says_how_to_pick_one(run_dir, tmp_path):
    """The default out_dir, out, holds no checkpoint of its own: the runs below it are named instead."""
    (tmp_path / "out").mkdir()
    shutil.copytree(run_dir / "run", tmp_path / "out" / "tiny_base")
    p = subprocess.run([sys.executable, str(REPO / "sample.py")], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert p.returncode == 1 and p.stderr.strip() == ("error: no checkpoint at out/ckpt.pt; the runs under "
                                                      "out/ are out/tiny_base: pick one with "
                                                      "--out_dir=out/tiny_base.")
