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

`-h` or `--help` anywhere among the arguments prints the command's docstring and every setting it takes, with
its default, its meaning and the values it may take, and exits; nothing is run or written. The meanings are
read from the file that declares the settings (the comment beside each, or above one that has none; a
comment line above a commented setting starts a group), the ranges from its RULES: nothing to keep in step.
"""

import ast
import difflib
import io
import os
import sys
import textwrap
import tokenize
import traceback
import types

ROOT = os.path.dirname(os.path.abspath(__file__))  # the repository: help's source files are named from here


class ConfigError(ValueError):
    """A config file or override the user wrote is wrong; the message says what to do."""


KINDS = {bool: "True or False", int: "a whole number", float: "a number", str: "text", list: "a list",
         tuple: "a list", dict: "a dict"}


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
    raise ConfigError(f"setting '{key}' must be {KINDS.get(type(default), type(default).__name__)} "
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


def configure(defaults, args, doc="", sources=()):
    """Apply config files and --key=value overrides (left to right) to a copy of defaults. With -h or --help
    among args, print help_text(doc, defaults, sources) instead and exit 0."""
    if wants_help(args):
        show_help(doc, defaults, sources)
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
            # The repository's config files name the files they read from its root (config/small_base.py):
            # one of them runs there, from whatever folder the command was started in.
            here, cwd = os.path.abspath(arg), os.getcwd()
            inside = os.path.commonpath([here, ROOT]) == ROOT
            try:
                if inside:
                    os.chdir(ROOT)
                # one namespace, so functions and comprehensions work
                exec(compile(source, arg, "exec"), scope)
            except Exception as e:  # a syntax error, an undefined name on a right-hand side, ...
                lines = [n for frame, n in traceback.walk_tb(e.__traceback__)
                         if frame.f_code.co_filename == arg]
                line = e.lineno if isinstance(e, SyntaxError) else lines[-1] if lines else "?"
                if (isinstance(e, FileNotFoundError) and e.filename and not os.path.isabs(e.filename)
                        and os.path.exists(os.path.join(ROOT, e.filename))):
                    raise ConfigError(f"config file {arg} fails at line {line}: it reads {e.filename}, which "
                                      f"is named from the repository's root; run the command from {ROOT}, or "
                                      "give the full path in the file.") from None
                raise ConfigError(f"config file {arg} fails at line {line} ({type(e).__name__}: {e}); "
                                  "fix it.") from None
            finally:
                os.chdir(cwd)
            for key, value in scope.items():
                if key.startswith("_") or isinstance(value, types.ModuleType) or callable(value):
                    continue  # private names, `import math` and helper functions are the file's own business
                if key not in defaults:
                    raise unknown_key(key, defaults, f"config file {arg}")
                config[key] = check_type(key, value, defaults[key])
    return config


# -----------------------------------------------------------------------------
# --help: every setting with its default, meaning and range, read from where it is declared


def wants_help(args):
    return any(a in ("-h", "--help") for a in args)


def show_help(doc, defaults, sources):
    print(help_text(doc, defaults, sources))
    sys.exit(0)


def declarations(path, in_dict=None):
    """[(group, name, meaning)] for each setting declared in the Python file at path (relative to the
    repository): its module-level assignments, or with in_dict the entries of `in_dict = dict(...)` there.
    A setting's meaning is the comment at the end of its line, or, if it has none, the comment lines right
    above it; comment lines above a setting that has its own comment name the group it starts."""
    with open(os.path.join(ROOT, path)) as f:
        source = f.read()
    comments = {}  # line number -> (text, whether the comment is the whole line)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), not tok.line[:tok.start[1]].strip())
    entries = []  # (name, first line, last line)
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        if in_dict is None:
            entries.append((node.targets[0].id, node.lineno, node.end_lineno))
        elif node.targets[0].id == in_dict and isinstance(node.value, ast.Call):
            entries += [(kw.arg, kw.lineno, kw.end_lineno) for kw in node.value.keywords]
    found, group = [], ""
    for name, first, last in entries:
        text, whole = comments.get(last, ("", True))
        beside = "" if whole else text
        above, line = [], first - 1
        while line in comments and comments[line][1]:
            if comments[line][0].strip("-"):  # not a ruler line of dashes
                above.insert(0, comments[line][0])
            line -= 1
        if beside and above:
            group = " ".join(above)
        found.append((group, name, beside or " ".join(above)))
    return found


def allowed(name, default, rules):
    """What values a setting takes, in words: its rule, or else its type."""
    if name in rules:
        what = rules[name][1]
        return what() if callable(what) else what
    return "any value" if default is None else KINDS.get(type(default), type(default).__name__)


def help_text(doc, defaults, sources, width=110):
    """The help of a command: its docstring, then each setting of defaults as name=default, its meaning and
    [the values it takes], grouped by sources: (title, path, rules, dict name or None) each, in order; a
    setting declared in several is shown with the last, whose default wins (as {**a, **b} merges them)."""
    where = {}
    for i, (_, path, _, in_dict) in enumerate(sources):
        for group, name, meaning in declarations(path, in_dict):
            if name in defaults:
                where[name] = (i, group, meaning)
    lines = [textwrap.dedent(doc).strip(), "",
             "Settings, as name=default, its meaning [the values it takes]:" if sources else
             "This command takes no settings."]
    for i, (title, path, rules, _) in enumerate(sources):
        lines += ["", textwrap.fill(f"{title} ({path}):", width)]
        last_group = None
        for name, (j, group, meaning) in where.items():
            if j != i:
                continue
            if group != last_group and group:
                lines.append(f"  # {group}")
            last_group = group
            head = f"    {name}={defaults[name]!r}"
            text = f"{meaning or '(no meaning written)'} [{allowed(name, defaults[name], rules)}]"
            if len(head) > 30:  # a long default: the meaning goes below it
                lines.append(head)
            first = head.ljust(32) if len(head) <= 30 else " " * 32
            lines.append(textwrap.fill(text, width, initial_indent=first, subsequent_indent=" " * 32))
    undeclared = [n for n in defaults if n not in where]
    if undeclared:
        lines += ["", "other settings: " + ", ".join(f"{n}={defaults[n]!r}" for n in undeclared)]
    return "\n".join(lines)
