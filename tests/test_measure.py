"""Tests of measure.py: known geometries, the paper's diagonal quirk, our GPT against Hugging Face, the
command.

    python -m pytest tests/test_measure.py -q
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from condensation import Result, hidden_stats, kendall, spearman  # noqa: E402
from measure import main, measure  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=100)


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw}))


def integral(hist):
    return sum(hist) * 2 / len(hist)  # bins of width 2 / bins on [-1, 1]


def cone(cos_target, B=3, T=40, C=512, seed=0):
    """Unit tokens a * axis + sqrt(1 - a^2) * (random direction orthogonal to axis): mean cosine about a^2."""
    g = torch.Generator().manual_seed(seed)
    a = math.sqrt(cos_target)
    noise = torch.randn(B, T, C, generator=g)
    noise[..., 0] = 0
    axis = torch.zeros(C)
    axis[0] = 1
    return a * axis + math.sqrt(1 - a * a) * F.normalize(noise, dim=-1)  # (B, T, C)


# -----------------------------------------------------------------------------
# statistics on hidden states with known answers


def test_identical_tokens_are_fully_condensed():
    h = torch.randn(2, 1, 16).expand(2, 10, 16) * 3.0  # (B, T, C), every token the same vector
    r = hidden_stats([h], bins=8, erank=True, top_share=True)
    assert r.mean_cos[0] == pytest.approx(1.0, abs=1e-5)
    assert r.hist[0][-1] == pytest.approx(8 / 2)  # all mass in the last bin: density 1 / width
    assert r.erank[0] == pytest.approx(1.0, abs=1e-3)
    assert r.top_share[0] == pytest.approx(1.0, abs=1e-5)


def test_random_high_dimensional_tokens_are_spread():
    torch.manual_seed(0)
    T = 32
    r = hidden_stats([torch.randn(4, T, 4096)], erank=True, top_share=True)
    assert abs(r.mean_cos[0]) < 0.01
    assert integral(r.hist[0]) == pytest.approx(1.0)
    assert r.erank[0] > 0.9 * T  # nearly orthogonal: close to full rank T
    assert r.top_share[0] < 2 / T


def test_narrowing_cone_gives_rank_correlation_one_and_widening_minus_one():
    targets = [0.1, 0.3, 0.5, 0.7, 0.9]
    narrowing = hidden_stats([cone(c) for c in targets], erank=True, top_share=True)
    assert narrowing.mean_cos == pytest.approx(targets, abs=0.02)
    assert narrowing.spearman == pytest.approx(1.0) and narrowing.kendall == pytest.approx(1.0)
    assert narrowing.erank[0] > narrowing.erank[-1] and narrowing.top_share[0] < narrowing.top_share[-1]
    assert narrowing.last_n_mean[0] == pytest.approx(narrowing.mean_cos[-1])
    assert narrowing.last_n_mean[-1] == pytest.approx(np.mean(narrowing.mean_cos))
    widening = hidden_stats([cone(c) for c in reversed(targets)])
    assert widening.spearman == pytest.approx(-1.0) and widening.kendall == pytest.approx(-1.0)
    for hist in narrowing.hist + widening.hist:
        assert integral(hist) == pytest.approx(1.0)


def test_constant_layers_give_zero_correlation_and_valid_json(tmp_path):
    h = cone(0.5)
    r = hidden_stats([h, h, h])
    assert r.spearman == 0.0 and r.kendall == 0.0
    json.dumps(asdict(r), allow_nan=False)  # raises on NaN or inf
    r.save(tmp_path / "r.json")
    assert Result.load(tmp_path / "r.json") == r


def test_rank_correlations_with_ties_match_hand_values_and_scipy():
    x, y = [1.0, 2.0, 2.0, 3.0, 0.5], [0, 1, 2, 3, 4]
    assert spearman([1, 2, 3], [0, 1, 2]) == pytest.approx(1.0)
    assert kendall([3, 2, 1], [0, 1, 2]) == pytest.approx(-1.0)
    assert kendall([1, 1, 2], [0, 1, 2]) == pytest.approx(2 / math.sqrt(2 * 3))  # tau-b: one pair tied in x
    stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y)[0])  # scipy's default is tau-b


def test_padding_is_left_out_and_batches_pool_like_single_sequences():
    lengths = [5, 40, 17]
    hidden = [cone(c, B=3) for c in (0.2, 0.6)]
    padded = [h.clone() for h in hidden]
    for h in padded:
        for b, n in enumerate(lengths):
            h[b, n:] = 100 * torch.randn(h.shape[1] - n, h.shape[2])  # garbage where there are no tokens
    batch = hidden_stats(padded, lengths, erank=True, top_share=True)
    singles = [hidden_stats([h[b:b + 1, :n] for h in hidden], erank=True, top_share=True)
               for b, n in enumerate(lengths)]
    pairs = [n * (n - 1) / 2 for n in lengths]
    for l in range(2):
        assert batch.mean_cos[l] == pytest.approx(np.mean([s.mean_cos[l] for s in singles]), abs=1e-6)
        assert batch.erank[l] == pytest.approx(np.mean([s.erank[l] for s in singles]), rel=1e-4)
        assert batch.top_share[l] == pytest.approx(np.mean([s.top_share[l] for s in singles]), rel=1e-4)
        # pooled, not averaged
        pooled = sum(np.array(s.hist[l]) * p for s, p in zip(singles, pairs)) / sum(pairs)
        np.testing.assert_allclose(batch.hist[l], pooled, atol=1e-6)
    assert batch.num_tokens == sum(lengths)


def reference(hidden, lengths, bins):
    """Each statistic from its definition (docs/condensation.md, section 2) in float64, one sequence at a
    time, with numpy: the whole cosine matrix, its off-diagonal entries, its eigenvalues."""
    out = {"mean_cos": [], "erank": [], "top_share": [], "counts": []}
    for h in hidden:
        per = {"mean_cos": [], "erank": [], "top_share": []}
        counts = np.zeros(bins)
        for b, n in enumerate(lengths):
            z = h[b, :n].double().numpy()
            u = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)
            cos = u @ u.T
            off = cos[~np.eye(n, dtype=bool)]
            per["mean_cos"].append(off.mean())
            counts += np.histogram(off.clip(-1, 1), bins=bins, range=(-1, 1))[0]
            eig = np.linalg.eigvalsh(cos)
            eig = np.where(eig > eig[-1] * n * np.finfo(float).eps, eig, 0)
            p = np.sqrt(eig) / np.sqrt(eig).sum()
            per["erank"].append(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
            per["top_share"].append(eig[-1] / np.trace(cos))
        for key in per:
            out[key].append(np.mean(per[key]))
        out["counts"].append(counts)
    return out


@pytest.mark.parametrize("case", ["cone", "padded", "wide", "repeated", "tight", "gpt2"])
def test_each_statistic_matches_its_float64_definition(case):
    """The fast paths (the mean and the histogram from the triangle's blocks, the top share by Lanczos or
    from the eigendecomposition, the effective rank in float64) against numpy in
    float64 on the whole matrix: to well within the printed precision (mean_cos 4 decimals, erank 1,
    top_share 3), and the histogram to the few pairs whose float32 cosine falls on the other side of a bin
    edge."""
    g = torch.Generator().manual_seed(0)
    B, T, C, lengths = 3, 64, 48, None
    if case == "cone":
        hidden = [cone(c, B=B, T=T, C=C) * 5 for c in (0.05, 0.5, 0.95)]
    elif case == "padded":
        hidden, lengths = [cone(c, B=B, T=T, C=C) for c in (0.2, 0.7)], [64, 17, 2]
    elif case == "wide":  # more tokens than dimensions: the eigenvalues come from the C x C side
        hidden = [torch.randn(B, 96, 16, generator=g) + 0.3]
    elif case == "repeated":  # 64 tokens drawn from 10 vectors: rank 10, 54 eigenvalues 0
        hidden = [torch.randn(B, 10, C, generator=g)[:, torch.randint(10, (T,), generator=g)]]
    elif case == "tight":  # mean cosine 0.998: small sigma^2 float32 cannot resolve next to sigma_1^2
        hidden = [torch.randn(C, generator=g) + 0.05 * torch.randn(B, T, C, generator=g)]
    else:  # a GPT-2-small-shaped window, condensed as a random GPT-2's late layers are
        B, T, C = 1, 512, 768
        hidden = [torch.randn(C, generator=g) + 1.5 * torch.randn(B, T, C, generator=g)]
    lengths = lengths or [hidden[0].shape[1]] * B
    ref = reference(hidden, lengths, 128)
    full = hidden_stats(hidden, lengths, erank=True, top_share=True)
    lanczos = hidden_stats(hidden, lengths, top_share=True)
    np.testing.assert_allclose(full.mean_cos, ref["mean_cos"], atol=1e-6)
    np.testing.assert_allclose(full.erank, ref["erank"], rtol=1e-5)
    np.testing.assert_allclose(full.top_share, ref["top_share"], atol=1e-6)
    np.testing.assert_allclose(lanczos.top_share, ref["top_share"], atol=1e-5)
    pairs = sum(n * (n - 1) for n in lengths)
    for hist, counts in zip(full.hist, ref["counts"]):
        ours = np.array(hist) * pairs * 2 / 128  # the density back to counts
        assert np.abs(ours - counts).sum() <= 1e-4 * pairs + 2
    assert hidden_stats(hidden, lengths).erank is None and lanczos.erank is None


def test_pair_counts_are_histc_of_the_matrix_without_its_diagonal_to_the_last_count():
    """cosines.PairCounts' triangle of blocks, binned by bincount (a CPU's way) and by index_add_ (a GPU's
    way, here on the CPU), against torch.histc on each whole cosine matrix with its diagonal taken out, on
    lengths that halve down to the leaves and lengths that do not, with and without padding; the same
    PairCounts reused for hidden states of its shape, as measure() reuses it, a new one for a new shape; and a
    condensed batch whose pairs nearly all fall in one bin, which the copies of the slots spread."""
    from condense import cosines
    from condensation import layer_sums
    g, bins, scratch, last = torch.Generator().manual_seed(0), 128, {}, None
    cases = ((1, 512, 64, None, 1), (3, 96, 32, None, 1), (2, 37, 16, None, 1), (3, 64, 24, [64, 9, 2], 1),
             (3, 64, 24, None, 1), (2, 128, 32, None, 0.02))
    for B, T, C, lengths, spread in cases:
        h = torch.randn(C, generator=g) + spread * torch.randn(B, T, C, generator=g)
        lengths = lengths or [T] * B
        expected = torch.zeros(bins, dtype=torch.long)
        for b, n in enumerate(lengths):
            u = F.normalize(h[b, :n], dim=-1)
            cos = (u @ u.T)[~torch.eye(n, dtype=torch.bool)]
            expected += torch.histc(cos, bins=bins, min=-1, max=1).long()
        for _ in range(2):  # the second time through the same buffers
            _, raw = layer_sums(h, lengths, bins, scratch=scratch)
            assert torch.equal(cosines.histogram(raw), expected), (B, T, C, lengths)
        same_shape = last is not None and last.shape == (B, T, C)
        assert (scratch["counter"] is last) == same_shape
        last = scratch["counter"]
        gpu_way = cosines.PairCounts(B, T, C, bins, "cpu", index_add=True)
        _, raw = layer_sums(h, lengths, bins, scratch={"counter": gpu_way})
        assert torch.equal(cosines.histogram(raw), expected), ("index_add_", B, T, C, lengths)
    assert expected.max() > 0.9 * expected.sum()  # the condensed case: one bin


def test_statistics_of_a_tensor_that_requires_grad():
    """hidden_stats on hidden states still attached to autograd (a training step's) gives the statistics of
    their values and leaves the graph alone."""
    h = cone(0.5, B=2, T=32, C=16).requires_grad_()
    assert hidden_stats([h]) == hidden_stats([h.detach()])
    assert h.grad is None


# -----------------------------------------------------------------------------
# measure() on models


def test_one_sequence_and_many_copies_in_any_batching_agree():
    model = tiny_gpt()
    seq = torch.randint(100, (50,))
    one = measure(model, [seq], erank=True, top_share=True)
    many = measure(model, [seq] * 23, batch_size=5, erank=True, top_share=True)
    for key in ("mean_cos", "erank", "top_share", "last_n_mean"):
        np.testing.assert_allclose(getattr(many, key), getattr(one, key), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(many.hist, one.hist, atol=1e-6)
    assert many.num_sequences == 23 and many.num_tokens == 23 * 50

    mixed = [torch.randint(100, (n,)) for n in (2, 64, 9, 33, 33, 10)]  # padded in batches of 4, alone in 1s
    a, b = measure(model, mixed, batch_size=4, erank=True), measure(model, mixed, batch_size=1, erank=True)
    np.testing.assert_allclose(a.mean_cos, b.mean_cos, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.hist, b.hist, atol=1e-5)
    np.testing.assert_allclose(a.erank, b.erank, rtol=1e-3)


def test_tensor_input_eval_mode_and_training_flag_restored():
    model = tiny_gpt(dropout=0.5)
    model.train()
    x = torch.randint(100, (4, 32))
    r1, r2 = measure(model, x), measure(model, list(x))
    assert r1 == r2  # dropout is off while measuring, so two runs agree exactly
    assert model.training
    assert len(r1.mean_cos) == 3 and len(r1.hist[0]) == 128


def test_paper_quirk_diagonal_included_is_an_affine_map_with_the_same_rank_correlations():
    """The public code averaged the full T x T matrix (diagonal of ones): ((T - 1) * mean_cos + 1) / T."""
    model = tiny_gpt(n_layer=4)
    with torch.no_grad():  # widen the weights so the layer trend is not simply monotone
        for p in model.parameters():
            p.mul_(8.0)
    T = 24
    x = torch.randint(100, (6, T))
    r = measure(model, x, batch_size=4)
    with torch.no_grad():
        hidden = model.eval()(x, return_hidden=True)[2]
    with_diag = []
    for h in hidden:  # independent: full matrices, no masks, diagonal included, mean over sequences
        u = F.normalize(h.double(), dim=-1)
        with_diag.append((u @ u.transpose(1, 2)).mean().item())
    np.testing.assert_allclose(with_diag, [((T - 1) * m + 1) / T for m in r.mean_cos], rtol=1e-5)
    layers = list(range(len(hidden)))
    assert spearman(with_diag, layers) == pytest.approx(r.spearman)
    assert kendall(with_diag, layers) == pytest.approx(r.kendall)
    stats = pytest.importorskip("scipy.stats")
    assert stats.spearmanr(with_diag, layers)[0] == pytest.approx(r.spearman)
    assert stats.kendalltau(with_diag, layers)[0] == pytest.approx(r.kendall)


def test_hugging_face_gpt2_and_its_conversion_measure_the_same():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config)
    seqs = [torch.randint(100, (n,)) for n in (64, 20, 64, 7)]
    a = measure(hf, seqs, batch_size=3, erank=True)
    b = measure(GPT.from_hf(hf), seqs, batch_size=3, erank=True)
    assert len(a.mean_cos) == 3
    np.testing.assert_allclose(a.mean_cos, b.mean_cos, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.hist, b.hist, atol=1e-4)
    np.testing.assert_allclose(a.erank, b.erank, rtol=1e-3)
    assert (a.spearman, a.kendall) == (b.spearman, b.kendall)


@pytest.mark.parametrize("sequences, message", [
    ([torch.tensor([5])], "needs at least 2"),
    ([torch.tensor([1, 2, 100])], "outside the model's vocabulary"),
    ([torch.tensor([1, -2, 3])], "outside the model's vocabulary"),
    ([torch.zeros(65, dtype=torch.long)], "more than the model's context of 64"),
    ([], "no sequences"),
    (torch.zeros(2, 5), "give 1-D tensors of token ids"),
])
def test_bad_sequences_raise_one_clear_sentence(sequences, message):
    with pytest.raises(ValueError, match=message) as e:
        measure(tiny_gpt(), sequences)
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


# -----------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A char-level data dir, a GPT-2-style one and a tiny checkpoint (tests/test_measure_hf.py: Hugging
    Face)."""
    tmp = tmp_path_factory.mktemp("measure")
    chars = [chr(c) for c in range(32, 92)]  # 60 characters
    val = np.random.default_rng(0).integers(0, len(chars), 2000).astype(np.uint16)
    for name, meta in (("char", {"vocab_size": 60, "tokenizer": "char", "chars": chars}),
                       ("gpt2", {"vocab_size": 60, "tokenizer": "gpt2"}),
                       ("wide", {"vocab_size": 100, "tokenizer": "gpt2"})):  # ids beyond the checkpoint's 64
        (tmp / name).mkdir()
        (val + 40 if name == "wide" else val).tofile(tmp / name / "val.bin")
        (tmp / name / "meta.json").write_text(json.dumps(meta))
    model = tiny_gpt(vocab_size=64, block_size=32)
    (tmp / "run").mkdir()
    torch.save({"model": model.state_dict(), "model_args": asdict(model.config), "iter_num": 10,
                "best_val_loss": 2.0, "config": {"dataset": "tiny_char"}}, tmp / "run" / "ckpt.pt")
    return tmp


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "measure.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def check_png(path):
    import matplotlib.image
    assert path.stat().st_size > 10_000
    image = matplotlib.image.imread(path)  # (height, width, channels)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0.05  # loadable and not blank


def test_command_measures_a_checkpoint(files):
    p = run(f"--out_dir={files / 'run'}", f"--data_dir={files / 'char'}", "--num_sequences=5", "--bins=32")
    assert p.returncode == 0, p.stderr
    r = Result.load(files / "run" / "condensation.json")
    assert len(r.mean_cos) == 3 and len(r.hist) == 3 and len(r.hist[0]) == 32
    assert r.num_sequences == 5 and r.num_tokens == 5 * 32  # windows of block_size tokens
    assert r.name == "run" and integral(r.hist[2]) == pytest.approx(1.0)
    assert f"spearman {r.spearman:+.3f}" in p.stdout and "mean_cos" in p.stdout
    check_png(files / "run" / "condensation.png")


def test_command_reads_the_data_dir_the_run_was_trained_on(files, tmp_path):
    """A run trained with --data_dir is measured on that data without being told again."""
    ckpt = torch.load(files / "run" / "ckpt.pt", weights_only=True)
    ckpt["config"] = {"dataset": "not_prepared_anywhere", "data_dir": str(files / "char")}
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    p = run(f"--out_dir={tmp_path / 'run'}", "--num_sequences=4", "--bins=32")
    assert p.returncode == 0, p.stderr
    theirs = run(f"--out_dir={files / 'run'}", f"--data_dir={files / 'char'}", "--num_sequences=4",
                 "--bins=32", f"--save={tmp_path / 'explicit'}")
    assert theirs.returncode == 0, theirs.stderr
    assert Result.load(tmp_path / "run" / "condensation.json").mean_cos == \
        Result.load(tmp_path / "explicit.json").mean_cos


def test_command_measures_a_fresh_model_from_a_train_config_file(files):
    config = files / "tiny_train.py"
    config.write_text("n_layer = 3\nn_head = 2\nn_embd = 32\nblock_size = 48\nlearning_rate = 1e-3\n"
                      "dispersion_weight = 0.1\n")
    out = files / "init_out"
    p = run(config, "--init=True", f"--data_dir={files / 'char'}", f"--out_dir={out}", "--num_sequences=3")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "condensation_init.json").read_text())
    assert r["name"] == "init 3x32" and len(r["mean_cos"]) == 4 and r["num_tokens"] == 3 * 48
    assert set(r) >= {"mean_cos", "hist", "erank", "top_share", "spearman", "kendall", "last_n_mean"}
    check_png(out / "condensation_init.png")


def test_command_compares_checkpoint_and_fresh_models(files):
    out = files / "cmp"
    p = run(f"--compare={files / 'run'},init", f"--data_dir={files / 'gpt2'}",
            f"--out_dir={out}", "--num_sequences=4", "--n_layer=1", "--n_head=2", "--n_embd=16",
            "--block_size=16")
    assert p.returncode == 0, p.stderr
    results = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in results] == ["run", "init 1x16"]  # the settings' shape, given explicitly
    assert [len(r["mean_cos"]) for r in results] == [3, 2]
    assert [r["num_tokens"] for r in results] == [4 * 32, 4 * 16]
    for r in results:
        assert f"{r['name']:20s} {r['spearman']:+9.3f} {r['kendall']:+8.3f}" in p.stdout
    check_png(out / "compare.png")


def test_command_draws_training_history(files):
    run_dir = files / "history_run"
    run_dir.mkdir()
    lines = []
    for it in (0, 100, 200):
        lines.append({"iter": it, "train_loss": 3 - it / 100, "val_loss": 3.1 - it / 100,
                      "mean_cos": [0.1, 0.3 - it / 1000, 0.5 - it / 500], "spearman": 1.0 - it / 200})
        lines.append({"iter": it + 10, "loss": 2.9 - it / 100, "lr": 1e-3, "ms": 12.0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    p = run(f"--history={run_dir}")
    assert p.returncode == 0, p.stderr
    check_png(run_dir / "history.png")


def test_command_empty_text_exits_with_one_sentence(files):
    empty = files / "empty.txt"
    empty.write_text("")
    p = run(f"--out_dir={files / 'run'}", f"--data_dir={files / 'char'}", f"--text_file={empty}",
            f"--save={files / 'unused'}")
    assert p.returncode != 0
    assert p.stderr.strip() == "error: the text is empty; give a text file with something in it."
    assert not (files / "unused.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--out_dir=/nonexistent/run"], "no checkpoint at /nonexistent/run/ckpt.pt"),
    (["--texts=['!', 'AB']"], "sequence 0 has 1 token(s)"),
    (["--texts=['AB', '']"], "sequence 1 has 0 token(s)"),
    (["--texts=['AB', 'A~B']"], "not in the vocabulary"),
    (["--data_dir={files}/wide"], "its 100 tokens do not fit the checkpoint's 64"),
    (["--text_file={files}/missing.txt"], "does not exist"),
    (["--init=True", "--hf=gpt2"], "give only one of"),
    (["--num_sequencs=3"], "unknown setting 'num_sequencs'"),
    (["--history=/nonexistent"], "metrics.jsonl does not exist"),
])
def test_command_errors_are_one_sentence(files, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main([f"--out_dir={files / 'run'}", f"--data_dir={files / 'char'}",
              *[a.format(files=files) for a in args]])
    assert message in str(e.value)


def test_our_gpt_is_measured_on_the_entries_return_hidden_gives():
    """measure() reads our GPT through forward hooks (stream_hidden), one entry at a time, not through
    return_hidden=True: the entries must be the same tensors, to the last bit."""
    from condensation import find_blocks, stream_hidden
    model = tiny_gpt(n_layer=3).eval()
    x = torch.randint(100, (2, 16))
    streamed = []
    with torch.no_grad():
        stream_hidden(model, x, lambda l, h: streamed.append(h.clone()), find_blocks(model))
        hidden = model(x, return_hidden=True)[2]
    assert len(streamed) == len(hidden) == 4
    for a, b in zip(streamed, hidden):
        assert torch.equal(a, b)


def save_run(folder, model, **extra):
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_args": asdict(model.config), "iter_num": 10,
                "best_val_loss": 2.0, "config": {"dataset": "tiny_char"}, **extra}, folder / "ckpt.pt")
    return folder


def test_compare_builds_init_in_the_shape_of_the_checkpoints_and_names_it(files, tmp_path, capsys):
    """The settings leave the shape at its defaults (6 x 384): init takes the checkpoint's, 2 x 32."""
    main([f"--compare=init,{files / 'run'}", f"--data_dir={files / 'char'}", f"--out_dir={tmp_path}",
          "--num_sequences=2"])
    results = json.loads((tmp_path / "compare.json").read_text())
    assert [r["name"] for r in results] == ["init 2x32", "run"]
    assert [len(r["mean_cos"]) for r in results] == [3, 3] and results[0]["num_tokens"] == 2 * 32


def test_compare_of_several_shapes_refuses_init_before_measuring(files, tmp_path, capsys):
    wide = save_run(tmp_path / "wide_run", tiny_gpt(vocab_size=64, block_size=32, n_embd=64))
    with pytest.raises(SystemExit) as e:
        main([f"--compare=init,{files / 'run'},{wide}", f"--data_dir={files / 'char'}",
              f"--out_dir={tmp_path}"])
    assert str(e.value).startswith("error: the checkpoints compared differ in shape or data (run: 2x32 on "
                                   "tiny_char, wide_run: 2x64 on tiny_char), so init would be built in the "
                                   "default shape, 6x384 on shakespeare_char: give its shape")
    assert "measuring" not in capsys.readouterr().out


def test_compare_with_a_missing_folder_stops_before_measuring_the_others(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([f"--compare={files / 'run'},{tmp_path / 'typo'}", f"--data_dir={files / 'char'}",
              f"--out_dir={tmp_path}"])
    assert str(e.value).startswith(f"error: no checkpoint at {tmp_path / 'typo'}")
    assert "measuring" not in capsys.readouterr().out


def test_a_data_set_prepared_again_is_refused_as_a_resume_refuses_it(files, tmp_path):
    from data.common import data_fingerprint
    meta = json.loads((files / "char" / "meta.json").read_text())
    run = save_run(tmp_path / "fingerprinted", tiny_gpt(vocab_size=64, block_size=32),
                   data=data_fingerprint(meta))
    again = tmp_path / "again"  # the same name, prepared from a text with fewer characters
    again.mkdir()
    (again / "val.bin").write_bytes((files / "char" / "val.bin").read_bytes())
    (again / "meta.json").write_text(json.dumps({**meta, "vocab_size": 50, "chars": meta["chars"][:50]}))
    with pytest.raises(SystemExit) as e:
        main([f"--out_dir={run}", f"--data_dir={again}"])
    assert str(e.value) == (f"error: the data set in {again} is not the one {run / 'ckpt.pt'} was trained "
                            "on (its meta.json has changed: vocabulary 60 then, 50 now), so the model's ids "
                            "would mean other tokens; put the run's own data back, or give its folder with "
                            "--data_dir.")


def test_save_where_nothing_can_be_written_stops_before_measuring(files, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        main([f"--out_dir={files / 'run'}", f"--data_dir={files / 'char'}", f"--save={blocker}/cond"])
    assert str(e.value).startswith(f"error: cannot make the folder {blocker} for {blocker}/cond.json (")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only folder (root may write anyway)
    with pytest.raises(SystemExit) as e:
        main([f"--out_dir={files / 'run'}", f"--data_dir={files / 'char'}", f"--save={tmp_path}/cond"])
    assert str(e.value) == (f"error: cannot write {tmp_path}/cond.json: {tmp_path} is read-only; pick "
                            "another place with --save=...")
    assert "measuring" not in capsys.readouterr().out


def test_no_checkpoint_at_the_default_out_dir_lists_the_runs_there_are(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_run(tmp_path / "out" / "tiny_base", tiny_gpt(vocab_size=64, block_size=32))
    with pytest.raises(SystemExit) as e:
        main([f"--data_dir={files / 'char'}"])
    assert str(e.value) == ("error: no checkpoint at out/ckpt.pt; the runs under out/ are out/tiny_base: "
                            "pick one with --out_dir=out/tiny_base.")


def test_comparison_figure_shares_one_colour_scale_has_a_legend_and_names_each_model(tmp_path):
    from types import SimpleNamespace

    from condense.plots import plot_signatures
    rng = np.random.default_rng(0)
    results = [SimpleNamespace(name=name, hist=(rng.random((5, 16)) * top).tolist(), mean_cos=[0.1] * 5,
                               spearman=0.5, kendall=0.4)
               for name, top in (("init 4x128", 4.1), ("tiny_base", 2.2))]
    fig = plot_signatures(results, tmp_path / "cmp.png")
    heatmaps = fig.axes[:2]
    scales = {(ax.collections[0].norm.vmin, ax.collections[0].norm.vmax) for ax in heatmaps}
    assert scales == {(0, max(max(map(max, r.hist)) for r in results))}  # one, up to the largest density
    assert [ax.get_title().split(",")[0] for ax in heatmaps] == ["init 4x128", "tiny_base"]
    assert all([t.get_text() for t in ax.get_legend().get_texts()] == ["mean cosine"] for ax in heatmaps)
    check_png(tmp_path / "cmp.png")
