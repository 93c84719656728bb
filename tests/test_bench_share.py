"""Tests of scripts/bench_share.py, the one way the benchmarks measure the statistics' share of the forward
passes: the order of the runs with and without the statistics, and that "without" really runs none.

    python -m pytest tests/test_bench_share.py -q
"""
import statistics

import pytest
import torch

from condensation import measure
from model import GPT, GPTConfig
from scripts.bench_share import with_and_without


def test_runs_alternate_with_and_without_the_statistics_and_the_share_is_their_median_ratio():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=16))
    seqs = torch.randint(32, (3, 16))
    ran = []  # for each run, in order: whether its statistics were computed (no_statistics gives zeros)
    run = lambda: ran.append(any(v != 0 for v in measure(model, seqs).mean_cos))
    pairs = with_and_without([run, run], rounds=2)
    # the order flips from one run to the next and from one round to the next
    assert ran == [True, False, False, True, False, True, True, False]
    assert len(pairs["with"]) == len(pairs["without"]) == len(pairs["ratios"]) == 4
    assert pairs["ratios"] == [w / wo for w, wo in zip(pairs["with"], pairs["without"])]
    assert pairs["share"] == pytest.approx(statistics.median(pairs["ratios"]) - 1)
    assert 0 < pairs["inside"] < sum(pairs["with"])  # the with runs' time in the statistics, and no more
