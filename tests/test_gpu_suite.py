"""Tests of scripts/gpu_suite.py (the one-GPU suite), scripts/gpu_report.py and what the suite needs from
train.py: the GPU's stacked dispersion loss, run on a CPU in bf16, against the per-layer loop; and the model
and the stacked loss under torch.compile without graph breaks.

    python -m pytest tests/test_gpu_suite.py -q

The rehearsal test runs `scripts/gpu_suite.py --rehearse` end to end (every step: scripts/bench.py with one
compiled run, scripts/study.py, measure.py) on a tiny data set in a temporary folder; nothing here needs a GPU
or the network.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dispersion import dispersion_loss
from model import GPT, GPTConfig
from scripts import gpu_suite
from scripts.bench import read_settings as bench_settings

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: fastest for these tiny models on a shared machine


def suite_run(*args, script=None, timeout=600):
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "scripts.gpu_suite"]
    return subprocess.run([*command, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def alive(pid):
    """True if process pid exists and is not a zombie (an orphan nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -----------------------------------------------------------------------------
# the rehearsal, end to end


@pytest.fixture(scope="module")
def rehearsal(data_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("suite") / "results"
    result = suite_run("--rehearse", f"--results={results}", f"--data_dir={data_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return results, result.stdout


def test_rehearsal_runs_every_step_and_writes_the_summary(rehearsal):
    results, stdout = rehearsal
    assert stdout.strip().splitlines()[-1] == str(results / "summary.md")  # the last line: the summary's path
    record = json.loads((results / "summary.json").read_text())
    assert {k: v["status"] for k, v in record["steps"].items()} == dict.fromkeys(gpu_suite.STEPS, "done")
    assert [p["status"] for p in record["studies"]] == ["done"]  # the rehearsal's one part of 'studies'
    assert record["facts"]["torch"] == torch.__version__ and (results / "facts.json").exists()
    assert all(r["commands"] for r in record["steps"].values())  # each step says what it ran

    # a. the MFU step: the one compiled run, off only
    mfu = json.loads((results / "mfu" / "bench.json").read_text())
    assert [r["setting"] for r in mfu["training"]] == ["off"] and mfu["training"][0]["ms"] > 0
    assert "compile=True" in (results / "mfu" / "bench.md").read_text()
    # b. measure() on the device (here the CPU, 2 layers, 2 windows); the package is not installed here
    gpu = json.loads((results / "measure" / "bench_measure.json").read_text())["gpu"]
    assert (gpu["device"], gpu["windows"], gpu["layers"], gpu["package"]) == ("cpu", 2, 2, None)
    assert "--authors_python=" in record["steps"]["measure"]["commands"][0]
    assert record["steps"]["measure"]["result"].endswith("x batch 1; package not installed")
    # c. off against angular, in bf16 with the stacked loss
    rows = json.loads((results / "overhead" / "bench.json").read_text())["training"]
    assert [r["setting"] for r in rows] == ["off", "angular"]
    assert rows[1]["ratio"] == pytest.approx(rows[1]["ms"] / rows[0]["ms"])
    # d. small_base and small_disp: the configs' settings with the rehearsal's sizes, the stacked loss in bf16
    runs = results / "gpu_method"
    for run, weight in (("small_base", 0.0), ("small_disp", 0.1)):
        config = json.loads((runs / f"{run}-s1337" / "config.json").read_text())
        assert ((config["dispersion_path"], config["dtype"], config["dispersion_weight"])
                == ("stacked", "bfloat16", weight))
        steps = [r for r in read_jsonl(runs / f"{run}-s1337" / "metrics.jsonl") if "loss" in r]
        assert all((r["dispersion"] != 0) == (weight > 0) for r in steps)  # the loss ran where it was on
    compare = json.loads((results / "full" / "compare.json").read_text())
    assert [r["name"] for r in compare] == ["init 2x32", "small_base-s1337", "small_disp-s1337"]
    assert (results / "full" / "compare.png").stat().st_size > 0
    # e. seed 1 joined seed 1337 in the study's table
    table = json.loads((runs / "results.json").read_text())["runs"]
    assert [[s["seed"] for s in table[r]["seeds"]] for r in ("small_base", "small_disp")] == [[1337, 1]] * 2

    summary = (results / "summary.md").read_text()
    for heading in ("## a. MFU", "## b. Measurement on the GPU", "## c. Dispersion overhead",
                    "## d. small_base and small_disp", "## e. Studies"):
        assert heading in summary
    assert "**measure(), batch 16 in fp32: " in summary and "the package was not installed" in summary
    assert "`python train.py config/small_disp.py --device=cpu" in summary and " differ)" not in summary
    # scripts/gpu_report.py alone writes the same summary from the folder
    report = [sys.executable, "-m", "scripts.gpu_report", str(results)]
    assert subprocess.run(report, cwd=REPO, env=ENV).returncode == 0
    assert (results / "summary.md").read_text() == summary


# -----------------------------------------------------------------------------
# the budget


SLOW_STEP = """
import sys
from scripts import gpu_report, gpu_suite
def slow(suite):  # a command that would outlast the budget, with a child of its own
    suite.run(["-c", "import subprocess, time; p = subprocess.Popen(['sleep', '300']); print('child', p.pid, "
               "flush=True); time.sleep(300)"], "slow")
gpu_suite.STEP_FUNCTIONS["mfu"] = slow
gpu_report.COSTS["rehearsal"].update(start=0, compile_gpt2=0)  # so that it starts
gpu_suite.main(sys.argv[1:])
"""


def test_the_budget_stops_the_running_command_and_skips_what_cannot_finish(data_dir, tmp_path):
    result = suite_run("--rehearse", "--budget=10", "--steps=mfu,full", f"--results={tmp_path}/r",
                       f"--data_dir={data_dir}", script=SLOW_STEP, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"{tmp_path}/r/summary.md"
    steps = json.loads(Path(tmp_path, "r", "summary.json").read_text())["steps"]
    assert steps["mfu"]["status"] == "stopped at the budget" and steps["mfu"]["wall"] < 10 + 5
    assert steps["full"]["status"] == "skipped" and "s left" in steps["full"]["result"]
    assert "overhead" not in steps  # not asked for
    child = int(re.search(r"child (\d+)", Path(tmp_path, "r", "logs", "slow.log").read_text()).group(1))
    assert not alive(child)  # the command's own children were stopped with it
    assert "| mfu | stopped at the budget |" in Path(tmp_path, "r", "summary.md").read_text()


def test_plan_fits_the_default_budget_and_is_the_docstrings(monkeypatch):
    monkeypatch.chdir(REPO)
    budget = gpu_suite.SUITE_SETTINGS["budget"]
    table = gpu_suite.plan_table("gpu", budget)
    assert "\n".join(table[:-2]) in gpu_suite.__doc__  # the docstring's table is what --plan prints
    for scale in ("gpu", "rehearsal"):
        assert sum(p["estimate"] for p in gpu_suite.plan(scale).values()) <= budget


def test_studies_are_planned_by_the_measured_time_per_run(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    s = SimpleNamespace(results=str(tmp_path), budget=100.0, rehearse=False, data_dir="")
    suite = gpu_suite.Suite(s, [])
    first, *_, gpu_init = [study for _, study in gpu_suite.study_queue(False)][:5]
    for run in ("small_base", "small_disp"):  # seed 1337 of both finished in 'full'
        os.makedirs(tmp_path / "gpu_method" / f"{run}-s1337")
        (tmp_path / "gpu_method" / f"{run}-s1337" / "done.json").write_text("{}")
    suite.per_run = 30.0
    assert gpu_suite.runs_to_train(suite, first) == [("small_base", 1), ("small_disp", 1)]
    assert gpu_suite.part_estimate(suite, first) == 60.0
    assert gpu_suite.part_estimate(suite, gpu_init) == 60.0  # studies/gpu_init.py: 2 runs
    assert len(gpu_suite.study_queue(True)) == 1


@pytest.mark.parametrize("args, words", [
    (["--budget=0"], ["budget", "positive"]),
    (["--steps=mfu,bogus"], ["steps", "mfu,measure,overhead,full,studies"]),
    (["--budgt=5"], ["unknown setting 'budgt'", "budget"]),
    (["--rehearse", "--data_dir=/nonexistent/folder"], ["/nonexistent/folder", "meta.json"]),
    (["--results=EXISTING"], ["already holds results", "nothing was overwritten"]),
])
def test_bad_input_is_one_clear_line(args, words, tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    result = suite_run(*[a.replace("EXISTING", str(tmp_path)) for a in args], timeout=120)
    message = result.stderr.strip()
    assert result.returncode != 0 and "Traceback" not in message and len(message.splitlines()) == 1, message
    assert all(w in message for w in words), message
    assert (tmp_path / "old.txt").read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_without_a_gpu_it_points_to_the_rehearsal(tmp_path):
    result = suite_run(f"--results={tmp_path}/r", timeout=120)
    assert result.returncode != 0 and "--rehearse" in result.stderr and "Traceback" not in result.stderr


def test_bench_variants_none_times_off_alone():
    assert bench_settings(["--variants=none"])[0].variants == []


# -----------------------------------------------------------------------------
# train.py's dispersion paths, and compilation


def train(tmp_path, data_dir, *args):
    out_dir = tmp_path / "-".join(a.split("=")[1] for a in args)
    tiny = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=1",
            "--eval_interval=100", "--log_interval=1", "--max_iters=3", "--track_sequences=0", "--device=cpu",
            "--compile=False", "--dtype=bfloat16", "--dispersion_weight=0.1", "--dispersion_tokens=0"]
    result = subprocess.run([sys.executable, "train.py", *tiny, f"--data_dir={data_dir}",
                             f"--out_dir={out_dir}", *args], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=300)
    return result, out_dir


def test_stacked_and_per_layer_dispersion_give_the_same_loss(tmp_path, data_dir):
    """With every token kept (dispersion_tokens=0) both paths compute the same mean over layers and sequences:
    equal up to the order of fp32 sums, at the first step and after two updates (so the gradients agree
    too)."""
    steps = {}
    for path in ("stacked", "per_layer"):
        result, out_dir = train(tmp_path, data_dir, f"--dispersion_path={path}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((out_dir / "config.json").read_text())["dispersion_path"] == path
        steps[path] = [r for r in read_jsonl(out_dir / "metrics.jsonl") if "loss" in r]
    assert [r["iter"] for r in steps["stacked"]] == [0, 1, 2]
    for stacked, per_layer in zip(steps["stacked"], steps["per_layer"]):
        assert stacked["dispersion"] != 0
        assert stacked["dispersion"] == pytest.approx(per_layer["dispersion"], rel=1e-5)
        assert stacked["ce"] == pytest.approx(per_layer["ce"], rel=1e-5)
    assert steps["stacked"][0]["dispersion"] == pytest.approx(steps["per_layer"][0]["dispersion"], rel=1e-6)
    result, _ = train(tmp_path, data_dir, "--dispersion_path=stack")
    assert result.returncode != 0 and "dispersion_path" in result.stderr and "Traceback" not in result.stderr


def test_model_and_stacked_loss_compile_without_graph_breaks():
    """train.py's GPU path as one function: the model's hidden states, stacked, into the loss, in bf16
    autocast. fullgraph=True fails on any graph break, in the model or in the loss; the value and the
    gradients match eager. Graph breaks are found while tracing, whatever the backend: aot_eager traces
    forward and backward as inductor does, without generating code (the rehearsal compiles train.py's model
    with inductor, and test_dispersion.py the loss)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    x, y = torch.randint(64, (3, 16)), torch.randint(64, (3, 16))  # (B, T)

    def total_loss(x, y):
        _, ce, hidden = model(x, y, return_hidden=True)
        z = torch.stack([hidden[i] for i in (1, 2)]).flatten(0, 1)  # (L * B, T, C)
        return ce + 0.1 * dispersion_loss(z, "angular", max_tokens=0)

    torch._dynamo.reset()
    compiled = torch.compile(total_loss, fullgraph=True, backend="aot_eager")
    losses, grads = [], []
    for fn in (total_loss, compiled):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(x, y)
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
        assert all(torch.isfinite(g).all() for g in grads[-1])
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    assert all(torch.allclose(a, b, rtol=1e-2, atol=1e-4) for a, b in zip(*grads))
