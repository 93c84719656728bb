"""Tests of measuring Hugging Face causal LMs: their own tokenizers, hidden states streamed by hooks,
revisions, the survey, and the errors a user can make. Offline: tiny random models and a tiny BPE trained
here.

    python -m pytest tests/test_measure_hf.py -q
"""

import json
import os
import sys
import time
import weakref

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# nothing here may reach the network (read where huggingface_hub is imported)
os.environ["HF_HUB_OFFLINE"] = "1"

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import condensation  # noqa: E402
from condensation import Result, find_blocks, hidden_stats, stream_hidden  # noqa: E402
from data.common import prepare_text  # noqa: E402
from measure import main  # noqa: E402

TEXT = " ".join(["To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
                 "the slings",
                 "and arrows of outrageous fortune, or to take arms against a sea of troubles and by "
                 "opposing end",
                 "them. To die, to sleep, no more; and by a sleep to say we end the heart-ache and the "
                 "thousand"] * 6)
VOCAB = 300
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
ARCHITECTURES = {  # tiny configs of the families the paper measured, and a few more
    "gpt2": lambda n: transformers.GPT2Config(n_layer=n, n_head=2, n_embd=32, n_positions=128,
                                              vocab_size=VOCAB, bos_token_id=1, eos_token_id=2),
    "llama": lambda n: transformers.LlamaConfig(**SMALL, num_hidden_layers=n, num_key_value_heads=2),
    "gpt_neox": lambda n: transformers.GPTNeoXConfig(**SMALL, num_hidden_layers=n),
    "qwen2": lambda n: transformers.Qwen2Config(**SMALL, num_hidden_layers=n, num_key_value_heads=2),
    "qwen3": lambda n: transformers.Qwen3Config(**SMALL, num_hidden_layers=n, num_key_value_heads=2,
                                                head_dim=8),
    "olmo2": lambda n: transformers.Olmo2Config(**SMALL, num_hidden_layers=n),
    "gemma2": lambda n: transformers.Gemma2Config(**SMALL, num_hidden_layers=n, num_key_value_heads=2,
                                                  head_dim=8),
    "opt": lambda n: transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=n, ffn_dim=64,
                                            num_attention_heads=4, max_position_embeddings=128,
                                            pad_token_id=0, word_embed_proj_dim=32),
}


def tiny(arch, layers=3, seed=0):
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(ARCHITECTURES[arch](layers)).eval()


def bpe(bos_first):
    """A byte-level BPE of 300 tokens trained on TEXT (milliseconds); bos_first: it puts <s> before every
    text, as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    if bos_first:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """Folders of three saved tiny models with their own tokenizer (not GPT-2's), a text file, a char data
    set."""
    tmp = tmp_path_factory.mktemp("hf")
    for arch, layers in (("gpt2", 2), ("llama", 3), ("gpt_neox", 4)):
        tiny(arch, layers).save_pretrained(tmp / arch)
        bpe(bos_first=arch == "llama").save_pretrained(tmp / arch)
    (tmp / "plays.txt").write_text(TEXT)
    prepare_text(TEXT * 3, tmp / "chars", block_size=32)
    return tmp


def by_hand(folder, sequences, bins=128):
    """The statistics from output_hidden_states of the whole causal LM on the same windows, one batch."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.stack(sequences), output_hidden_states=True).hidden_states
    return hidden_stats(list(hidden), bins=bins, erank=True, top_share=True)


def same(a, b):
    """a: from the command, with erank and top_share where it asked for them; b: by_hand, with both."""
    np.testing.assert_allclose(a.mean_cos, b.mean_cos, rtol=1e-4, atol=1e-6)
    if a.erank is not None:
        np.testing.assert_allclose(a.erank, b.erank, rtol=1e-3)
    np.testing.assert_allclose(a.top_share, b.top_share, rtol=1e-3)
    np.testing.assert_allclose(a.hist, b.hist, atol=1e-4)
    assert (a.spearman, a.kendall) == (b.spearman, b.kendall)


# -----------------------------------------------------------------------------
# hidden states one at a time


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_hooks_see_exactly_what_output_hidden_states_returns(arch):
    """Entry 0 the embedding, 1..L-1 after blocks, L after the final norm: bit for bit, every architecture."""
    model = tiny(arch)
    x = torch.randint(3, VOCAB, (2, 12))
    seen = []
    with torch.no_grad():
        stream_hidden(model, x, lambda l, h: seen.append((l, h.clone())), find_blocks(model))
        ref = model(input_ids=x, output_hidden_states=True).hidden_states
    assert [l for l, _ in seen] == list(range(len(ref))) and len(ref) == 4
    for (_, h), r in zip(seen, ref):
        assert torch.equal(h, r)


@pytest.mark.parametrize("layers", [2, 8])
def test_no_hidden_state_outlives_its_statistics(layers, monkeypatch):
    """The mechanism that keeps memory flat in depth: when entry l arrives, earlier entries have been freed,
    all but at most one (Llama's forward itself keeps its input embedding to the end), whatever the depth.
    Through output_hidden_states (the fallback) all l of them are still alive."""
    model = tiny("llama", layers)
    real = condensation.layer_sums

    def alive_counts():
        refs, counts = [], []

        def layer_sums(h, lengths, bins, **spectrum):
            counts.append(sum(r() is not None for r in refs))  # earlier entries still in memory
            refs.append(weakref.ref(h))
            return real(h, lengths, bins, **spectrum)
        monkeypatch.setattr(condensation, "layer_sums", layer_sums)
        condensation.measure(model, torch.randint(3, VOCAB, (2, 16)), batch_size=2)
        return counts

    streamed = alive_counts()
    monkeypatch.setattr(condensation, "find_blocks", lambda model: None)
    held = alive_counts()
    assert len(streamed) == layers + 1 and max(streamed) <= 1
    assert held == list(range(layers + 1))


# -----------------------------------------------------------------------------
# the command: each model reads the same text in its own tokens


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_text_file_in_the_models_own_tokens_matches_output_hidden_states(hf, arch, capsys):
    folder = hf / arch
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    main([f"--hf={folder}", f"--text_file={hf / 'plays.txt'}", "--seq_len=24", "--num_sequences=5",
          f"--save={hf / arch}_text", f"--out_dir={hf}", "--erank=True", "--top_share=True"])
    r = Result.load(f"{hf / arch}_text.json")
    prefix = [1] if arch == "llama" else []  # bos=auto: what the tokenizer puts first, <s> for the Llama one
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    body = 24 - len(prefix)
    windows = [torch.tensor(prefix + ids[i:i + body]) for i in range(0, 5 * body, body)]  # consecutive, full
    layers = transformers.AutoConfig.from_pretrained(folder).num_hidden_layers
    assert (len(r.mean_cos) == layers + 1 == {"gpt2": 3, "llama": 4, "gpt_neox": 5}[arch]
            and r.num_tokens == 5 * 24)
    same(r, by_hand(folder, windows))
    assert f"spearman {r.spearman:+.3f}" in capsys.readouterr().out


def test_validation_text_is_read_in_the_models_own_tokens(hf):
    """By default a Hugging Face model reads the validation split's text, decoded and tokenised its own
    way."""
    folder = hf / "gpt_neox"
    main([f"--hf={folder}", f"--data_dir={hf / 'chars'}", "--seq_len=16", "--num_sequences=3",
          f"--save={hf}/val", "--top_share=True"])
    r = Result.load(hf / "val.json")
    chars = json.loads((hf / "chars" / "meta.json").read_text())["chars"]
    text = "".join(chars[i] for i in np.fromfile(hf / "chars" / "val.bin", dtype=np.uint16))
    ids = np.array(transformers.AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)
                   ["input_ids"])
    starts = condensation.window_starts(len(ids), 3, 16, 1337)  # the default seed
    same(r, by_hand(folder, [torch.from_numpy(ids[i:i + 16]) for i in starts]))


def test_compare_across_tokenizers_and_with_our_checkpoint(hf, capsys):
    main([f"--compare=init,hf:{hf / 'gpt2'},hf:{hf / 'llama'}", f"--data_dir={hf / 'chars'}",
          f"--out_dir={hf}", "--num_sequences=2", "--n_layer=1", "--n_head=2", "--n_embd=16",
          "--block_size=20", "--seq_len=20"])
    results = json.loads((hf / "compare.json").read_text())
    assert [r["name"] for r in results] == ["init 1x16", "gpt2", "llama"]
    assert [len(r["mean_cos"]) for r in results] == [2, 3, 4]
    assert [r["num_tokens"] for r in results] == [2 * 20] * 3
    assert (hf / "compare.png").stat().st_size > 10_000


def test_revision_reaches_from_pretrained(hf, monkeypatch, capsys):
    """hf:NAME@REV loads config, tokenizer and weights at that revision; one command compares checkpoints."""
    calls = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained

        def fake(name, *args, _real=real, _cls=cls.__name__, **kwargs):
            calls.append((_cls, name, kwargs.get("revision")))
            return _real(hf / "gpt_neox", *args, **{k: v for k, v in kwargs.items() if k != "revision"})
        monkeypatch.setattr(cls, "from_pretrained", fake)
    main(["--compare=hf:EleutherAI/pythia-14m@step0,hf:EleutherAI/pythia-14m@step1000,"
          "hf:EleutherAI/pythia-14m",
          f"--text_file={hf / 'plays.txt'}", "--seq_len=16", "--num_sequences=2",
          f"--out_dir={hf}/revisions"])
    # not the folder's own
    asked = {(cls, rev) for cls, name, rev in calls if name == "EleutherAI/pythia-14m"}
    assert asked == {(cls, rev) for cls in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM")
                     for rev in ("step0", "step1000", None)}
    names = [r["name"] for r in json.loads((hf / "revisions" / "compare.json").read_text())]
    assert names == ["pythia-14m@step0", "pythia-14m@step1000", "pythia-14m"]


# -----------------------------------------------------------------------------
# errors: one sentence each, non-zero exit


def hub_failure(kind):
    """A download function that fails as the hub does: kind is an exception class of
    huggingface_hub.errors."""
    import huggingface_hub.errors

    def download(*args, **kwargs):
        error = getattr(huggingface_hub.errors, kind)
        e = error.__new__(error)
        Exception.__init__(e, f"{kind} from the hub")
        raise e
    return download


@pytest.mark.parametrize("kind, message", [
    (None, "cannot reach the Hugging Face hub and someone/model is not in the local cache"),
    ("GatedRepoError", "someone/model is a gated model: accept its licence"),
    ("RepositoryNotFoundError",
     "someone/model is neither a local folder nor a model on the Hugging Face hub"),
    ("RevisionNotFoundError", "someone/model has no revision 'step7'"),
])
def test_hub_errors_are_one_sentence(kind, message, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if kind:
        import transformers.utils.hub
        monkeypatch.setattr(transformers.utils.hub, "hf_hub_download", hub_failure(kind))
    with pytest.raises(SystemExit) as e:
        revision = "@step7" if kind == "RevisionNotFoundError" else ""
        main([f"--hf=someone/model{revision}", f"--text_file={ROOT}/README.md"])
    assert str(e.value).startswith(f"error: {message}") and str(e.value).count(". ") == 0


def test_folder_errors_are_one_sentence(hf, tmp_path):
    bare = tmp_path / "bare"
    tiny("gpt2").save_pretrained(bare)  # weights, no tokenizer
    vision = tmp_path / "vision"
    transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16).save_pretrained(vision)
    short = tmp_path / "short.txt"
    short.write_text("To be")
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = [
        ([f"--hf={bare}"], "has no tokenizer files"),
        ([f"--hf={vision}"], "is a ViT model, not a causal language model"),
        ([f"--hf={tmp_path / 'missing'}"], "is neither an existing folder nor a hub name"),
        ([f"--hf={hf / 'gpt2'}@step1"], "is a local folder, which has no revisions"),
        ([f"--hf={hf / 'gpt2'}", f"--text_file={short}"],
         f"text_file {short} holds 2 tokens, fewer than one window"),
        ([f"--hf={hf / 'gpt2'}", f"--text_file={binary}"], "is not UTF-8 text"),
        ([f"--hf={hf / 'gpt2'}", f"--text_file={tmp_path}"], "is a folder; give the path of a text file"),
        ([f"--hf={hf / 'gpt2'}", "--bins=0"], "bins=0 is not allowed: it must be at least 1"),
        ([f"--hf={hf / 'gpt2'}", "--num_sequences=0"], "num_sequences=0 is not allowed"),
        ([f"--hf={hf / 'gpt2'}", "--measure_batch_size=0"], "measure_batch_size=0 is not allowed"),
        ([f"--hf={hf / 'gpt2'}", "--bos=maybe"], "bos='maybe' is not allowed: it must be auto, always or"),
        ([f"--hf={hf / 'gpt2'}", "--dtype=float8"], "dtype='float8' is not allowed"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as e:
            main([*args, f"--out_dir={tmp_path}"])
        assert message in str(e.value), (args, str(e.value))
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value)


# -----------------------------------------------------------------------------
# the survey: families by size, the trend figure


def test_survey_measures_each_model_once_and_draws_the_trend(hf, tmp_path, monkeypatch, capsys):
    survey = tmp_path / "tiny_survey.py"
    survey.write_text(f"families = {{'A': [{str(hf / 'gpt2')!r}, {str(hf / 'llama')!r}],\n"
                      f"            'B': [{str(hf / 'gpt_neox')!r}, {str(tmp_path / 'not_there')!r}]}}\n")
    args = [f"--survey={survey}", f"--text_file={hf / 'plays.txt'}", "--seq_len=16", "--num_sequences=3",
            f"--out_dir={tmp_path}"]
    with pytest.raises(SystemExit) as e:  # one model is missing: the others are measured, then one sentence
        main(args)
    assert "1 of 4 models could not be measured" in str(e.value) and "not_there" in str(e.value)
    rows = json.loads((tmp_path / "tiny_survey" / "survey.json").read_text())
    assert [(r["family"], os.path.basename(r["model"])) for r in rows] == [("A", "gpt2"), ("A", "llama"),
                                                                          ("B", "gpt_neox")]
    params = {os.path.basename(r["model"]): r["params"] for r in rows}
    for arch, layers in (("gpt2", 2), ("llama", 3), ("gpt_neox", 4)):  # counted, tied weights once
        assert params[arch] == sum({p.data_ptr(): p.numel()
                                    for p in tiny(arch, layers).parameters()}.values())
    main([f"--hf={hf / 'llama'}", *args[1:], f"--save={tmp_path}/single"])  # the survey measures as --hf does
    assert rows[1]["result"] == json.loads((tmp_path / "single.json").read_text())
    assert (tmp_path / "tiny_survey" / "survey.png").stat().st_size > 10_000
    assert "| A | llama |" in (tmp_path / "tiny_survey" / "survey.md").read_text()

    survey.write_text(survey.read_text().replace(f", {str(tmp_path / 'not_there')!r}", ""))
    monkeypatch.setattr("measure.measure_entry",
                        lambda *a: pytest.fail("a measured model was measured again"))
    main(args)  # everything is there: nothing is measured, the figure is drawn again
    assert len(json.loads((tmp_path / "tiny_survey" / "survey.json").read_text())) == 3


def test_survey_of_pairs_draws_each_pair_side_by_side(hf, tmp_path):
    """A survey file with pairs (as studies/distill_survey.py: base and distilled): every model measured once,
    the table names each side, the figure draws pairs; a pair of three models is one sentence."""
    survey = tmp_path / "pairs_survey.py"
    survey.write_text(f"pairs = {{'small': [{str(hf / 'gpt2')!r}, {str(hf / 'llama')!r}],\n"
                      f"         'large': [{str(hf / 'gpt_neox')!r}, {str(hf / 'gpt2')!r}]}}\n"
                      "roles = ('base', 'distilled')\n")
    args = [f"--survey={survey}", f"--text_file={hf / 'plays.txt'}", "--seq_len=16", "--num_sequences=3",
            f"--out_dir={tmp_path}"]
    main(args)
    rows = json.loads((tmp_path / "pairs_survey" / "survey.json").read_text())
    assert [(r["family"], r["role"], os.path.basename(r["model"])) for r in rows] == [
        ("small", "base", "gpt2"), ("small", "distilled", "llama"), ("large", "base", "gpt_neox"),
        ("large", "distilled", "gpt2")]
    assert rows[0]["result"] == rows[3]["result"]  # the same model in two pairs: measured once
    table = (tmp_path / "pairs_survey" / "survey.md").read_text()
    assert table.startswith("| pair | model |") and "| small | llama (distilled) |" in table
    assert (tmp_path / "pairs_survey" / "survey.png").stat().st_size > 10_000
    survey.write_text(f"pairs = {{'three': [{str(hf / 'gpt2')!r}, {str(hf / 'llama')!r}, 'x']}}\n")
    with pytest.raises(SystemExit) as e:
        main(args)
    assert "each pair must hold two models" in str(e.value) and str(e.value).startswith("error: ")


def test_shipped_survey_file_reads():
    from condense.survey import read_survey
    families, roles = read_survey(os.path.join(ROOT, "studies", "models_survey.py"))
    assert roles is None  # families, not pairs
    assert {"GPT-2", "Pythia", "SmolLM2", "Qwen3", "OLMo 2"} <= set(families)
    assert all(len(models) >= 2 for models in families.values())
    pairs, roles = read_survey(os.path.join(ROOT, "studies", "distill_survey.py"))  # the paper's four pairs
    assert len(pairs) == 4 and roles == ("base", "DeepSeek-R1 distilled")
    prefix = "deepseek-ai/DeepSeek-R1-Distill-Qwen-"
    assert all(distilled.startswith(prefix) for _, distilled in pairs.values())


def test_measure_speed_for_bench_reports_the_statistics_share(monkeypatch):
    from scripts.bench_measure_gpu import measure_speed
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=100))
    real = condensation.layer_sums

    def slow_layer_sums(*args, **kwargs):  # 5 ms more per hidden state: 3 entries x 2 batches, 30 ms
        time.sleep(0.005)
        return real(*args, **kwargs)

    monkeypatch.setattr(condensation, "layer_sums", slow_layer_sums)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the two batches one after the other, so their sleeps add up
    try:
        row = measure_speed(model, torch.randint(100, (6, 64)), 4, "cpu", lambda: None, repeats=3)
    finally:
        torch.set_num_threads(threads)
    forward = row["ms"] / (1 + row["statistics_share"])
    assert row["sequences"] == 6 and row["seq_len"] == 64 and 25 <= row["ms"] - forward <= 200
    assert row["tokens_per_s"] == pytest.approx(6 * 64 / (row["ms"] / 1000))
    assert model.training  # put back as it was
