"""-h and --help on every command: the settings it takes, each with its default, its meaning and the values
it may take, read from the file that declares them; exit 0, nothing run and nothing written.

    python -m pytest tests/test_help.py -q

Each command runs in this interpreter as `python train.py --help` would (runpy), from an empty folder, so that
anything it wrote would show there.
"""
import os
import runpy
import sys
from pathlib import Path

import pytest

from configurator import declarations, help_text

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy, scripts.X
COMMANDS = ["train.py", "measure.py", "sample.py", "scripts.bench", "scripts.bench_measure", "scripts.study",
            "scripts.gpu_suite", "scripts.gpu_report", "scripts.export", "scripts.evaluate"]


def run_help(command, flag, folder, *args):
    """(exit code, what it printed) of `python COMMAND args flag`, run from folder."""
    argv, cwd, path = sys.argv, os.getcwd(), list(sys.path)
    sys.argv = [command, *args, flag]
    os.chdir(folder)
    try:
        if command.endswith(".py"):
            runpy.run_path(str(REPO / command), run_name="__main__")
        else:
            runpy.run_module(command, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code
    finally:
        sys.argv, sys.path[:] = argv, path
        os.chdir(cwd)
    return None


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_and_writes_nothing(command, flag, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = run_help(command, flag, tmp_path, f"--out_dir={out_dir}")
    printed = capsys.readouterr().out
    assert code in (0, None) and list(tmp_path.iterdir()) == [], (code, printed[-2000:])
    assert "(no meaning written)" not in printed and "other settings:" not in printed
    if command == "scripts.bench_measure":  # argparse's own help (its runs start copies of it with flags)
        assert "--repeats" in printed
    elif command == "scripts.gpu_report":  # one argument, the results folder
        assert "takes no settings" in printed and "results/gpu_suite" in printed
    else:
        assert "Settings, as name=default" in printed


def test_train_help_shows_every_setting_with_default_meaning_range_and_group(tmp_path, capsys):
    from settings import defaults
    assert run_help("train.py", "--help", tmp_path) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("\nTrain a GPT") or printed.lstrip().startswith("Train a GPT")  # its docstring
    for name, value in defaults().items():
        assert f"    {name}={value!r}" in printed, name
    assert all(len(line) <= 110 for line in printed.splitlines() if line.startswith(" "))
    lines = printed.splitlines()
    # the group header settings.py writes above it, the meaning beside it, the range from RULES
    at = lines.index("  # AdamW optimizer and learning-rate schedule")
    assert lines[at + 1].split() == "learning_rate=0.001 peak learning rate [a number above 0]".split()
    assert any("dropout=0.0" in line and "[a probability in [0, 1)]" in line for line in lines)
    groups = [line[4:] for line in lines if line.startswith("  # ")]
    assert groups[:4] == ["I/O", "data", "model", "AdamW optimizer and learning-rate schedule"]
    assert any(g.startswith("knowledge distillation") for g in groups) and "  # system" in lines
    assert lines[lines.index("  # data") + 3].split()[:2] == ["data_dir=''", "the"]  # its meaning, above it


@pytest.mark.parametrize("command, own", [("measure.py", "measure.py's own settings"),
                                          ("scripts.bench", "the benchmark's own settings")])
def test_commands_with_train_settings_show_both_groups(command, own, tmp_path, capsys):
    assert run_help(command, "--help", tmp_path) == 0
    printed = capsys.readouterr().out
    assert "train.py's settings (settings.py):" in printed and own in printed
    assert printed.index("train.py's settings") < printed.index(own)
    assert "    n_layer=6 " in printed  # train.py's
    if command == "measure.py":  # the data_dir of measure.py's own table replaces train.py's, shown once
        assert printed.count("    data_dir=") == 1 and printed.index("    data_dir=") > printed.index(own)
        assert "num_sequences=100" in printed and "[at least 1 (the paper: 100)]" in printed


def test_declarations_read_meaning_beside_or_above_and_groups(tmp_path):
    path = tmp_path / "settings_file.py"
    path.write_text("# -----\n"
                    "# first group\n"
                    "a = 1  # the a\n"
                    "# the b, written above\n"
                    "# over two lines\n"
                    "b = 'x'\n"
                    "# second group\n"
                    "c = (1,\n"
                    "     2)  # the c\n"
                    "TABLE = dict(\n"
                    "    d=True,  # the d\n"
                    "    # the e\n"
                    "    e=None,\n"
                    ")\n")
    assert declarations(str(path)) == [("first group", "a", "the a"),
                                       ("first group", "b", "the b, written above over two lines"),
                                       ("second group", "c", "the c"), ("second group", "TABLE", "")]
    assert declarations(str(path), "TABLE") == [("", "d", "the d"), ("", "e", "the e")]
    text = help_text("doc", {"a": 1, "b": "x", "z": 0}, [("mine", str(path), {"a": (None, "odd")}, None)])
    assert "    a=1" in text and "the a [odd]" in text
    assert "the b, written above over two lines [text]" in text
    assert "other settings: z=0" in text  # a setting no source declares is still listed
