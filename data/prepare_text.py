"""Turn your own text files into a data set data/<name>/ (train.bin, val.bin, meta.json) for train.py.

    python data/prepare_text.py --name=mydata --tokenizer=gpt2 file1.txt [file2.txt ...]
    python data/prepare_text.py --name=mydata --tokenizer=char --val_fraction=0.1 notes.txt

Files are read as UTF-8 and joined in the order given, separated by a blank line. The first 1 - val_fraction
of the tokens go to train.bin, the rest to val.bin. Then train with: python train.py --dataset=mydata
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so that `data.common` imports
from data.common import DATA_ROOT, prepare_text


def read_files(paths):
    """The files' text joined by blank lines; ValueError (one sentence) for a missing, non-UTF-8 or empty
    input."""
    texts = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"file not found: {path}")
        try:
            texts.append(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text; convert it to UTF-8 first") from None
    if not any(text.strip() for text in texts):
        raise ValueError("the input files hold no text; give at least one file with some text in it")
    return "\n\n".join(texts)


def main(argv=None, data_root=DATA_ROOT):
    parser = argparse.ArgumentParser(description="Prepare your own text files as data/<name>/ for train.py.")
    parser.add_argument("files", nargs="+", help="UTF-8 text files")
    parser.add_argument("--name", required=True, help="data set name: writes data/<name>/")
    parser.add_argument("--tokenizer", choices=["char", "gpt2"], default="char",
                        help="characters or GPT-2 BPE")
    parser.add_argument("--val_fraction", type=float, default=0.1,
                        help="share of the tokens (at the end) for val")
    parser.add_argument("--block_size", type=int, default=256, help="longest context you will train with")
    args = parser.parse_args(argv)
    try:
        if (not args.name or Path(args.name).name != args.name or args.name.startswith(".")
                or args.name == "cache"):
            raise ValueError(f"--name must be a plain folder name such as mydata, got {args.name!r}")
        prepare_text(read_files(args.files), Path(data_root) / args.name, args.tokenizer,
                     val_fraction=args.val_fraction, block_size=args.block_size)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
