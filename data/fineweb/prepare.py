"""FineWeb-Edu (a sample of educational web pages) in GPT-2 BPE tokens, for GPU-scale runs (see readme.md).

Needs internet and the `datasets` library (pip install datasets); writes train.bin, val.bin and meta.json
next to this file, the layout train.py reads with --dataset=fineweb:

    python data/fineweb/prepare.py --tokens=1B                 # 1e9 training tokens, ~2 GB on disk
    python data/fineweb/prepare.py --tokens=100M --workers=8   # tokenise on 8 processes

The first --val_docs documents of the stream are val.bin; the following ones fill train.bin until it holds
exactly --tokens tokens (the last document is cut). Every document is preceded by <|endoftext|> (id 50256).
"""
import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so that `data.common` imports
from data.common import gpt2_encoding, write_atomic

EOT = 50256  # <|endoftext|> in GPT-2's vocabulary


def encode_document(text):
    """[EOT] + the document's GPT-2 tokens as uint16. encode_ordinary: a literal '<|endoftext|>' in a web
    page stays text, so the only EOT tokens are our separators."""
    # ids < 50257 fit in uint16
    return np.array([EOT] + gpt2_encoding().encode_ordinary(text), dtype=np.uint16)


def batches(items, size):
    """Lists of up to size consecutive items."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_corpus(documents, out_dir, tokens, val_docs, workers=1, block_size=1024):
    """Tokenise documents (any iterable of strings) into out_dir/{val,train}.bin and meta.json.

    val.bin: the first val_docs documents; train.bin: the next ones, exactly `tokens` tokens. Both are
    written to temporary files and renamed, and meta.json (removed first) is written last, so a folder
    with meta.json is complete. Returns the meta dict.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # the folder counts as unprepared until meta.json is back
    counts = {"val": 0, "train": 0}
    tmp = {split: out_dir / f"{split}.bin.{os.getpid()}.tmp" for split in counts}
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        # in bounded batches: Pool.imap would read the whole (endless) stream ahead of the workers
        encoded = (ids for batch in batches(documents, 256 * workers)
                   for ids in pool.map(encode_document, batch, 16)) \
            if pool else map(encode_document, documents)
        with open(tmp["val"], "wb") as val, open(tmp["train"], "wb") as train:
            for k, ids in enumerate(encoded):
                split, f = ("val", val) if k < val_docs else ("train", train)
                if split == "train":
                    ids = ids[:tokens - counts["train"]]
                f.write(ids.tobytes())
                counts[split] += len(ids)
                if counts["train"] >= tokens:
                    break
                if k % 10000 == 0 and k:
                    print(f"{k:,} documents, {counts['train']:,} / {tokens:,} train tokens", flush=True)
        for split, n in counts.items():
            if n < block_size + 1:
                raise ValueError(f"the {split} split has {n} tokens but needs at least block_size + 1 = "
                                 f"{block_size + 1}; give more documents, or raise --val_docs or --tokens.")
        for split in counts:
            os.replace(tmp[split], out_dir / f"{split}.bin")
    finally:
        if pool:
            pool.terminate()
        for path in tmp.values():
            path.unlink(missing_ok=True)  # only left if something failed
    if counts["train"] < tokens:
        print(f"note: the documents ran out at {counts['train']:,} train tokens, short of the {tokens:,} "
              "asked for")
    meta = {"vocab_size": 50257, "tokenizer": "gpt2", "train_tokens": counts["train"],
            "val_tokens": counts["val"], "val_docs": val_docs}
    write_atomic(out_dir / "meta.json", json.dumps(meta, indent=1).encode())
    print(f"{out_dir}: {meta['train_tokens']:,} train, {meta['val_tokens']:,} val tokens")
    return meta


def parse_count(text):
    """'100M' -> 100_000_000; also k, B and plain numbers such as 5e8."""
    scale = {"k": 10**3, "m": 10**6, "b": 10**9}.get(text[-1:].lower(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a token count; write it like 100M, 1B or "
                                         "5e8") from None


def fineweb_documents(name):
    """The text of each document of HuggingFaceFW/fineweb-edu (subset `name`), streamed from the Hub."""
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: data/fineweb needs the datasets library and internet: pip install datasets")
    stream = load_dataset("HuggingFaceFW/fineweb-edu", name=name, split="train", streaming=True)
    return (row["text"] for row in stream)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Prepare a FineWeb-Edu sample as data/fineweb/ for train.py.")
    parser.add_argument("--tokens", type=parse_count, default=parse_count("100M"),
                        help="train tokens, e.g. 1B")
    parser.add_argument("--val_docs", type=int, default=1000, help="documents in val.bin (about 1M tokens)")
    parser.add_argument("--name", default="sample-10BT", help="FineWeb-Edu subset on the Hub")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="tokenising processes")
    parser.add_argument("--out_dir", default=str(Path(__file__).resolve().parent), help="where the files go")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.val_docs < 1:
        parser.error("--tokens and --val_docs must be positive")
    try:
        write_corpus(fineweb_documents(args.name), args.out_dir, args.tokens, args.val_docs, args.workers)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
