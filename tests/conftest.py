"""Fixtures shared by the test files: a tiny character-level data set, made once per test session."""
import random

import pytest

from data.common import prepare_text


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
