"""
Settings from plain-Python config files and --key=value overrides, checked against the defaults.

A script keeps its defaults as module-level names and calls

    config = configure(defaults, sys.argv[1:])

Each argument without a leading "--" is a config file: plain Python run with the current settings as
its variables. Each "--key=value" then overrides one setting; value is read as a Python literal
(`--lr=3e-4`, `--compile=False`) and, for a text setting, taken as it is (`--out_dir=out/a`).
Files and overrides apply left to right. Unlike nanoGPT's configurator, a name that is not a setting
stops the run (in a file as on the command line) and says which settings are close, and every value
is checked against the type of its default: an int setting takes 5e3 (it is whole) but not 0.5, a
float takes an int, a setting whose default is None takes any value.
"""

import ast
import difflib
import traceback
import types


class ConfigError(ValueError):
    """A config file or override the user wrote is wrong; the message says what to do."""


def check_type(key, value, default):
    """Return value converted to the type of default, or raise ConfigError."""
    if default is None:
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if number and float(value).is_integer():
            return int(value)
    elif isinstance(default, float):
        if number:
            return float(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    kinds = {bool: "True or False", int: "a whole number", float: "a number", str: "text", list: "a list",
             tuple: "a list"}
    raise ConfigError(f"setting '{key}' must be {kinds.get(type(default), type(default).__name__)} "
                      f"like its default {default!r}, got {value!r}.")


def unknown_key(key, known, where):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else " Run with no overrides to see every setting."
    return ConfigError(f"unknown setting '{key}' in {where}.{hint}")


def parse_value(raw, default):
    """A command-line value: a Python literal, or plain text for a text setting (or if not a literal)."""
    if isinstance(default, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def configure(defaults, args):
    """Apply config files and --key=value overrides (left to right) to a copy of defaults."""
    config = dict(defaults)
    for arg in args:
        if arg.startswith("--"):
            key, eq, raw = arg[2:].partition("=")
            if not eq:
                raise ConfigError(f"override '{arg}' needs a value: write --{key}=VALUE.")
            if key not in defaults:
                raise unknown_key(key, defaults, "the command line")
            config[key] = check_type(key, parse_value(raw, defaults[key]), defaults[key])
        else:
            try:
                with open(arg) as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError):  # missing, a folder, not text, ...
                raise ConfigError(f"config file '{arg}' cannot be read; "
                                  "give a path such as config/tiny_base.py.") from None
            scope = dict(config)
            try:
                # one namespace, so functions and comprehensions work
                exec(compile(source, arg, "exec"), scope)
            except Exception as e:  # a syntax error, an undefined name on a right-hand side, ...
                lines = [n for frame, n in traceback.walk_tb(e.__traceback__)
                         if frame.f_code.co_filename == arg]
                line = e.lineno if isinstance(e, SyntaxError) else lines[-1] if lines else "?"
                raise ConfigError(f"config file {arg} fails at line {line} ({type(e).__name__}: {e}); "
                                  "fix it.") from None
            for key, value in scope.items():
                if key.startswith("_") or isinstance(value, types.ModuleType) or callable(value):
                    continue  # private names, `import math` and helper functions are the file's own business
                if key not in defaults:
                    raise unknown_key(key, defaults, f"config file {arg}")
                config[key] = check_type(key, value, defaults[key])
    return config
