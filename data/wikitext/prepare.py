"""WikiText-103 in GPT-2 BPE tokens: the corpus of the paper's GPT-2 mid-training (config/midtrain_gpt2_*.py).

Needs internet once and the `datasets` library (pip install datasets); writes train.bin, val.bin and meta.json
next to this file, the layout train.py reads with --dataset=wikitext (see readme.md):

    python data/wikitext/prepare.py                 # tokenises on every core
    python data/wikitext/prepare.py --threads=4

train.bin is WikiText-103's train split and val.bin its validation split. The test split is left out: it is
the text on which lm-evaluation-harness's `wikitext` task measures perplexity. Every article is preceded by
<|endoftext|> (id 50256).
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so that `data.common` imports
from data.common import gpt2_encoding, write_atomic

EOT = 50256  # <|endoftext|> in GPT-2's vocabulary
SOURCE = "Salesforce/wikitext"  # on the Hugging Face Hub
SPLITS = {"train": "train", "validation": "val"}  # the data set's split -> our file
HEADING = re.compile(r"^ = [^=].* = \n?$")  # " = Title = " starts an article; " = = Section = = " does not


def load_wikitext(name):
    """{split: the split's rows of text}, from the Hub through `datasets` (cached under HF_HOME after the
    first time). Each row is one line of an article: a heading, a paragraph ending in a newline, or an empty
    string."""
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: data/wikitext needs the datasets library: pip install datasets (and internet once).")
    return {split: load_dataset(SOURCE, name, split=split)["text"] for split in SPLITS}


def articles(lines):
    """The split's lines joined into articles, each from its top-level heading to the line before the next
    one; the text is kept exactly as the data set has it (WikiText's spacing, such as ' @-@ ', included)."""
    article = []
    for line in lines:
        if HEADING.match(line) and any(l.strip() for l in article):
            yield "".join(article)
            article = []
        article.append(line)
    if any(l.strip() for l in article):
        yield "".join(article)


def write_split(docs, path, threads, batch=512):
    """Tokenise docs (a list of strings) into path as uint16, <|endoftext|> before each; return the token
    count."""
    enc, count = gpt2_encoding(), 0
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for start in range(0, len(docs), batch):
                # encode_ordinary: a literal '<|endoftext|>' in an article stays text
                for ids in enc.encode_ordinary_batch(docs[start:start + batch], num_threads=threads):
                    f.write(np.array([EOT, *ids], dtype=np.uint16).tobytes())  # ids < 50257 fit in uint16
                    count += 1 + len(ids)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left if something failed
    return count


def prepare(out_dir, name="wikitext-103-raw-v1", threads=8, block_size=1024):
    """Write out_dir/train.bin, val.bin and, last, meta.json; return the meta dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # the folder counts as unprepared until meta.json is back
    rows = load_wikitext(name)
    meta = {"vocab_size": 50257, "tokenizer": "gpt2", "source": f"{SOURCE} {name}"}
    for split, ours in SPLITS.items():
        docs = list(articles(rows[split]))
        meta[f"{ours}_tokens"] = write_split(docs, out_dir / f"{ours}.bin", threads)
        meta[f"{ours}_articles"] = len(docs)
        if meta[f"{ours}_tokens"] < block_size + 1:
            raise ValueError(f"the {split} split has {meta[f'{ours}_tokens']} tokens but needs at least "
                             f"block_size + 1 = {block_size + 1}")
        print(f"{split}: {len(docs):,} articles, {meta[f'{ours}_tokens']:,} tokens", flush=True)
    write_atomic(out_dir / "meta.json", json.dumps(meta, indent=1).encode())
    print(f"wrote {out_dir}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description="Prepare WikiText-103 as data/wikitext/ for train.py.")
    parser.add_argument("--name", default="wikitext-103-raw-v1",
                        help="the data set's configuration on the Hub")
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1), help="tokenising threads")
    parser.add_argument("--out_dir", default=str(Path(__file__).resolve().parent), help="where the files go")
    args = parser.parse_args(argv)
    try:
        prepare(args.out_dir, args.name, max(1, args.threads))
    except ConnectionError as e:  # datasets: no network and no cached copy
        sys.exit(f"error: cannot download WikiText ({e}); connect to the internet once (it is then cached "
                 "under HF_HOME) and run this again.")
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
