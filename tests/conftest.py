"""Fixtures shared by the test files: a tiny character-level data set, made once per test session.

`python -m pytest -q -n auto` runs the files in one worker process per core (pytest-xdist). Each worker then
uses one thread, and so do the scripts the tests start: with more threads than free cores every small op of
these tiny models waits for a descheduled thread, and the suite gets slower, not faster."""
import os
import random

import pytest
import torch

from data.common import prepare_text

if os.environ.get("PYTEST_XDIST_WORKER"):  # set in each pytest-xdist worker
    os.environ["OMP_NUM_THREADS"] = "1"  # for the scripts the tests start
    torch.set_num_threads(1)  # for this worker


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A character-level data set of random words: 11,688 train and 1,299 val tokens, vocabulary 28 (padded
    to 64 by train.py). Made here so that no test downloads anything or writes under data/."""
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(300))
    folder = tmp_path_factory.mktemp("data") / "words"
    prepare_text(text, folder, block_size=32)
    return str(folder)
