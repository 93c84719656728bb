"""Tests for train.py, run as a user runs it (a subprocess in the repo root) on a tiny model and data set.

    python -m pytest tests/test_train.py -q

The data set is made from a few kilobytes of generated text in a temporary folder (--data_dir), so nothing is
downloaded. Subprocesses run with one thread (OMP_NUM_THREADS=1): for a model this small that is the fastest
setting, and it keeps a shared machine's other work from slowing each step a hundredfold.
"""
import ast
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from condense.checkpoint import load_checkpoint, model_from_checkpoint

from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# 2 layers of width 32, 32-token windows, 4 per batch: about 10 ms a step. Warm-up 3 steps, cosine to step 10.
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
        "--eval_interval=6", "--log_interval=1", "--warmup_iters=3", "--lr_decay_iters=10",
        "--learning_rate=1e-2", "--min_lr=1e-3", "--dropout=0.1", "--track_sequences=0", "--device=cpu",
        "--compile=False", "--max_iters=12"]


def train(out_dir, data_dir, *args, check=True, script=None):
    """Run train.py (or a harness script given as text, which runs train.py itself) with the tiny settings."""
    command = [sys.executable, "-c", script] if script else [sys.executable, "train.py"]
    result = subprocess.run([*command, *TINY, f"--data_dir={data_dir}", f"--out_dir={out_dir}", *args],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_metrics(out_dir):
    """(step records by iteration, evaluation records by iteration) from out_dir/metrics.jsonl."""
    records = [json.loads(line) for line in Path(out_dir, "metrics.jsonl").read_text().splitlines()]
    steps = {r["iter"]: r for r in records if "loss" in r}
    evals = {r["iter"]: r for r in records if "val_loss" in r}
    assert len(steps) + len(evals) == len(records)  # no iteration logged twice
    return steps, evals


def weights(out_dir):
    return load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["model"]


def assert_clean_error(result, *words):
    """A non-zero exit with one line on stderr, no traceback, holding every one of words."""
    message = result.stderr.strip()
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert all(w in message for w in words), message


@pytest.fixture(scope="module")
def base_run(data_dir, tmp_path_factory):
    """12 iterations of the tiny model with dropout, evaluated and saved at 6 and 12, every step logged."""
    out_dir = tmp_path_factory.mktemp("base") / "out"
    train(out_dir, data_dir)
    return out_dir


def copy_run(run, tmp_path):
    return shutil.copytree(run, tmp_path / "out")


def test_learning_rate_schedule(base_run):
    lr = {it: r["lr"] for it, r in read_metrics(base_run)[0].items()}
    assert sorted(lr) == list(range(12))
    assert lr[0] == pytest.approx(1e-2 / 4)  # warm-up starts at learning_rate / (warmup_iters + 1), not 0
    assert lr[1] == pytest.approx(2e-2 / 4) and lr[2] == pytest.approx(3e-2 / 4)
    assert lr[3] == pytest.approx(1e-2)  # the end of warm-up: the peak
    assert lr[3] > lr[4] > lr[6] > lr[9] > 1e-3  # cosine decay
    assert lr[6] == pytest.approx(1e-3 + 0.5 * (1 + math.cos(math.pi * 3 / 7)) * 9e-3)
    assert lr[10] == lr[11] == pytest.approx(1e-3)  # at and after lr_decay_iters: min_lr


def test_metrics_and_config(base_run):
    steps, evals = read_metrics(base_run)
    for r in steps.values():
        assert {"iter", "loss", "ce", "dispersion", "lr", "ms", "tokens_per_s"} <= set(r)
        assert r["ms"] > 0 and r["tokens_per_s"] == pytest.approx(4 * 32 / (r["ms"] / 1000))
        assert r["loss"] == r["ce"] and r["dispersion"] == 0.0  # no dispersion loss in this run
    assert sorted(evals) == [0, 6, 12]
    first, last = evals[0], evals[12]
    assert abs(first["val_loss"] - math.log(64)) < 0.2  # a fresh model: about uniform over the 64 padded ids
    assert last["train_loss"] < first["train_loss"] - 0.5 and last["val_loss"] < first["val_loss"] - 0.5
    assert steps[11]["loss"] < steps[0]["loss"] - 0.5
    config = json.loads(Path(base_run, "config.json").read_text())
    assert config["n_embd"] == 32 and config["max_iters"] == 12 and config["dropout"] == 0.1  # the overrides
    assert config["beta2"] == 0.95 and config["dataset"] == "shakespeare_char"  # untouched defaults
    assert config["dtype"] == "float32" and config["compile"] is False  # resolved values, not ""
    ckpt = load_checkpoint(os.path.join(base_run, "ckpt.pt"))
    assert ckpt["iter_num"] == 12 and ckpt["config"] == config
    assert ckpt["best_val_loss"] == min(evals[6]["val_loss"], evals[12]["val_loss"])
    assert ckpt["model_args"]["vocab_size"] == 64 and ckpt["model_args"]["n_embd"] == 32


def test_settings_are_exactly_the_module_level_names(base_run):
    """config.json holds every module-level assignment of a lower-case name in settings.py (what defaults()
    collects) and nothing else; the upper-case ones (RULES, ...) are not settings."""
    tree = ast.parse(Path(REPO, "settings.py").read_text())
    names = [node.targets[0].id for node in tree.body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
             and node.targets[0].id.islower()]
    config = json.loads(Path(base_run, "config.json").read_text())
    assert sorted(config) == sorted(names) and len(names) > 30


def test_checkpoint_holds_what_a_resume_needs(base_run):
    ckpt = torch.load(os.path.join(base_run, "ckpt.pt"), weights_only=True)  # plain tensors and values only
    assert ({"model", "optimizer", "scaler", "model_args", "iter_num", "best_val_loss", "config", "rng"}
            <= set(ckpt))
    assert len(ckpt["rng"]["torch"]) == 1 and ckpt["rng"]["batch"].dtype == torch.uint8
    model = model_from_checkpoint(ckpt)
    assert model.config.n_layer == 2 and model.config.dropout == 0.1
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])


def test_resume_is_exact(base_run, data_dir, tmp_path):
    """6 steps, then a resume to 12, log the same losses and end with the same weights as 12 steps in one go.
    Dropout is on, so this also needs the random state to be restored; a resume with another random state
    (the second half of the test) logs different losses, which shows the comparison can tell."""
    half = tmp_path / "half"
    train(half, data_dir, "--max_iters=6")
    tampered = shutil.copytree(half, tmp_path / "tampered")
    train(half, data_dir, "--init_from=resume")  # --max_iters=12 comes with TINY
    steps, evals = read_metrics(half)
    base_steps, base_evals = read_metrics(base_run)
    assert [steps[i]["loss"] for i in range(6, 12)] == [base_steps[i]["loss"] for i in range(6, 12)]
    assert evals[12] == base_evals[12]
    assert sorted(evals) == [0, 6, 12]  # the resume did not evaluate iteration 6 a second time
    ours, theirs = weights(half), weights(base_run)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)

    ckpt = torch.load(tampered / "ckpt.pt", weights_only=True)
    ckpt["rng"]["torch"] = [torch.Generator().manual_seed(999).get_state()]
    torch.save(ckpt, tampered / "ckpt.pt")
    train(tampered, data_dir, "--init_from=resume")
    assert read_metrics(tampered)[0][6]["loss"] != base_steps[6]["loss"]


# Where no small disk can be mounted (see below): train.py in this interpreter with torch.save replaced by one
# that writes the first bytes into the file train.py opened and then has the real torch.save write to
# /dev/full, a device that is always full. (Given a path, not a file object, the first write fails the test.)
FULL_DISK_SAVE = """
import runpy, sys, torch
real_save = torch.save
def save_onto_a_full_disk(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04 the first bytes of a zip file, and then nothing")
    with open("/dev/full", "wb") as full:
        real_save(obj, full, *args, **kwargs)
torch.save = save_onto_a_full_disk
sys.path.insert(0, ".")
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_resume_after_a_crash_logs_each_iteration_once(base_run, data_dir, tmp_path):
    """A run that died after its checkpoint at 6 had logged steps 6..8 and an evaluation at 9; resuming from 6
    replaces those lines, adding no second copy, and ends with the same log as the run straight through."""
    out_dir = tmp_path / "crashed"
    train(out_dir, data_dir, "--max_iters=6")
    saved = (out_dir / "ckpt.pt").read_bytes()
    train(out_dir, data_dir, "--init_from=resume", "--max_iters=9")  # the part the crash will undo
    (out_dir / "ckpt.pt").write_bytes(saved)  # as if it had died before writing a checkpoint after 6
    train(out_dir, data_dir, "--init_from=resume")
    steps, evals = read_metrics(out_dir)  # asserts that no iteration is logged twice
    base_steps, base_evals = read_metrics(base_run)
    assert sorted(steps) == sorted(base_steps) and sorted(evals) == [0, 6, 12]
    assert [steps[i]["loss"] for i in sorted(steps)] == [base_steps[i]["loss"] for i in sorted(base_steps)]


def can_mount_a_disk(folder):
    """True if this process may mount a tmpfs in a private mount namespace (root or CAP_SYS_ADMIN, Linux)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux (unshare and tmpfs, or /dev/full)")
def test_full_disk_while_saving_keeps_the_previous_checkpoint(base_run, data_dir, tmp_path):
    """A run resumed on a disk with room for its files and half a checkpoint more: the save at 18 fails, and
    the previous checkpoint stays as it was. The disk is a real tmpfs in a mount namespace of its own (gone
    when the command ends, so the folder is copied out first); where none can be mounted, /dev/full does."""
    before = (base_run / "ckpt.pt").read_bytes()
    disk, out_dir = tmp_path / "disk", tmp_path / "after"
    disk.mkdir()
    if can_mount_a_disk(disk):
        # tmpfs counts whole pages
        used = sum(4096 * math.ceil(p.stat().st_size / 4096) for p in base_run.iterdir())
        command = [sys.executable, "train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={disk / 'out'}",
                   "--init_from=resume", "--max_iters=18"]
        script = (f"mount -t tmpfs -o size={used + len(before) // 2} tmpfs {disk}"
                  f" && cp -r {base_run} {disk / 'out'}"
                  f" && {shlex.join(command)}; status=$?; cp -r {disk / 'out'} {out_dir}; exit $status")
        result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, env=ENV, capture_output=True,
                                text=True, timeout=300)
    else:
        copy_run(base_run, tmp_path)
        out_dir = tmp_path / "out"
        result = train(out_dir, data_dir, "--init_from=resume", "--max_iters=18", script=FULL_DISK_SAVE,
                       check=False)
    assert_clean_error(result, "could not write the checkpoint", "No space left on device",
                       "--init_from=resume")
    assert read_metrics(out_dir)[1][18]  # it got as far as the evaluation before the save
    assert (out_dir / "ckpt.pt").read_bytes() == before
    assert not (out_dir / "ckpt.pt.tmp").exists()  # the partial write went to a side file, removed after
    assert torch.load(out_dir / "ckpt.pt", weights_only=True)["iter_num"] == 12


def test_two_processes_match_one(data_dir, tmp_path):
    """DDP with 2 gloo processes, each running 1 of the 2 micro-batches of a step, trains the same weights
    as 1 process running both micro-batches, and logs the loss of the whole batch. Active forgetting at step 4
    must re-draw the same embedding in every process."""
    args = ["--dropout=0.0", "--gradient_accumulation_steps=2", "--max_iters=6", "--eval_interval=3",
            "--forget_every=4"]
    train(tmp_path / "one", data_dir, *args)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'two'}", *args]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4) for k in one)
    steps_one, steps_two = read_metrics(tmp_path / "one")[0], read_metrics(tmp_path / "two")[0]
    assert ([steps_two[i]["loss"] for i in range(6)]
            == pytest.approx([steps_one[i]["loss"] for i in range(6)], abs=1e-5))
    rng = load_checkpoint(os.path.join(tmp_path, "two", "ckpt.pt"))["rng"]["torch"]
    assert len(rng) == 2 and not torch.equal(rng[0], rng[1])  # each process's own dropout stream is kept


def test_two_processes_stop_together_on_an_error(data_dir, tmp_path):
    """An error under DDP (here the non-finite stop, which every process reaches at the same step) ends both
    processes with one error line from rank 0, printed before either ends: no abort at exit, no traceback,
    no hang."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'two'}",
               "--gradient_accumulation_steps=2", "--learning_rate=1e6", "--min_lr=1e6", "--max_iters=40"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-finite by iteration" in errors[0], result.stderr[-3000:]
    assert "[rank" not in result.stderr  # no process printed a traceback
    assert "terminate called" not in result.stderr and "SIGABRT" not in result.stderr  # nor aborted at exit


def test_tiny_base_config_runs(data_dir, tmp_path):
    out_dir = tmp_path / "tiny_base"
    out_dir.mkdir()  # as if an earlier run had died before its first checkpoint: its lines must not stay
    (out_dir / "metrics.jsonl").write_text('{"iter": 99, "loss": 1.0}\n')
    train(out_dir, data_dir, "config/tiny_base.py", "--n_layer=2", "--n_head=2", "--n_embd=32",
          "--block_size=32", "--batch_size=4", "--max_iters=4", "--eval_interval=2", "--log_interval=1",
          "--eval_iters=2", f"--out_dir={out_dir}")  # after the file, so these win over its values
    config = json.loads((out_dir / "config.json").read_text())
    assert config["learning_rate"] == 2e-3 and config["warmup_iters"] == 50  # from the file
    assert config["n_layer"] == 2 and config["max_iters"] == 4  # overrides after it
    steps, evals = read_metrics(out_dir)
    assert sorted(evals) == [0, 2, 4] and sorted(steps) == [0, 1, 2, 3]
    assert steps[3]["lr"] == pytest.approx(2e-3 * 4 / 51)  # still warming up
    assert evals[4]["val_loss"] < evals[0]["val_loss"]
    assert load_checkpoint(str(out_dir / "ckpt.pt"))["iter_num"] == 4


def test_error_missing_data(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "--dataset=no_such_data_set_here",
                             f"--out_dir={tmp_path}"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert_clean_error(result, "'no_such_data_set_here' is not prepared", "prepare_text.py")
    assert not Path(REPO, "data", "no_such_data_set_here").exists()
    result = subprocess.run([sys.executable, "train.py", f"--data_dir={tmp_path / 'nothing'}",
                             f"--out_dir={tmp_path}"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert_clean_error(result, "holds no prepared data set")


def test_resume_applies_this_runs_optimizer_settings(base_run, data_dir, tmp_path):
    """The optimizer's moments come from the checkpoint, its weight decay and betas from this run's settings
    (optimizer.load_state_dict alone would silently bring back the saved ones)."""
    out_dir = copy_run(base_run, tmp_path)
    saved = torch.load(out_dir / "ckpt.pt", weights_only=True)["optimizer"]
    assert saved["param_groups"][0]["weight_decay"] > 0 and saved["param_groups"][0]["betas"][1] != 0.9
    result = train(out_dir, data_dir, "--init_from=resume", "--max_iters=13", "--weight_decay=0.0",
                   "--beta2=0.9")
    assert "weight_decay 0.1 -> 0.0, beta2 0.95 -> 0.9" in result.stdout
    groups = torch.load(out_dir / "ckpt.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0] and all(g["betas"] == (0.9, 0.9) for g in groups)


def test_error_unknown_setting(data_dir, tmp_path):  # every other configurator error: test_configurator.py
    assert_clean_error(train(tmp_path, data_dir, "--n_layers=3", check=False), "'n_layers'", "n_layer")


# more corrupt files: test_model.py
def test_error_corrupt_checkpoint_on_resume(base_run, data_dir, tmp_path):
    out_dir = copy_run(base_run, tmp_path)
    data = (out_dir / "ckpt.pt").read_bytes()
    (out_dir / "ckpt.pt").write_bytes(data[:len(data) // 3])
    assert_clean_error(train(out_dir, data_dir, "--init_from=resume", check=False), "cannot read checkpoint")


@pytest.mark.parametrize("change, words", [
    ("--n_embd=64", ["n_embd=32", "settings say 64"]),
    ("--mlp_dim=64", ["mlp_dim=0", "settings say 64"]),
])
def test_error_resume_with_another_model_shape(base_run, data_dir, tmp_path, change, words):
    out_dir = copy_run(base_run, tmp_path)
    assert_clean_error(train(out_dir, data_dir, "--init_from=resume", change, check=False), *words)


def test_error_out_dir_cannot_be_written(data_dir, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = train(tmp_path / "a_file" / "run", data_dir, check=False)
    assert_clean_error(result, "cannot write to out_dir", "Not a directory")


def test_scratch_run_never_overwrites_a_checkpoint(base_run, data_dir, tmp_path):
    out_dir = copy_run(base_run, tmp_path)
    files = {name: (out_dir / name).read_bytes() for name in ("ckpt.pt", "metrics.jsonl", "config.json")}
    assert_clean_error(train(out_dir, data_dir, check=False), "already exists", "--init_from=resume")
    assert all((out_dir / name).read_bytes() == content for name, content in files.items())


def test_one_run_at_a_time_per_out_dir(base_run, data_dir, tmp_path):
    """While a process holds out_dir/train.lock (here this test, as a running run would), a second run stops
    before it touches the folder; once the lock is let go, the folder is free again."""
    fcntl = pytest.importorskip("fcntl")
    out_dir = copy_run(base_run, tmp_path)
    with open(out_dir / "train.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate(0)  # the copied run left its own line there
        lock.write("process 4242 on somehost")
        lock.flush()
        files = {p.name: p.read_bytes() for p in out_dir.iterdir()}
        result = train(out_dir, data_dir, "--init_from=resume", "--max_iters=13", check=False)
        assert_clean_error(result, "another run (process 4242 on somehost)", "--out_dir")
        assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == files  # nothing changed, no file added
    train(out_dir, data_dir, "--init_from=resume", "--max_iters=13")  # a lock file left behind is no lock
    assert (out_dir / "train.lock").read_text().startswith("process ")  # the new holder's line, not 4242
    assert "4242" not in (out_dir / "train.lock").read_text()


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(base_run, data_dir, tmp_path):
    """A learning rate of 1e6 turns the weights into inf/nan within a few steps. The step losses are only
    checked every log_interval (here: never), so the evaluation at 18 has to catch it, before the condensation
    tracking (whose eigendecomposition raises on NaN) and before it saves."""
    out_dir = copy_run(base_run, tmp_path)
    before = (out_dir / "ckpt.pt").read_bytes()
    result = train(out_dir, data_dir, "--init_from=resume", "--max_iters=24", "--learning_rate=1e6",
                   "--min_lr=1e6", "--log_interval=1000", "--track_sequences=4", check=False)
    assert_clean_error(result, "non-finite by iteration 18", "last good checkpoint")
    assert (out_dir / "ckpt.pt").read_bytes() == before
    assert load_checkpoint(str(out_dir / "ckpt.pt"))["iter_num"] == 12
    assert 18 not in read_metrics(out_dir)[1]


# ---- dispersion and the paper's baselines during training


def test_dispersion_is_logged_apart_from_cross_entropy(base_run, data_dir, tmp_path):
    out_dir = tmp_path / "disp"
    train(out_dir, data_dir, "--dispersion_weight=0.5", "--dispersion_layers=all", "--track_sequences=4")
    steps, evals = read_metrics(out_dir)
    base_steps = read_metrics(base_run)[0]
    for r in steps.values():
        assert -1.0 <= r["dispersion"] <= -0.14  # angular: -0.144 fully condensed, -0.5 orthogonal
        assert r["loss"] == pytest.approx(r["ce"] + 0.5 * r["dispersion"])
    # same model, batch and dropout: "ce" is the plain cross-entropy
    assert steps[0]["ce"] == base_steps[0]["loss"]
    assert steps[5]["ce"] != base_steps[5]["loss"]  # the dispersion term changed the training
    for r in evals.values():  # condensation tracked at each evaluation (measure.py)
        assert len(r["mean_cos"]) == 3 and all(-1 <= c <= 1 for c in r["mean_cos"])
        assert -1 <= r["spearman"] <= 1


def test_dispersion_weight_zero_is_the_run_without_dispersion(base_run, data_dir, tmp_path):
    out_dir = tmp_path / "zero"
    train(out_dir, data_dir, "--dispersion_weight=0", "--dispersion_variant=entropy",
          "--dispersion_layers=last", "--dispersion_tokens=4")
    ours, theirs = weights(out_dir), weights(base_run)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    losses = lambda run: {it: r["loss"] for it, r in read_metrics(run)[0].items()}
    assert losses(out_dir) == losses(base_run)


def test_dispersion_lowers_late_layer_condensation(data_dir, tmp_path):
    """The effect the method promises: a tiny model trained with the paper's setting (angular, all layers,
    weight 0.1) ends with a lower mean off-diagonal cosine in the late half of the layers than the same seed
    without it."""
    shape = ["--n_layer=4", "--max_iters=60", "--eval_interval=60", "--lr_decay_iters=60", "--warmup_iters=5",
             "--learning_rate=2e-3", "--min_lr=2e-4", "--batch_size=8", "--dropout=0", "--track_sequences=8"]
    late = {}
    for weight in (0, 0.1):
        out_dir = tmp_path / f"w{weight}"
        train(out_dir, data_dir, *shape, f"--dispersion_weight={weight}")
        mean_cos = read_metrics(out_dir)[1][60]["mean_cos"]  # the final evaluation, entries 0..4
        late[weight] = sum(mean_cos[3:]) / 2
    assert late[0.1] < late[0] - 0.05


def adam_steps(out_dir):
    """AdamW's step count per parameter name in the checkpoint (the optimizer's params follow its groups)."""
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))
    model = GPT(GPTConfig(**ckpt["model_args"]))
    named = list(model.named_parameters())
    # the order of configure_optimizers' groups
    order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
    return {order[i]: int(s["step"]) for i, s in ckpt["optimizer"]["state"].items()}


def test_active_forgetting_resets_the_embedding_at_the_right_steps(base_run, data_dir, tmp_path):
    """forget_every=4 over 11 steps re-draws wte before steps 4 and 8 and drops its AdamW state, so at the end
    wte has 3 AdamW steps behind it (8, 9, 10) and every other parameter 11."""
    out_dir = tmp_path / "forget"
    train(out_dir, data_dir, "--forget_every=4", "--max_iters=11", "--eval_interval=100")
    steps = adam_steps(out_dir)
    assert steps.pop("transformer.wte.weight") == 3
    assert set(steps.values()) == {11}
    # re-drawn at std 0.02 three small steps ago, while training without forgetting spreads it out (0.048)
    assert (weights(out_dir)["transformer.wte.weight"].std() < 0.025
            < weights(base_run)["transformer.wte.weight"].std())


# Runs train.py with GPT.from_pretrained answering with a small random transformers GPT-2 (no download).
FAKE_GPT2 = """
import json, runpy, sys, torch, transformers
sys.path.insert(0, ".")
import model
def tiny_gpt2(cls, name):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return cls.from_hf(transformers.GPT2LMHeadModel(config))
model.GPT.from_pretrained = classmethod(tiny_gpt2)
sys.argv = ["train.py", *sys.argv[1:]]
g = runpy.run_path("train.py", run_name="__main__")
print("DROPOUT", json.dumps(sorted({m.p for m in g["raw_model"].modules()
                                    if isinstance(m, torch.nn.Dropout)})))
"""


def test_init_from_gpt2_crops_positions_applies_dropout_and_resumes(data_dir, tmp_path):
    out_dir = tmp_path / "gpt2"
    result = train(out_dir, data_dir, "--init_from=gpt2", "--max_iters=2", "--eval_interval=2",
                   script=FAKE_GPT2)
    assert "DROPOUT [0.1]" in result.stdout  # the settings' dropout, not GPT-2's 0.0
    ckpt = load_checkpoint(str(out_dir / "ckpt.pt"))
    assert ckpt["model"]["transformer.wpe.weight"].shape == (32, 32)  # the first block_size of 64 positions
    assert ckpt["model_args"]["block_size"] == 32 and ckpt["model_args"]["bias"] is True
    train(out_dir, data_dir, "--init_from=resume", "--max_iters=4", "--eval_interval=2")
    assert sorted(read_metrics(out_dir)[1]) == [0, 2, 4]
