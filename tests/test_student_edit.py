"""A student who edits a built-in formula in dispersion.py trains with the edit: the speed path
(condense/dispersion_fused.py) steps aside and train.py says so in one line; an unedited built-in keeps its
speed path. First as a student breaks it, in a copy of the repository; then for every built-in variant,
in-process.

    python -m pytest tests/test_student_edit.py -q
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dispersion
from dispersion import FAST_PATHS, VARIANTS, dispersion_loss, uses_speed_path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=1",
        "--eval_interval=100", "--log_interval=1", "--max_iters=4", "--warmup_iters=1", "--track_sequences=0",
        "--dispersion_weight=0.1", "--dispersion_tokens=0", "--device=cpu", "--compile=False"]
STEPPED_ASIDE = "differs from its speed path"


def train(repo, out_dir, data_dir):
    command = [sys.executable, "train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={out_dir}"]
    result = subprocess.run(command, cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    dispersion_terms = [r["dispersion"] for r in map(json.loads, open(out_dir / "metrics.jsonl"))
                        if "dispersion" in r]
    return result.stdout, dispersion_terms


def test_an_edited_angular_trains_as_written(tmp_path, data_dir):
    """Add 0.25 to angular's body in a copy of the repository: every logged dispersion term is 0.25 higher
    than the unedited run's (a constant changes no gradient, so both runs take the same steps), and train.py
    says the speed path stepped aside."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(".git", "out*", "results", "cache", "*.bin",
                                                             "__pycache__", ".pytest_cache", ".benchmarks"))
    source = (repo / "dispersion.py").read_text()
    body = "    return log_mean_exp(angles(z, clamp) / -tau)\n"
    assert source.count(body) == 1, "angular's body has changed: update this test's edit"
    (repo / "dispersion.py").write_text(source.replace(body, body.rstrip("\n") + " + 0.25\n"))

    plain_out, plain = train(REPO, tmp_path / "plain", data_dir)
    edited_out, edited = train(repo, tmp_path / "edited", data_dir)
    assert STEPPED_ASIDE not in plain_out
    assert STEPPED_ASIDE in edited_out and "trains as written in dispersion.py" in edited_out
    assert len(plain) == len(edited) == 4
    for a, b in zip(plain, edited):
        assert b - a == pytest.approx(0.25, abs=1e-5)


@pytest.fixture
def fresh_answers(monkeypatch):
    """uses_speed_path asks once per formula and settings; a student's edit comes before the process starts,
    so the answers start empty. Here the edits are made in-process: start each test with no answers."""
    monkeypatch.setattr(dispersion, "AGREES", {})


@pytest.mark.parametrize("variant", list(FAST_PATHS))
def test_every_built_in_keeps_its_speed_path_unedited(variant, fresh_answers):
    assert uses_speed_path(variant)


@pytest.mark.parametrize("variant", list(FAST_PATHS))
def test_every_edited_built_in_runs_as_written(variant, fresh_answers, monkeypatch):
    """The formula with a constant added: the loss moves by exactly that constant, through the formula."""
    z = torch.randn(3, 10, 8, generator=torch.Generator().manual_seed(1))
    before = dispersion_loss(z, variant, max_tokens=0)
    formula = VARIANTS[variant]
    monkeypatch.setitem(VARIANTS, variant, lambda z, **settings: formula(z, **settings) + 0.25)
    assert not uses_speed_path(variant)
    assert dispersion_loss(z, variant, max_tokens=0).item() == pytest.approx(before.item() + 0.25, abs=1e-6)


def test_an_edited_building_block_is_seen_too(fresh_answers, monkeypatch):
    """A change inside a building block (here, the cosines every angle is made of) changes angular's formula
    without touching angular itself: the check compares numbers, not source, so it sees that too."""
    cosines = dispersion.cosines
    monkeypatch.setattr(dispersion, "cosines", lambda z: 0.9 * cosines(z))
    assert not uses_speed_path("angular") and not uses_speed_path("cosine")
    assert uses_speed_path("l2_repel")  # built from distances, not cosines: its speed path still agrees
