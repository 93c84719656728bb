"""Training tells you where you are: the log line's iteration / total, percent, elapsed time and ETA; on a CPU
an estimate of the whole run after the first evaluation batches, before any step, with a word when the run is
sized for a GPU; and at the end what was written where and what to run next. Checked by format and by
arithmetic on a clock the test sets, never by how long anything took.

    python -m pytest tests/test_progress.py -q
"""
import re

import pytest

from condense import progress as progress_module
from condense.progress import Progress, duration
from tests.test_train import train


def progress(start_iter, max_iters, eval_interval, eval_iters, device_type, dispersion, args):
    """A Progress for these settings, one micro-batch per step."""
    config = dict(max_iters=max_iters, eval_interval=eval_interval, eval_iters=eval_iters,
                  dispersion_weight=0.1 * dispersion)
    return Progress(config, start_iter, 1, device_type, args)

STEP = re.compile(r"iter (\d+)/12 \((\d+\.\d)%\): loss \d+\.\d{4} \(ce \d+\.\d{4}, disp -?\d+\.\d{4}\), "
                  r"lr \d\.\d\de-\d\d, \d+ ms/iter, [\d,]+ tok/s, elapsed (<1s|\d+s|\d+m\d\ds), "
                  r"eta (<1s|\d+s|\d+m\d\ds)")


def test_the_log_tells_where_the_run_is_how_long_it_has_left_and_what_comes_next(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    lines = train(out_dir, data_dir).stdout.splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("iter 0: evaluating, about "))
    assert estimate < lines.index(next(line for line in lines if line.startswith("iter 0: train loss")))
    assert re.fullmatch(r"iter 0: evaluating, about \S+; then 12 steps: the whole run about \S+ on this CPU "
                        r"\(estimated from the second evaluation batch, \d+\.\d{3} s, a training step "
                        r"counted as 3 forward passes\)", lines[estimate])
    steps = [STEP.fullmatch(line) for line in lines if re.match(r"iter \d+/", line)]
    assert all(steps) and [int(m.group(1)) for m in steps] == list(range(12))
    assert [float(m.group(2)) for m in steps] == [round(100 * (i + 1) / 12, 1) for i in range(12)]
    where = re.escape(str(out_dir))
    assert re.fullmatch(rf"done: iterations 0 to 12 in \S+; best val loss \d\.\d{{4}}; {where}/ holds "
                        r"ckpt.pt \(iteration 12\), metrics.jsonl and config.json", lines[-3])
    assert lines[-2].startswith(f"next: python measure.py --out_dir={out_dir} ")
    assert lines[-1].strip().startswith(f"python sample.py --out_dir={out_dir} ")


@pytest.fixture
def clock(monkeypatch):
    """time.perf_counter as condense/progress.py sees it: a number the test moves."""
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    return now


def test_a_gpu_sized_run_on_a_cpu_says_so_up_front_with_the_estimate_and_the_config_that_fits(clock, capsys):
    # small_disp's shape: 2,000 steps, evaluations every 200 of 2 x 20 batches, one micro-batch per step
    p = progress(0, 2000, 200, 20, "cpu", True, ["config/small_disp.py"])
    p.start_evaluation(0)
    for seconds in (30.0, 9.6, 9.8):  # the first batch warms up; the second counts
        clock[0] += seconds
        p.batch_evaluated()  # said once, after the third
    printed = capsys.readouterr().out.splitlines()
    # 11 evaluations of 40 x 9.6 s, and 2,000 steps of 3 x 9.6 s: 4,224 + 57,600 s = 17h10m
    assert printed == ["note: this run takes about 17h10m on this CPU (estimated from the second "
                       "evaluation batch, 9.600 s, a training step counted as 3 forward passes); it is sized "
                       "for a GPU: on a CPU, train config/tiny_disp.py instead (README, Quick start)"]


def test_the_cpu_config_itself_is_not_suggested_and_a_gpu_gets_no_estimate(clock, capsys):
    p = progress(0, 2000, 200, 20, "cpu", False, ["config/tiny_base.py", "--n_layer=24"])
    p.start_evaluation(0)
    for _ in range(2):
        clock[0] += 9.6
        p.batch_evaluated()
    assert "lower max_iters, or the model's size" in capsys.readouterr().out
    gpu = progress(0, 2000, 200, 20, "cuda", True, [])
    gpu.start_evaluation(0)
    for _ in range(3):
        clock[0] += 9.6  # a GPU works asynchronously: this would not be the batch's time
        gpu.batch_evaluated()
    gpu.line(0, 30000.0)  # nor does a slow step on a GPU draw the CPU note
    assert capsys.readouterr().out == ""


def test_a_resume_on_a_cpu_is_estimated_from_its_first_step(clock, capsys):
    p = progress(1000, 2000, 200, 20, "cpu", True, [])
    p.evaluated(384.0)  # not this run's: set so that the ETA's evaluation share shows
    head, tail = p.line(1000, 30000.0)
    assert head == "iter 1000/2000 (50.0%)"
    # 999 steps of 30 s and 5 evaluations (1200, ..., 2000) of 384 s: 31,890 s
    assert tail == ", elapsed <1s, eta 8h51m"
    assert capsys.readouterr().out.startswith("note: this run takes about 8h51m on this CPU (estimated from "
                                              "the pace of iteration 1000, 30000 ms)")
    assert progress(1000, 1100, 200, 20, "cpu", True, []).line(1000, 30000.0)  # 50 min: not for a GPU
    assert capsys.readouterr().out == ""
    p.line(1001, 30000.0)
    assert capsys.readouterr().out == ""  # once


@pytest.mark.parametrize("it, max_iters, every, left", [(0, 12, 6, 2), (5, 12, 6, 2), (6, 12, 6, 1),
                                                         (11, 12, 6, 1), (0, 10, 6, 2), (6, 10, 6, 1)])
def test_evaluations_after(it, max_iters, every, left):
    """train.py evaluates at every multiple of eval_interval and at max_iters."""
    expected = len({i for i in range(it + 1, max_iters + 1) if i % every == 0 or i == max_iters})
    assert progress(0, max_iters, every, 1, "cpu", False, []).evaluations_after(it) == left == expected


@pytest.mark.parametrize("seconds, text", [(0.3, "<1s"), (42, "42s"), (187, "3m07s"), (7500, "2h05m")])
def test_duration(seconds, text):
    assert duration(seconds) == text
