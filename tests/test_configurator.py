"""Tests for configurator.py: order of config files and overrides, type checks, and every error a user can
make.

    python -m pytest tests/test_configurator.py -q
"""
import os

import pytest

from configurator import ConfigError, configure

DEFAULTS = dict(n_layer=6, n_head=6, learning_rate=1e-3, compile=False, out_dir="out", mlp_dim=None,
                betas=(0.9, 0.95), dispersion_layers="all")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_no_arguments_gives_a_copy_of_the_defaults():
    config = configure(DEFAULTS, [])
    assert config == DEFAULTS and config is not DEFAULTS


def test_files_and_overrides_apply_left_to_right(tmp_path):
    a = write(tmp_path, "a.py", "n_layer = 2\nn_head = 2\nout_dir = 'out/a'\n")
    b = write(tmp_path, "b.py", "n_layer = 3\n")
    config = configure(DEFAULTS, [a, "--n_head=4", b, "--learning_rate=3e-4", "--n_head=8"])
    assert config["n_layer"] == 3  # b.py came after a.py
    assert config["n_head"] == 8  # the later override wins
    assert config["out_dir"] == "out/a" and config["learning_rate"] == 3e-4
    assert configure(DEFAULTS, ["--n_layer=9", a])["n_layer"] == 2  # a file after an override wins too


def test_a_file_sees_the_settings_so_far(tmp_path):
    derived = write(tmp_path, "derived.py", "n_head = n_layer * 2\n")
    assert configure(DEFAULTS, ["--n_layer=5", derived])["n_head"] == 10


def test_file_with_import_comprehension_and_helper_function(tmp_path):
    path = write(tmp_path, "calc.py", "import math\nfrom math import sqrt\n"
                 "def width(k):\n    return 64 * k\n"
                 "_sizes = [width(k) for k in range(1, 4)]\n"
                 "n_layer = int(math.log2(_sizes[-1]))\n"  # log2(192) = 7.58 -> 7
                 "learning_rate = sqrt(1e-6)\n")
    config = configure(DEFAULTS, [path])
    assert config["n_layer"] == 7 and config["learning_rate"] == pytest.approx(1e-3)
    assert set(config) == set(DEFAULTS)  # math, sqrt, width and _sizes did not become settings


@pytest.mark.parametrize("arg, key, value", [
    ("--n_layer=5e3", "n_layer", 5000),  # a whole float is an int
    ("--n_layer=12", "n_layer", 12),
    ("--learning_rate=1", "learning_rate", 1.0),  # an int is a float
    ("--learning_rate=6e-4", "learning_rate", 6e-4),
    ("--compile=True", "compile", True),
    ("--mlp_dim=256", "mlp_dim", 256),  # a None default takes a value
    ("--mlp_dim=None", "mlp_dim", None),
    ("--out_dir=out/run 1", "out_dir", "out/run 1"),  # text is taken as it is
    ("--out_dir=True", "out_dir", "True"),  # ... even when it reads as a literal
    ("--dispersion_layers=1,3", "dispersion_layers", "1,3"),  # ... or as a tuple
    ("--betas=[0.8, 0.99]", "betas", (0.8, 0.99)),  # a list for a tuple default keeps the tuple type
])
def test_override_values_are_converted(arg, key, value):
    config = configure(DEFAULTS, [arg])
    assert config[key] == value and type(config[key]) is type(value)


def test_values_from_files_are_checked_and_converted(tmp_path):
    config = configure(DEFAULTS,
                       [write(tmp_path, "ok.py", "n_layer = 4.0\nlearning_rate = 2\nmlp_dim = 'x'\n")])
    assert config["n_layer"] == 4 and type(config["n_layer"]) is int
    assert config["learning_rate"] == 2.0 and type(config["learning_rate"]) is float
    assert config["mlp_dim"] == "x"
    with pytest.raises(ConfigError, match=r"'n_layer' must be a whole number.*0\.5"):
        configure(DEFAULTS, [write(tmp_path, "bad.py", "n_layer = 0.5\n")])


@pytest.mark.parametrize("arg, words", [
    ("--n_layer=0.5", ["'n_layer'", "whole number", "0.5"]),
    ("--n_layer=True", ["'n_layer'", "whole number"]),  # a bool is not a number here
    ("--n_layer=six", ["'n_layer'", "whole number", "'six'"]),
    ("--learning_rate=fast", ["'learning_rate'", "a number", "'fast'"]),
    ("--compile=1", ["'compile'", "True or False", "1"]),  # bool is strict
    ("--compile=true", ["'compile'", "True or False", "'true'"]),
    ("--compile=0", ["'compile'", "True or False"]),
    ("--betas=0.9", ["'betas'", "a list"]),
])
def test_wrong_types_are_refused(arg, words):
    with pytest.raises(ConfigError) as e:
        configure(DEFAULTS, [arg])
    assert all(w in str(e.value) for w in words), str(e.value)


def test_unknown_key_on_the_command_line_names_it_and_close_matches():
    with pytest.raises(ConfigError) as e:
        configure(DEFAULTS, ["--n_layers=2"])
    message = str(e.value)
    assert ("'n_layers'" in message and "command line" in message
            and "n_layer" in message.split("?")[0].split("mean")[1])


def test_unknown_key_in_a_file_names_it_the_file_and_close_matches(tmp_path):
    path = write(tmp_path, "typo.py", "n_layer = 2\nlearnig_rate = 1e-3\n")
    with pytest.raises(ConfigError) as e:
        configure(DEFAULTS, [path])
    message = str(e.value)
    assert "'learnig_rate'" in message and path in message and "learning_rate" in message


def test_unknown_key_without_close_matches_says_what_to_do():
    with pytest.raises(ConfigError, match="unknown setting 'zzz'.*Run with no overrides"):
        configure(DEFAULTS, ["--zzz=1"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match=r"'--n_layer' needs a value: write --n_layer=VALUE"):
        configure(DEFAULTS, ["--n_layer"])


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="'no/such/file.py' cannot be read"):
        configure(DEFAULTS, ["no/such/file.py"])
    with pytest.raises(ConfigError, match="cannot be read"):  # a folder
        configure(DEFAULTS, [str(tmp_path)])
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="cannot be read"):
        configure(DEFAULTS, [str(binary)])


@pytest.mark.parametrize("text, words", [
    ("n_layer = 2\nn_head = (\n", ["line 2", "SyntaxError"]),
    ("n_layer = 2\n\nn_head = n_layer * heads_per_layer\n", ["line 3", "NameError", "heads_per_layer"]),
])
def test_a_broken_config_file_says_where(tmp_path, text, words):
    path = write(tmp_path, "broken.py", text)
    with pytest.raises(ConfigError) as e:
        configure(DEFAULTS, [path])
    assert path in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_defaults_are_not_modified(tmp_path):
    before = dict(DEFAULTS)
    configure(DEFAULTS, [write(tmp_path, "c.py", "n_layer = 1\n"), "--n_head=1"])
    assert DEFAULTS == before


def test_the_repositorys_config_files_read_each_other_from_any_working_directory(tmp_path, monkeypatch):
    from configurator import ROOT
    from settings import defaults
    monkeypatch.chdir(tmp_path)
    config = configure(defaults(), [os.path.join(ROOT, "config", "small_disp.py")])  # reads small_base.py
    assert config["out_dir"] == "out/small_disp" and config["dataset"] == "shakespeare"
    assert os.getcwd() == str(tmp_path)  # and the command's folder is its own again
    mine = write(tmp_path, "mine.py", 'exec(open("config/small_base.py").read())\nn_layer = 2\n')
    with pytest.raises(ConfigError) as e:  # a file of its own elsewhere: run from the root, it says
        configure(defaults(), [mine])
    assert str(e.value) == (f"config file {mine} fails at line 1: it reads config/small_base.py, which is "
                            f"named from the repository's root; run the command from {ROOT}, or give the "
                            "full path in the file.")
