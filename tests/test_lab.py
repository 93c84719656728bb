"""Tests for docs/lab.md: its commands, read from the file itself, run in a copy of the repository, shrunk to
a few steps of a tiny model on a tiny data set, so the lab cannot fall out of step with the code.

    python -m pytest tests/test_lab.py -q        (about 30 s)

What is shrunk: every train.py and measure.py command gets a 2-layer, 32-wide model, the test data set (made
by conftest.py, nothing is downloaded) and a few steps or windows; the python blocks of the lab are added to
the copy's dispersion.py and VARIANTS as the lab tells a student to; a command marked `# fails: TEXT` must
fail and say TEXT. Every output file the lab names (`out/...`) must exist afterwards, and every figure it
links.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "docs" / "lab.md"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: fastest for a model this small on a shared machine
MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--device=cpu", "--compile=False"]
TRAIN = ["--batch_size=4", "--max_iters=4", "--eval_interval=2", "--eval_iters=1", "--log_interval=2",
         "--warmup_iters=1", "--lr_decay_iters=4", "--track_sequences=2"]
MEASURE = ["--num_sequences=4", "--measure_batch_size=4"]


def blocks(text, language):
    """The contents of the fenced code blocks of one language, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def lab_commands(text):
    """(command, the text a failing command must print, or None) for each line of the ```bash blocks."""
    commands = []
    for block in blocks(text, "bash"):
        for line in block.splitlines():
            command, _, comment = line.partition("#")
            if command.strip():
                failure = (comment.strip()[len("fails:"):].strip() if comment.strip().startswith("fails:")
                           else None)
                commands.append((command.strip(), failure))
    return commands


def add_to_dispersion(source, functions):
    """dispersion.py's source with each function added above `VARIANTS = {` and its name as the last entry."""
    names = [re.match(r"def (\w+)\(", f).group(1) for f in functions]
    start = source.index("VARIANTS = {")
    end = source.index("\n}\n", start)
    entries = "".join(f'\n    "{n}": {n},' for n in names)
    return source[:start] + "\n\n".join(functions) + "\n\n" + source[start:end] + entries + source[end:]


def shrink(command, data_dir):
    """The command as a list of arguments, with the tiny settings appended to train.py and measure.py."""
    args = shlex.split(command)
    assert args[0] == "python", f"a lab command must start with python: {command}"
    if args[1] == "train.py":
        args += [*MODEL, *TRAIN, f"--data_dir={data_dir}"]
    elif args[1] == "measure.py":
        args += [*MODEL, *MEASURE, f"--data_dir={data_dir}"]
    else:
        assert args[1:3] == ["-m", "pytest"], f"unexpected lab command: {command}"
    return [sys.executable, *args[1:]]


def test_the_lab_reads_as_the_test_expects():
    text = LAB.read_text()
    commands = [c for c, _ in lab_commands(text)]
    assert any(c.startswith("python measure.py config/tiny_base.py --init=True") for c in commands)
    assert any(c.startswith("python train.py config/tiny_disp.py") for c in commands)
    assert any("--compare=" in c for c in commands)
    assert [f for _, f in lab_commands(text) if f] == ["contract clause 'bounded' broken"]
    assert len(blocks(text, "python")) == 2


def test_the_lab_runs_as_written(tmp_path, data_dir):
    text = LAB.read_text()
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(".git", "out*", "results", "cache", "*.bin",
                                                             "__pycache__", ".pytest_cache", ".benchmarks"))
    dispersion = repo / "dispersion.py"
    dispersion.write_text(add_to_dispersion(dispersion.read_text(), blocks(text, "python")))
    for command, failure in lab_commands(text):
        result = subprocess.run(shrink(command, data_dir), cwd=repo, env=ENV, capture_output=True, text=True,
                                timeout=300)
        output = result.stdout + result.stderr
        if failure:
            assert result.returncode != 0 and failure in output, f"{command}\n{output[-3000:]}"
        else:
            assert result.returncode == 0, f"{command}\n{output[-3000:]}"
        if "pytest" in command and not failure:
            assert re.search(r"\b[1-9]\d* passed", output) and "failed" not in output, output[-3000:]
    outputs = set(re.findall(r"`(out/[\w/.-]+\.(?:png|json|jsonl))`", text))
    assert len(outputs) >= 5
    for path in sorted(outputs):
        assert (repo / path).is_file(), f"the lab names {path}, which its commands did not write"
    for link in re.findall(r"\]\((\.\./figures/[\w.-]+)\)", text):
        assert (LAB.parent / link).is_file(), f"the lab links {link}, which does not exist"
