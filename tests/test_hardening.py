"""The mistakes a new user makes, each stopped with one sentence that names the problem and the fix, a
non-zero exit, and nothing the user had lost or changed.

    python -m pytest tests/test_hardening.py -q

Most mistakes are caught before anything trains, so train.py, sample.py and scripts/study.py run here in this
interpreter, as `python train.py ...` would run them (runpy; the torch random state is put back afterwards).
The tests that need a checkpoint share one run of 2 steps. Two more live in test_train.py, because they need
its longer run: a full disk while saving (a real tmpfs) and a non-finite loss with condensation tracking on.
"""
import json
import os
import runpy
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from configurator import ConfigError, configure
from data.common import prepare_text
from dispersion import VARIANTS
from scripts import study
from settings import RULES, check_config, defaults

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
        "--eval_interval=2", "--log_interval=1", "--track_sequences=0", "--device=cpu", "--compile=False",
        "--max_iters=2"]


def run(script, *args):
    """Run script as `python script args` would, in this interpreter; return how it exited: the message of its
    sys.exit("error: ..."), 0 for sys.exit(0), or None when it ran to its end."""
    argv, cwd = sys.argv, os.getcwd()
    sys.argv = [script, *map(str, args)]
    os.chdir(REPO)
    try:
        with torch.random.fork_rng(devices=[]):
            runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return None


def assert_one_sentence(code, *words):
    """What a user sees: one line starting with 'error: ' (no traceback: any other exception fails the
    test)."""
    assert isinstance(code, str) and code.startswith("error: ") and "\n" not in code, code
    assert all(w in code for w in words), code


def files(folder):
    """Every file in folder and its bytes, but train.lock (each run writes its own process id there)."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.name != "train.lock"}


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """(run folder, data folder): 2 steps of the tiny model, checkpoint at 2, on a copy of the data set."""
    tmp = tmp_path_factory.mktemp("trained")
    data = shutil.copytree(data_dir, tmp / "data")
    result = subprocess.run([sys.executable, "train.py", *TINY, f"--data_dir={data}",
                             f"--out_dir={tmp / 'run'}"],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run", data


def own_copy(trained, tmp_path):
    """A copy of the trained run and of its data set, with the checkpoint's settings naming the copied
    data."""
    run_dir = shutil.copytree(trained[0], tmp_path / "run")
    data = shutil.copytree(trained[1], tmp_path / "data")
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    ckpt["config"]["data_dir"] = str(data)
    torch.save(ckpt, run_dir / "ckpt.pt")
    return run_dir, data


# ---- settings: a range for each, checked before anything is read or written


def test_every_numeric_setting_has_a_range_and_the_shipped_settings_keep_to_them(monkeypatch):
    """A number always has a range that matters, so each numeric setting needs a rule in settings.RULES; text
    and bool settings may have none (a path takes any text), so a setting added without a rule still works."""
    config = defaults()
    numeric = [k for k, v in config.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert [k for k in numeric if k not in RULES] == [], "add a rule for each of these to settings.RULES"
    assert set(RULES) <= set(config)  # no rule for a setting that is gone
    check_config(config)  # every default keeps to its rule
    # a loss a student adds to dispersion.VARIANTS is a valid dispersion_variant at once, with no second list
    # to edit
    monkeypatch.setitem(VARIANTS, "my_loss", lambda z, **_: z.sum((1, 2)))
    check_config({**config, "dispersion_variant": "my_loss"})
    with pytest.raises(ConfigError, match="one of angular, .*my_loss"):
        check_config({**config, "dispersion_variant": "nope"})
    monkeypatch.chdir(REPO)
    for name in sorted(os.listdir("config")):
        check_config(configure(defaults(), [os.path.join("config", name)]))
    for name in sorted(os.listdir("studies")):
        if name.startswith(("cpu_", "gpu_")):
            study.check_runs(study.load_study(os.path.join("studies", name)), name, [])


@pytest.mark.parametrize("args, words", [
    (["--n_embd=100", "--n_head=3"], ["n_embd=100 must be a multiple of n_head=3"]),
    (["--n_head=0"], ["n_head=0 is not allowed: it must be at least 1", "--n_head="]),
    (["--learning_rate=-1e-3"], ["learning_rate=-0.001 is not allowed: it must be a number above 0"]),
    (["--beta2=1.5"], ["beta2=1.5 is not allowed: it must be in [0, 1)"]),
    (["--dropout=1.5"], ["dropout=1.5 is not allowed: it must be a probability in [0, 1)"]),
    (["--min_lr=-0.01"], ["min_lr=-0.01 is not allowed: it must be 0 or more"]),
    (["--learning_rate=0.01", "--min_lr=0.1"],
     ["min_lr=0.1 is above learning_rate=0.01", "set min_lr lower"]),
    (["--dispersion_weight=-0.1"], ["dispersion_weight=-0.1 is not allowed: it must be 0 (off) or more"]),
    (["--embed_noise_alpha=-1"], ["embed_noise_alpha=-1.0 is not allowed: it must be 0 (off) or more"]),
    (["--forget_every=-5"], ["forget_every=-5 is not allowed: it must be 0 (off) or a number of steps"]),
    (["--weight_decay=-1"], ["weight_decay=-1.0 is not allowed: it must be 0 (off) or more"]),
    (["--dispersion_weight=0", "--dispersion_variant=nope"],
     ["dispersion_variant='nope'", "angular, cosine"]),
    (["--dispersion_weight=0.1", "--dispersion_layers=5"],
     ["dispersion_layers='5'", "valid layers are 1..2"]),
    (["--init_from=gpt-2"], ["init_from='gpt-2' is not allowed: it must be scratch, resume or one of gpt2"]),
    (["--compile=maybe"], ["compile='maybe' is not allowed: it must be True, False or None"]),
], ids=["n_embd_not_multiple_of_n_head", "n_head_0", "negative_lr", "beta2", "dropout", "negative_min_lr",
        "min_lr_above_lr", "negative_dispersion_weight", "negative_noise", "negative_forget_every",
        "negative_weight_decay", "unknown_variant_at_weight_0", "layer_past_n_layer", "init_from", "compile"])
def test_setting_out_of_range_stops_before_anything_is_written(data_dir, tmp_path, args, words):
    code = run("train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", *args)
    assert_one_sentence(code, *words)
    assert not (tmp_path / "out").exists()


def test_a_config_file_value_out_of_range_is_caught_too(data_dir, tmp_path):
    (tmp_path / "mine.py").write_text("dropout = 1.5\n")
    code = run("train.py", tmp_path / "mine.py", *TINY, f"--data_dir={data_dir}",
               f"--out_dir={tmp_path / 'out'}")
    assert_one_sentence(code, "dropout=1.5 is not allowed")


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_a_device_that_is_not_there(data_dir, tmp_path, device):
    if (device == "cuda" and torch.cuda.is_available()
            or device == "mps" and torch.backends.mps.is_available()):
        pytest.skip(f"this machine has {device}")
    code = run("train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}",
               f"--device={device}")
    assert_one_sentence(code, f"device '{device}' was asked for", "--device=cpu")
    assert not (tmp_path / "out").exists()


def offline_transformers():
    """A stand-in for the transformers package on a machine without internet: GPT2LMHeadModel.from_pretrained
    raises the OSError transformers 5 raises there (a test that imported the real package would take
    seconds)."""
    def from_pretrained(name):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                      "them in the cached files.\nCheck your internet connection or see how to run the "
                      "library in offline mode at "
                      "'https://huggingface.co/docs/transformers/installation#offline-mode'.")
    return types.SimpleNamespace(GPT2LMHeadModel=types.SimpleNamespace(from_pretrained=from_pretrained))


def test_gpt2_offline(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", offline_transformers())
    words = ["cannot load gpt2 from Hugging Face (We couldn't connect", "connect to the internet once"]
    code = run("train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--init_from=gpt2")
    assert_one_sentence(code, *words)
    assert not (tmp_path / "ckpt.pt").exists()
    assert_one_sentence(run("sample.py", "--init_from=gpt2", "--device=cpu"), *words)


# ---- data folders


def make_ids_too_large(folder):
    """Every 7th token of both splits becomes an id past the vocabulary (28 characters here)."""
    for split in ("train", "val"):
        ids = np.fromfile(folder / f"{split}.bin", dtype=np.uint16)
        ids[::7] = 40
        ids.tofile(folder / f"{split}.bin")


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "train.bin").write_bytes(b""), ["train.bin is empty, not uint16 token ids", "prepare"]),
    (lambda d: (d / "train.bin").unlink(), ["train.bin is missing", "prepare the data set again"]),
    (lambda d: (d / "val.bin").write_bytes((d / "val.bin").read_bytes() + b"x"),
     ["val.bin is cut short", "an odd number", "prepare the data set again"]),
    (lambda d: (d / "val.bin").write_bytes((d / "val.bin").read_bytes()[:40]),
     ["val.bin holds 20 tokens, fewer than block_size + 1 = 33", "lower block_size"]),
    (lambda d: (d / "meta.json").write_text('{"vocab_size": 28, "tok'),
     ["meta.json cannot be read (JSONDecodeError)", "prepare the data set again"]),
    (lambda d: (d / "meta.json").write_text('{"chars": []}'), ["meta.json lacks a valid vocab_size"]),
    (make_ids_too_large,
     ["train.bin in", "holds token id 40", "vocabulary of 28", "prepare the data set again"]),
], ids=["empty", "missing", "odd_size", "too_short", "corrupt_meta", "meta_without_vocab", "ids_past_vocab"])
def test_broken_data_folder(data_dir, tmp_path, damage, words):
    data = shutil.copytree(data_dir, tmp_path / "data")
    damage(data)
    code = run("train.py", *TINY, f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}")
    assert_one_sentence(code, *words)
    assert not (tmp_path / "out" / "ckpt.pt").exists()


def test_sample_with_a_broken_meta_json(trained, tmp_path):
    run_dir, data = own_copy(trained, tmp_path)
    (data / "meta.json").write_text("not json")
    assert_one_sentence(run("sample.py", f"--out_dir={run_dir}", "--device=cpu"), "meta.json cannot be read")


# ---- resuming


@pytest.mark.parametrize("how", ["other_vocabulary", "same_vocabulary_other_text"])
def test_resume_on_a_data_set_prepared_again_refuses(trained, tmp_path, how):
    """The same folder, prepared again from other text: its ids now mean other characters (or the text is
    another), so neither a resume nor sampling may go on with it. The checkpoint's data fingerprint tells."""
    run_dir, data = own_copy(trained, tmp_path)
    chars = json.loads((data / "meta.json").read_text())["chars"]
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    text = ("ZYXWVUTSRQ ponmlk\n" * 400 if how == "other_vocabulary"
            else "\n".join([" ".join(words[::-1])] * 200))
    meta = prepare_text(text, data, block_size=32)
    assert (meta["chars"] == chars) == (how == "same_vocabulary_other_text")
    before = files(run_dir)
    code = run("train.py", *TINY, f"--data_dir={data}", f"--out_dir={run_dir}", "--init_from=resume",
               "--max_iters=4")
    assert_one_sentence(code, f"the data set in {data} is not the one", "meta.json has changed",
                        "another --out_dir")
    assert files(run_dir) == before
    assert_one_sentence(run("sample.py", f"--out_dir={run_dir}", "--device=cpu"), "has changed since")


def test_a_checkpoint_from_before_the_fingerprint_still_resumes(trained, tmp_path):
    run_dir, data = own_copy(trained, tmp_path)
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt.pop("data")["vocab_size"] == 28
    torch.save(ckpt, run_dir / "ckpt.pt")
    assert run("train.py", *TINY, f"--data_dir={data}", f"--out_dir={run_dir}", "--init_from=resume",
               "--max_iters=3") is None
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 3 and ckpt["data"]["tokenizer"] == "char"  # written with a fingerprint now


@pytest.mark.parametrize("max_iters", [2, 1])
def test_resume_with_no_steps_left_says_so(trained, tmp_path, capsys, max_iters):
    run_dir = shutil.copytree(trained[0], tmp_path / "run")
    before = files(run_dir)
    code = run("train.py", *TINY, f"--data_dir={trained[1]}", f"--out_dir={run_dir}", "--init_from=resume",
               f"--max_iters={max_iters}")
    assert code == 0 and files(run_dir) == before
    said = capsys.readouterr().out.strip()
    assert said == (f"nothing to do: {run_dir / 'ckpt.pt'} is at iteration 2 and max_iters is {max_iters}; "
                    "raise max_iters to train further.")


# ---- sample.py and scripts/study.py


@pytest.mark.parametrize("args, words", [
    (["--top_k=-5"], ["top_k=-5 is not allowed: it must be 0 (all tokens) or more"]),
    (["--temperature=-1"], ["temperature=-1.0 is not allowed", "0 (greedy"]),
    (["--num_samples=0"], ["num_samples=0 is not allowed"]),
    (["--start=FILE:"], ["start='FILE:' is not allowed"]),
    (["--start=FILE:{binary}"], ["prompt file", "is not UTF-8 text"]),
], ids=["top_k", "temperature", "num_samples", "no_file_name", "binary_prompt_file"])
def test_sample_settings_are_checked_up_front(trained, tmp_path, args, words):
    binary = tmp_path / "prompt.bin"
    binary.write_bytes(bytes(range(256)))
    code = run("sample.py", f"--out_dir={trained[0]}", "--device=cpu",
               *[a.format(binary=binary) for a in args])
    assert_one_sentence(code, *words)


STUDY = """
base = "config/tiny_base.py"
shared = dict(data_dir={data!r}, n_layer=2, n_head=2, n_embd=16, block_size=16, max_iters=4, device="cpu")
runs = {{"a": {{}}, "b": {{"dispersion_weight": 0.1}}, "c": {bad}}}
seeds = [1, 2]
"""


@pytest.mark.parametrize("bad, words", [
    ('{"n_layers": 3}', ["unknown setting 'n_layers' in the settings of run 'c'", "Did you mean n_layer"]),
    ('{"dropout": 1.5}', ["dropout=1.5 is not allowed"]),
    ('{"dispersion_layers": "1,3"}', ["dispersion_layers='1,3'", "valid layers are 1..2"]),
], ids=["typo", "out_of_range", "layer_past_n_layer"])
def test_a_study_checks_every_run_before_the_first_starts(data_dir, tmp_path, monkeypatch, bad, words):
    (tmp_path / "s.py").write_text(STUDY.format(data=data_dir, bad=bad))
    monkeypatch.chdir(REPO)  # study.main changes to the repo root; this puts the working directory back
    with pytest.raises(SystemExit) as stop:
        study.main([str(tmp_path / "s.py"), f"--results={tmp_path / 'results'}"])
    assert_one_sentence(stop.value.code, "run 'c' of", "cannot start, so no run was started", *words)
    assert not (tmp_path / "results").exists()
