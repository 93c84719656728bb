"""Tests of the paper's mid-training experiment: its recipe (config/midtrain_gpt2_*.py,
studies/midtrain_gpt2.py) and its corpus (data/wikitext/prepare.py, run offline on a small fake of
WikiText-103).

    python -m pytest tests/test_midtrain.py -q
"""
import json
import os
import sys
import types

import numpy as np
import pytest
import torch

from configurator import configure
from data.common import gpt2_encoding, load_tokenizer
from data.wikitext import prepare as wikitext
from model import GPT, GPTConfig
from scripts import study
from settings import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_split(prefix, n):
    """Rows as WikiText-103 has them: '' between lines, ' = Title = ' headings, ' = = Section = = ' inside."""
    rows = []
    for i in range(n):
        rows += ["", f" = {prefix} article {i} = \n", "",
                 f" The paragraph of article {i} , with 3 @.@ 5 units "
                 "and a long enough text to fill a few dozen tokens of GPT-2 's vocabulary .\n", "",
                 " = = History = = \n", "", f" Article {i} quotes <|endoftext|> once , literally .\n"]
    return rows


@pytest.fixture
def fake_datasets(monkeypatch):
    """A stand-in `datasets` package whose load_dataset serves fake WikiText splits and records its calls."""
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return {"text": fake_split(split, {"train": 40, "validation": 30}[split])}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_wikitext_articles_tokens_and_splits(fake_datasets, tmp_path):
    wikitext.main([f"--out_dir={tmp_path}", "--threads=2"])
    assert fake_datasets == [("Salesforce/wikitext", "wikitext-103-raw-v1", "train"),
                             # never the test split
                             ("Salesforce/wikitext", "wikitext-103-raw-v1", "validation")]
    meta = json.loads((tmp_path / "meta.json").read_text())
    enc = gpt2_encoding()
    for split, ours, n in (("train", "train", 40), ("validation", "val", 30)):
        ids = np.fromfile(tmp_path / f"{ours}.bin", dtype=np.uint16)
        articles = list(wikitext.articles(fake_split(split, n)))
        assert len(articles) == n == meta[f"{ours}_articles"] and meta[f"{ours}_tokens"] == len(ids)
        assert articles[1] == "".join(fake_split(split, 2)[8:])  # heading to heading, its section kept inside
        assert ids.tolist() == sum(([50256] + enc.encode_ordinary(a) for a in articles), [])
        assert (ids == 50256).sum() == n  # one separator per article: the quoted <|endoftext|> stayed text
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257
    _, decode = load_tokenizer(tmp_path)  # what train.py and sample.py read
    val = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    starts = np.flatnonzero(val == 50256)  # the separators, not the quoted text
    assert decode(val[starts[0] + 1:starts[1]]) == next(wikitext.articles(fake_split("validation", 30)))
    assert sorted(os.listdir(tmp_path)) == ["meta.json", "train.bin", "val.bin"]  # no temporary files


def test_wikitext_without_datasets_or_network(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(SystemExit, match="pip install datasets"):
        wikitext.main([f"--out_dir={tmp_path}"])

    def offline(path, name, split):  # what datasets raises with no network and nothing cached
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(SystemExit, match="^error: cannot download WikiText .*connect to the internet once"):
        wikitext.main([f"--out_dir={tmp_path}"])
    assert not (tmp_path / "meta.json").exists()


def test_recipe_is_the_papers(monkeypatch):
    monkeypatch.chdir(ROOT)  # config files name each other from the repo root
    base = configure(defaults(), ["config/midtrain_gpt2_base.py"])
    disp = configure(defaults(), ["config/midtrain_gpt2_disp.py"])
    tokens_per_step = base["batch_size"] * base["block_size"] * base["gradient_accumulation_steps"]
    assert tokens_per_step == 131_072 and base["block_size"] == 1024
    assert abs(base["max_iters"] * tokens_per_step - 200e6) < tokens_per_step  # 200M tokens, to a step
    assert abs(base["warmup_iters"] - 0.2 * base["max_iters"]) <= 1 and base["lr_decay_iters"] == 0
    assert ((base["learning_rate"], base["min_lr"], base["weight_decay"], base["grad_clip"])
            == (5e-5, 5e-6, 0.1, 1.0))
    assert ((base["beta1"], base["beta2"], base["init_from"], base["dataset"])
            == (0.9, 0.95, "gpt2", "wikitext"))
    assert base["dispersion_weight"] == 0 and base["always_save_checkpoint"]
    changed = {k for k in base if base[k] != disp[k]}
    # angular, all layers, tau 1, 256 tokens are the defaults
    assert changed == {"out_dir", "dispersion_weight"}
    assert (disp["dispersion_weight"], disp["dispersion_variant"]) == (0.1, "angular")
    assert disp["dispersion_layers"] == "all"
    # the cost the config states comes from model.flops_per_token for GPT-2 124M (no weights needed: meta
    # tensors)
    with torch.device("meta"):
        gpt2 = GPT(GPTConfig(vocab_size=50257, block_size=1024, bias=True))
    flops = gpt2.flops_per_token(1024)
    text = open("config/midtrain_gpt2_base.py").read()
    total = flops * base["max_iters"] * tokens_per_step
    # 8.55e8, 1.71e17
    assert f"{flops:.2e}".replace("e+0", "e") in text and f"{total:.2e}".replace("e+", "e") in text
    assert f"{total / (989e12 * 0.4) / 60:.1f} minutes" in text  # at the stated 40% MFU of an H100's peak

    s = study.load_study("studies/midtrain_gpt2.py")
    assert s["base"] == ["config/midtrain_gpt2_base.py"] and len(s["seeds"]) == 3
    assert s["evaluate"] == {"tasks": "paper"} and s["measure"]["num_sequences"] == 100
    for run in s["runs"].values():
        assert set(run) <= set(defaults())
    assert configure(defaults(),
                     ["config/midtrain_gpt2_base.py", *study.setting_args(s["runs"]["dispersion"])]) == {
        **disp, "out_dir": base["out_dir"]}  # the study's dispersion run is config/midtrain_gpt2_disp.py
