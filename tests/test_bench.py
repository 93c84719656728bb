"""Tests for scripts/bench.py: one real run on a tiny model and data set (every column present, finite and
consistent), and its pieces one by one (which records are timed, the overrides each run gets, the
activation-memory count).

    python -m pytest tests/test_bench.py -q

No test relies on timing: the figures are checked against each other (ratio = ms / ms of 'off', tokens/s =
tokens per step / s per step, MFU = FLOPs per token x tokens/s / peak), never against a speed.
"""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from model import GPT, GPTConfig
from scripts.bench import (BENCH_SETTINGS, max_iters_for, peak_flop_rate, read_settings, setting_overrides,
                   timed_records, training_table)
from scripts.bench_loss import saved_bytes

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: fastest for a model this small on a shared machine
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--device=cpu",
        "--compile=False", "--iters=3", "--warmup=1", "--repeats=2", "--variants=angular", "--term_repeats=2",
        "--measure_sequences=4", "--measure_batch_size=2", "--peak_tflops=0.5"]


@pytest.fixture(scope="module")
def bench_run(data_dir, tmp_path_factory):
    """(JSON, Markdown, stdout) of scripts/bench.py on the tiny model: off and angular, 2 runs each of 1 + 3
    steps."""
    stem = tmp_path_factory.mktemp("bench") / "bench"
    command = [sys.executable, "-m", "scripts.bench", *TINY, f"--data_dir={data_dir}", f"--save={stem}"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(Path(f"{stem}.json").read_text()), Path(f"{stem}.md").read_text(), result.stdout


def test_training_rows_are_complete_and_consistent(bench_run):
    report = bench_run[0]
    rows = {r["setting"]: r for r in report["training"]}
    assert list(rows) == ["off", "angular"]
    flops = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32,
                          bias=False)).flops_per_token(32)
    assert report["flops_per_token"] == flops and report["tokens_per_iter"] == 4 * 32
    assert report["peak_flops"] == 0.5e12
    for r in rows.values():
        for key in ("ms", "ratio", "tokens_per_s", "peak_mem_mb", "tflops", "mfu", "spread"):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
        assert len(r["runs"]["ms"]) == 2 and r["ms"] == pytest.approx(statistics.median(r["runs"]["ms"]))
        assert r["ratio"] == pytest.approx(r["ms"] / rows["off"]["ms"])
        assert r["tokens_per_s"] == pytest.approx(128 / (r["ms"] / 1000))
        assert r["tflops"] == pytest.approx(flops * r["tokens_per_s"] / 1e12)
        assert r["mfu"] == pytest.approx(flops * r["tokens_per_s"] / 0.5e12)
        assert r["spread"] == pytest.approx((max(r["runs"]["ms"]) - min(r["runs"]["ms"])) / r["ms"])
        assert r["peak_mem_mb"] > 50  # the process's peak resident size: Python and torch alone take more
    assert rows["off"]["ratio"] == 1.0


def test_markdown_table_has_every_column(bench_run):
    report, markdown, stdout = bench_run
    assert markdown.strip() in stdout  # what is printed is what is saved
    lines = [l for l in markdown.splitlines() if l.startswith("| off") or l.startswith("| angular")]
    header = next(l for l in markdown.splitlines() if l.startswith("| setting"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["setting", "ms/iter", "x off", "tokens/s", "peak MiB", "model TFLOP/s", "MFU",
                       "spread"]
    training = [l for l in lines if l.count("|") == len(columns) + 1]
    assert len(training) == 2
    for line in training:
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        numbers = [float(c.rstrip("%").replace(",", "")) for c in cells]  # every cell a number, none "n/a"
        assert all(math.isfinite(v) for v in numbers)
    off = [c.strip() for c in training[0].strip("|").split("|")]
    assert off[2] == "1.000"
    assert ("load average (1 min) before" in markdown
            and "MFU against 0.5 TFLOP/s from --peak_tflops" in markdown)


def test_dispersion_term_and_measure_sections(bench_run):
    report = bench_run[0]
    (term,) = report["term"]
    assert term["variant"] == "angular" and term["stacked"] > 0 and term["looped"] > 0
    assert term["compiled"] is None  # compile is off, so the compiled term is not timed
    measured = report["measure"]
    assert measured["sequences"] == 4 and measured["seq_len"] == 32
    assert measured["tokens_per_s"] == pytest.approx(4 * 32 / (measured["ms"] / 1000))
    assert measured["sequences_per_s"] == pytest.approx(4 / (measured["ms"] / 1000))
    # pairs with and without the statistics, in turn; their times are a few ms, so their sign is noise here
    ratios = measured["share_ratios"]
    assert len(ratios) == 2 and all(r > 0 and math.isfinite(r) for r in ratios)  # --term_repeats=2
    assert measured["statistics_share"] == pytest.approx(statistics.median(ratios) - 1)


def test_activation_memory_is_bounded_by_max_tokens(bench_run):
    """The memory the term keeps for backward follows 4 L B (a m C + k m^2) bytes (up to a few small tensors),
    and the same m at twice the sequence length adds no more than the 8 T bytes of the permutation index."""
    (memory,) = bench_run[0]["memory"]
    assert list(memory["mib"]) == ["4", "8", "16", "32"]  # T/8, T/4, T/2 and T itself
    assert memory["fit_error"] < 0.05
    # angular: the unit vectors and one (m, m) matrix
    assert 0.9 < memory["a"] < 1.3 and 0.9 < memory["k"] < 1.3
    assert 0 <= memory["growth_2t"] <= 8 * 32
    mib = list(memory["mib"].values())
    assert mib == sorted(mib) and mib[-1] > 3 * mib[1]  # grows with m


def test_saved_bytes_counts_each_kept_storage_once_and_not_the_inputs():
    x = torch.randn(10, requires_grad=True)
    assert saved_bytes(lambda: (x * x).sum(), [x])[0] == 0  # mul keeps only x, the input

    def twice():
        y = x.exp()  # exp keeps its output y; the product keeps y twice: one storage of 40 bytes
        return (y * y).sum()
    assert saved_bytes(twice, [x])[0] == 40
    assert saved_bytes(lambda: (x * x).sum(), [])[0] == 40  # x kept twice, counted once, when not an input


def test_timed_records_drop_the_warm_up():
    every = [{"iter": i, "ms": 1.0} for i in range(6)]
    assert [r["iter"] for r in timed_records(every, 2)] == [2, 3, 4, 5]
    # log_every = 10: a record covers the 10 steps before it
    tens = [{"iter": i, "ms": 1.0} for i in (0, 10, 20, 30)]
    # record 10 covers steps 1..10, inside the warm-up
    assert [r["iter"] for r in timed_records(tens, 10)] == [20, 30]
    assert [r["iter"] for r in timed_records(tens, 1)] == [10, 20, 30]


def test_runs_are_long_enough_and_get_the_right_overrides():
    s = SimpleNamespace(**BENCH_SETTINGS)
    s.warmup, s.iters, s.log_every = 3, 10, 1
    assert max_iters_for(s) == 13  # steps 0..12: 3 warm-up and 10 timed
    s.warmup, s.iters, s.log_every = 10, 50, 10
    assert max_iters_for(s) == 61  # steps 0..60, records at 20..60 cover steps 11..60: 50 timed
    records = [{"iter": i, "ms": 1.0} for i in range(0, max_iters_for(s), 10)]
    assert sum(10 for _ in timed_records(records, s.warmup)) == 50
    s.dispersion_weight = 0.0
    off, angular = setting_overrides("off", s), setting_overrides("angular", s)
    assert "--dispersion_weight=0.0" in off and "--init_from=scratch" in off and "--track_sequences=0" in off
    assert "--dispersion_weight=0.1" in angular and "--dispersion_variant=angular" in angular
    s.dispersion_weight = 0.5  # a config's own weight wins over the bench default
    assert "--dispersion_weight=0.5" in setting_overrides("cosine", s)


def test_settings_split_between_bench_and_train():
    config = str(REPO / "config" / "tiny_base.py")
    s, train_args = read_settings([config, "--iters=4", "--n_layer=2", "--variants=angular, cosine"])
    assert (s.iters == 4 and s.n_layer == 2 and s.variants == ["angular", "cosine"]
            and s.dataset == "shakespeare_char")
    assert train_args == [config, "--n_layer=2"]  # bench's own settings do not go to train.py
    assert read_settings(["--variants=all"])[0].variants == ["angular", "cosine", "l2_repel", "orthogonal",
                                                              "decorrelation", "entropy"]
    with pytest.raises(ValueError, match="unknown dispersion variant"):
        read_settings(["--variants=angualr"])
    with pytest.raises(ValueError, match="unknown setting 'iter'"):
        read_settings(["--iter=3"])


def test_unknown_device_reports_no_mfu():
    s = SimpleNamespace(peak_tflops=0.0)
    assert peak_flop_rate(s, "cpu") == (None, None)
    s.peak_tflops = 2.0
    assert peak_flop_rate(s, "cpu") == (2e12, "--peak_tflops")
    row = dict(setting="off", ms=10.0, ratio=1.0, tokens_per_s=100.0, peak_mem_mb=None, tflops=0.1, mfu=None,
               spread=0.0)
    assert training_table([row])[-1] == "| off | 10.0 | 1.000 | 100 | n/a | 0.1 | n/a | 0% |"


def test_error_is_one_clear_line(tmp_path):
    command = [sys.executable, "-m", "scripts.bench", "--variants=angualr", f"--save={tmp_path}/b"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and result.stderr.strip().count("\n") == 0
    assert "unknown dispersion variant" in result.stderr and "Traceback" not in result.stderr
