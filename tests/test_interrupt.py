"""A run stopped by Ctrl-C (SIGINT) or SIGTERM, at any moment, ends in one sentence on stderr: where it
stopped, which checkpoint is intact, and the command that continues; the exit code is 128 + the signal, and no
temporary file is left. And what a crash leaves in metrics.jsonl, a last line cut short, does not block the
resume.

    python -m pytest tests/test_interrupt.py -q

The signals go to real training subprocesses, sent once the run has printed the line the test waits for (or,
for a checkpoint write, once the write has begun and is held open by the test's harness): what is checked is
what the run says and leaves, never how long anything took.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condense.checkpoint import checkpoint_iteration
from tests.test_train import ENV, REPO, TINY, read_metrics, train

LONG = [*TINY, "--max_iters=100000", "--log_interval=1"]  # stopped long before its end


def start(out_dir, data_dir, *args, launcher=(sys.executable,), script=None):
    """Start train.py (or a harness that runs it) in the background, in a session of its own."""
    command = [sys.executable, "-c", script] if script else [*launcher, "train.py"]
    return subprocess.Popen([*command, *LONG, f"--data_dir={data_dir}", f"--out_dir={out_dir}", *args],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_step(p, at_least):
    """Read the run's output until it has logged a step at or after iteration at_least."""
    for line in p.stdout:
        m = re.match(r"iter (\d+)/\d+ \(", line)
        if m and int(m.group(1)) >= at_least:
            return
    raise AssertionError(f"the run ended first: {p.stderr.read()[-3000:]}")


def finish(p):
    """(exit code, stderr) once the stopped run has ended."""
    p.stdout.read()
    return p.wait(timeout=120), p.stderr.read()


@pytest.mark.parametrize("how, code, name", [(signal.SIGINT, 130, "Ctrl-C"),
                                             (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_mid_run_names_the_intact_checkpoint_and_the_command(data_dir, tmp_path, how, code, name):
    out_dir = tmp_path / "out"
    p = start(out_dir, data_dir)
    wait_for_step(p, 8)  # the checkpoint at 6 is written
    p.send_signal(how)
    returncode, stderr = finish(p)
    saved = checkpoint_iteration(str(out_dir / "ckpt.pt"))
    assert returncode == code and "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    where = re.escape(str(out_dir))
    assert re.fullmatch(rf"stopped at iteration \d+ by {name}; {where}/ckpt.pt \(iteration {saved}\) is "
                        r"intact; continue with: python train.py .* --init_from=resume", last), last
    assert saved >= 6 and saved % 6 == 0 and not (out_dir / "ckpt.pt.tmp").exists()
    # the command it gives continues the run (here only to a near end)
    command = last.split("continue with: ")[1].split() + ["--max_iters=" + str(saved + 2)]
    result = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_iteration(str(out_dir / "ckpt.pt")) == saved + 2


# train.py with torch.save's file made slow from the second checkpoint on: once part of the checkpoint is
# written the writer marks it (out_dir/writing) and waits, so the test's signal arrives in the middle of it.
SLOW_SAVE = """
import os, runpy, sys, time, torch
real_save, saves = torch.save, []
def save_slowly(obj, f, *args, **kwargs):
    saves.append(1)
    class HeldOpen:
        def write(self, data):
            n = f.write(data)
            if len(saves) > 1 and f.tell() > 4096:
                open(os.path.join(os.path.dirname(f.name), "writing"), "w").close()
                time.sleep(600)  # the test's signal ends this
            return n
        def flush(self):
            f.flush()
    real_save(obj, HeldOpen(), *args, **kwargs)
torch.save = save_slowly
sys.path.insert(0, ".")
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_ctrl_c_during_a_checkpoint_write_keeps_the_previous_one_and_removes_the_temporary_file(data_dir,
                                                                                             tmp_path):
    out_dir = tmp_path / "out"
    p = start(out_dir, data_dir, script=SLOW_SAVE)
    while not (out_dir / "writing").exists():  # the second checkpoint (at 12) is being written
        assert p.poll() is None, p.stderr.read()[-3000:]
        time.sleep(0.1)  # (the run prints nothing while it waits in the write)
    assert (out_dir / "ckpt.pt.tmp").exists()
    p.send_signal(signal.SIGINT)
    returncode, stderr = finish(p)
    assert returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(
        f"stopped at iteration 12 by Ctrl-C; {out_dir}/ckpt.pt (iteration 6) is intact; continue with: ")
    assert "could not write" not in stderr  # not blamed on the disk
    assert not (out_dir / "ckpt.pt.tmp").exists() and checkpoint_iteration(str(out_dir / "ckpt.pt")) == 6


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_continue(data_dir, tmp_path):
    p = start(tmp_path / "out", data_dir, "--eval_interval=1000")
    wait_for_step(p, 1)
    p.send_signal(signal.SIGINT)
    returncode, stderr = finish(p)
    assert returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert re.fullmatch(r"stopped at iteration \d+ by Ctrl-C, before the first checkpoint; nothing to "
                        r"continue from: start again with python train.py .*--eval_interval=1000",
                        stderr.strip().splitlines()[-1])


def test_ctrl_c_stops_every_ddp_process_together(data_dir, tmp_path):
    """Ctrl-C in a terminal reaches every process of the foreground group: torchrun and both ranks. All stop;
    rank 0 says where, and neither rank prints a traceback. (torchrun prints its own, of its SignalException,
    after them: the launcher's way, outside train.py.)"""
    out_dir = tmp_path / "two"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    p = start(out_dir, data_dir, "--gradient_accumulation_steps=2", launcher=launcher)
    wait_for_step(p, 8)
    os.killpg(p.pid, signal.SIGINT)
    returncode, stderr = finish(p)
    stops = [line for line in stderr.splitlines() if line.startswith("stopped at iteration")]
    assert returncode != 0 and len(stops) == 1, stderr[-3000:]
    assert "(iteration" in stops[0] and "continue with: torchrun --nproc_per_node=2 train.py" in stops[0]
    assert 'train.py", line' not in stderr and "[rank" not in stderr, stderr[-3000:]  # no rank's traceback


def test_a_cut_short_last_line_of_metrics_is_dropped_on_resume_with_a_note(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    train(out_dir, data_dir, "--max_iters=6")
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write('{"iter": 6, "loss": 2.5, "ce"')  # what a crash in the middle of a write leaves
    result = train(out_dir, data_dir, "--init_from=resume", "--max_iters=8")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: dropped the last line")]
    assert len(notes) == 1 and "Traceback" not in result.stderr
    steps, evals = read_metrics(out_dir)  # every line reads again
    assert sorted(steps) == list(range(8)) and sorted(evals) == [0, 6, 8]


def test_a_damaged_line_in_the_middle_of_metrics_refuses_naming_it(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    train(out_dir, data_dir, "--max_iters=6")
    lines = (out_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2] = "not json\n"
    (out_dir / "metrics.jsonl").write_text("".join(lines))
    result = train(out_dir, data_dir, "--init_from=resume", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: line 3 of {out_dir}/metrics.jsonl is damaged (not JSON), and lines after it are not; fix or "
        "delete that line.")
    assert (out_dir / "metrics.jsonl").read_text() == "".join(lines)  # nothing changed
    assert checkpoint_iteration(str(out_dir / "ckpt.pt")) == 6


def test_history_drops_a_cut_short_last_line_with_a_note(data_dir, tmp_path, capsys):
    from measure import main
    out_dir = tmp_path / "out"
    train(out_dir, data_dir, "--max_iters=6", "--track_sequences=4")
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write('{"iter": 6, "lo')
    main([f"--history={out_dir}"])
    err = capsys.readouterr().err
    assert err.count("note: dropped the last line") == 1 and (out_dir / "history.png").stat().st_size > 0


def test_an_out_dir_removed_during_the_run_ends_in_one_sentence(data_dir, tmp_path):
    import shutil
    out_dir = tmp_path / "out"
    p = start(out_dir, data_dir)
    wait_for_step(p, 2)
    shutil.rmtree(out_dir)
    returncode, stderr = finish(p)
    assert returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert re.fullmatch(rf"error: (cannot write to {re.escape(str(out_dir))}/metrics.jsonl \(No such file or "
                        rf"directory\)|could not write the checkpoint to {re.escape(str(out_dir))}/ckpt.pt): "
                        rf"{re.escape(str(out_dir))} was removed during the run, and its checkpoint with it; "
                        r"start the run again \(nothing is left to continue from\).",
                        stderr.strip().splitlines()[-1]), stderr[-1000:]
