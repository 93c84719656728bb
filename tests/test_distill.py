"""Tests of knowledge distillation (condense/distill.py and train.py --distill_from): the KD term against a
float64 reference written out here, the geometry term, the frozen teacher, exact resume, DDP, and one sentence
for every mistake. Offline: teachers are tiny train.py runs and a tiny random transformers GPT-2 saved with
GPT-2's tokenizer (built from the local vocabulary files).

    python -m pytest tests/test_distill.py -q
"""
import copy
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from condense import distill
from condense.checkpoint import load_checkpoint, model_from_checkpoint
from condense.distill import distill_terms, geometry_loss, kd_loss, load_teacher
from configurator import ConfigError
from data.common import prepare_text, read_meta
from model import GPT, GPTConfig
from settings import check_config, defaults
from test_hardening import run  # a script in this interpreter, as test_hardening.py runs them

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # nothing here may reach the network
os.environ["HF_HUB_OFFLINE"] = "1"  # for the teachers loaded in this process
# the student of test_train.py: 2 layers of width 32, 32-token windows, 4 per batch, 12 steps
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
        "--eval_interval=6", "--log_interval=1", "--warmup_iters=3", "--lr_decay_iters=10",
        "--learning_rate=1e-2", "--min_lr=1e-3", "--dropout=0.1", "--track_sequences=0", "--device=cpu",
        "--compile=False", "--max_iters=12"]
DISTIL = ["--distill_weight=0.5", "--distill_temperature=2.0", "--distill_hidden_weight=1.0"]


# -----------------------------------------------------------------------------
# the KD term


def reference_kd(student, teacher, vocab_size, T):
    """T^2 * mean over tokens of sum_v p_t (log p_t - log p_s), p = softmax(z[:V] / T), in float64, written
    out: log softmax(z)_v = z_v - log sum_w exp(z_w)."""
    zs = student.double()[..., :vocab_size].reshape(-1, vocab_size) / T
    zt = teacher.double()[..., :vocab_size].reshape(-1, vocab_size) / T
    log_ps = zs - torch.log(torch.exp(zs - zs.max(-1, keepdim=True).values).sum(-1, keepdim=True)) \
        - zs.max(-1, keepdim=True).values
    log_pt = zt - torch.log(torch.exp(zt - zt.max(-1, keepdim=True).values).sum(-1, keepdim=True)) \
        - zt.max(-1, keepdim=True).values
    per_token = (torch.exp(log_pt) * (log_pt - log_ps)).sum(-1)  # (N,)
    return T ** 2 * per_token.sum() / per_token.numel()


def logits(shape, seed, scale=3.0):
    return (scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))).requires_grad_()


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("chunk", [distill.CHUNK_LOGITS, 50])  # one chunk, and a chunk of one token
def test_kd_equals_the_float64_reference_in_value_and_gradient(T, chunk, monkeypatch):
    monkeypatch.setattr(distill, "CHUNK_LOGITS", chunk)
    s64, t64 = logits((3, 5, 64), 0).double().detach().requires_grad_(), logits((3, 5, 70), 1).double()
    ours, ref = kd_loss(s64, t64, 50, T), reference_kd(s64, t64, 50, T)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    g_ours, = torch.autograd.grad(ours, s64)
    g_ref, = torch.autograd.grad(ref, s64)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-14)
    # fp32, as train.py runs it on a CPU: the same to fp32's precision
    s32 = s64.detach().float().requires_grad_()
    ours32 = kd_loss(s32, t64.float(), 50, T)
    assert ours32.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours32, s32)[0], g_ref.float(), rtol=1e-4, atol=1e-7)
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, t64, 50, T), (s64,))


def test_kd_is_zero_for_identical_logits():
    s = logits((2, 7, 64), 3)
    kd = kd_loss(s, s.detach().clone(), 64, 2.0)
    kd.backward()
    assert abs(kd.item()) < 1e-6 and s.grad.abs().max() < 1e-7


def test_kd_is_summed_over_the_vocabulary_and_averaged_over_the_tokens():
    """Not torch's batchmean on (B, T, V), which divides by B only and grows with T: the mean over the B * T
    tokens of the per-token sums, the same for the tokens in any batch shape."""
    s, t = logits((4, 6, 64), 4).detach(), logits((4, 6, 64), 5)
    per_token = [kd_loss(s[b, i], t[b, i], 64, 1.0).item() for b in range(4) for i in range(6)]
    assert kd_loss(s, t, 64, 1.0).item() == pytest.approx(sum(per_token) / 24, rel=1e-5)
    assert kd_loss(s.reshape(1, 24, 64), t.reshape(1, 24, 64), 64, 1.0).item() == pytest.approx(
        kd_loss(s, t, 64, 1.0).item(), rel=1e-6)
    wider = kd_loss(torch.cat([s, s], 1), torch.cat([t, t], 1), 64, 1.0)  # twice the tokens per sequence
    assert wider.item() == pytest.approx(kd_loss(s, t, 64, 1.0).item(), rel=1e-6)


def test_t_squared_keeps_the_term_the_same_size_at_high_temperature():
    """Why T^2: KL(softmax(a / T) || softmax(b / T)) falls like 1 / T^2 as T grows, to
    (1 / (2 V T^2)) sum_v (d_v - mean d)^2 with d = a - b (the softmax's Fisher information at the uniform
    distribution), so T^2 * KL tends to a limit that does not depend on T, and neither does its gradient."""
    s, t = logits((3, 4, 32), 6, scale=1.0).detach().double(), logits((3, 4, 32), 7, scale=1.0).double()
    d = t - s
    limit = ((d - d.mean(-1, keepdim=True)) ** 2).sum(-1).mean().item() / (2 * 32)
    for T in (50.0, 200.0):
        assert kd_loss(s, t, 32, T).item() == pytest.approx(limit, rel=2 / T)  # the next term is O(1 / T)
    assert kd_loss(s, t, 32, 100.0).item() / 100 ** 2 == pytest.approx(
        4 * kd_loss(s, t, 32, 200.0).item() / 200 ** 2, rel=0.02)  # the KL alone: a quarter at twice T
    grads = []
    for T in (50.0, 100.0):
        x = s.clone().requires_grad_()
        kd_loss(x, t, 32, T).backward()
        grads.append(x.grad.norm().item())
    assert grads[0] == pytest.approx(grads[1], rel=0.03)


def test_padded_vocabularies_are_sliced_before_any_softmax():
    """Our GPT pads its output to a multiple of 64: what lies beyond the tokenizer's ids on either side (here
    huge values) changes neither the term nor its gradient, which is 0 on the padding."""
    s, t = logits((2, 5, 40), 8).detach(), logits((2, 5, 40), 9).detach()
    plain = s.clone().requires_grad_()
    kd_plain = kd_loss(plain, t, 40, 2.0)
    kd_plain.backward()
    padded = torch.cat([s, torch.full((2, 5, 24), 50.0)], -1).requires_grad_()  # 64 wide
    kd_padded = kd_loss(padded, torch.cat([t, torch.full((2, 5, 88), -30.0)], -1), 40, 2.0)  # 128 wide
    kd_padded.backward()
    assert kd_padded.item() == kd_plain.item()
    assert torch.equal(padded.grad[..., :40], plain.grad) and not padded.grad[..., 40:].any()


def test_kd_in_bf16_keeps_its_gradient_in_the_logits_dtype():
    s, t = logits((2, 8, 64), 10), logits((2, 8, 64), 11)
    s16 = s.detach().bfloat16().requires_grad_()
    kd = kd_loss(s16, t.bfloat16(), 64, 2.0)
    kd.backward()
    assert kd.dtype == torch.float32 and s16.grad.dtype == torch.bfloat16
    assert kd.item() == pytest.approx(reference_kd(s16.detach(), t.bfloat16(), 64, 2.0).item(), rel=1e-5)


# -----------------------------------------------------------------------------
# the geometry term and the teacher in this process


def gpt(n_embd, seed, vocab=64):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=vocab, n_layer=2, n_head=2, n_embd=n_embd, bias=False))


def test_geometry_term_is_the_mean_squared_difference_of_the_cosines():
    hs, ht = torch.randn(2, 6, 16), torch.randn(2, 6, 40)  # the widths differ: cosines do not care
    cs = torch.nn.functional.cosine_similarity(hs[:, :, None], hs[:, None], dim=-1)
    ct = torch.nn.functional.cosine_similarity(ht[:, :, None], ht[:, None], dim=-1)
    off = ~torch.eye(6, dtype=torch.bool)
    expected = ((cs - ct) ** 2)[:, off].mean()
    assert geometry_loss(hs, ht).item() == pytest.approx(expected.item(), rel=1e-5)
    assert geometry_loss(hs, hs * 3).item() < 1e-12  # scale does not matter either (rounding aside)


def test_a_copy_of_the_teacher_has_no_geometry_term_and_no_kd(tmp_path):
    teacher = distill.Teacher(gpt(32, 0), hf=False, vocab_size=50)
    student = copy.deepcopy(teacher.model).train().requires_grad_(True)
    x = torch.randint(0, 50, (3, 16))
    logits_, _, hidden = student(x, return_hidden=True)
    kd, geo = distill_terms(teacher, x, logits_, hidden[-1], 2.0)
    assert geo.item() == 0.0 and abs(kd.item()) < 1e-6


@pytest.fixture(scope="module")
def teacher_run(data_dir, tmp_path_factory):
    """A teacher wider than the student (48 against 32), trained 12 steps by train.py on the test data set."""
    out_dir = tmp_path_factory.mktemp("teacher") / "out"
    train(out_dir, data_dir, "--n_embd=48", "--dropout=0.0")
    return out_dir


def test_the_teacher_stays_frozen_through_a_training_step(teacher_run, data_dir):
    meta = read_meta(data_dir)
    teacher = load_teacher(str(teacher_run), meta, 32, "cpu")
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    assert not teacher.model.training and teacher.vocab_size == meta["vocab_size"] == 28
    student = gpt(32, 1)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    x = torch.randint(0, 28, (4, 32))
    logits_, ce, hidden = student(x, x, return_hidden=True)
    kd, geo = distill_terms(teacher, x, logits_, hidden[-1], 2.0)
    (0.5 * ce + 0.5 * kd + geo).backward()
    optimizer.step()
    assert kd.item() > 0 and geo.item() > 0 and student.lm_head.weight.grad.abs().sum() > 0
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert load_teacher(str(teacher_run), meta, 32, "cpu").fingerprint == teacher.fingerprint


# -----------------------------------------------------------------------------
# train.py with a teacher


def train(out_dir, data_dir, *args, check=True, nproc=1):
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] * (nproc > 1)
    result = subprocess.run([sys.executable, *launcher, "train.py", *TINY, f"--data_dir={data_dir}",
                             f"--out_dir={out_dir}", *args], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(out_dir):
    records = [json.loads(line) for line in Path(out_dir, "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r for r in records if "loss" in r}, {r["iter"]: r for r in records if "val_loss" in r}


def weights(out_dir):
    return load_checkpoint(os.path.join(out_dir, "ckpt.pt"))["model"]


@pytest.fixture(scope="module")
def student_run(teacher_run, data_dir, tmp_path_factory):
    """12 steps of the test_train.py student, distilled from teacher_run with the geometry term on."""
    out_dir = tmp_path_factory.mktemp("student") / "out"
    before = (teacher_run / "ckpt.pt").read_bytes()
    result = train(out_dir, data_dir, f"--distill_from={teacher_run}", *DISTIL)
    assert (teacher_run / "ckpt.pt").read_bytes() == before  # the teacher's run is left as it was
    return out_dir, result.stdout


def test_distillation_logs_ce_kd_and_geometry_apart(student_run, teacher_run):
    out_dir, stdout = student_run
    steps, evals = metrics(out_dir)
    assert sorted(steps) == list(range(12)) and sorted(evals) == [0, 6, 12]
    for r in steps.values():
        assert r["kd"] > 0 and r["geometry"] > 0 and r["dispersion"] == 0
        assert r["loss"] == pytest.approx(0.5 * r["ce"] + 0.5 * r["kd"] + 1.0 * r["geometry"])
    assert steps[11]["kd"] < steps[0]["kd"] and steps[11]["geometry"] < steps[0]["geometry"]
    assert "(ce " in stdout and ", kd " in stdout and ", geometry " in stdout
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))
    assert ckpt["config"]["distill_from"] == str(teacher_run)
    assert ckpt["teacher"]["parameters"] == model_from_checkpoint(
        load_checkpoint(os.path.join(teacher_run, "ckpt.pt"))).num_params(non_embedding=False)


def test_weight_zero_trains_the_same_student_as_no_teacher(teacher_run, data_dir, tmp_path):
    """With alpha 0 and no geometry term the teacher only watches (kd is logged): the same seed gives the same
    student, bit for bit, as a run without a teacher. Loading the teacher does not touch the random streams
    of the student's initialisation and dropout."""
    train(tmp_path / "alone", data_dir, "--max_iters=6")
    train(tmp_path / "watched", data_dir, "--max_iters=6", f"--distill_from={teacher_run}",
          "--distill_weight=0")
    alone, watched = metrics(tmp_path / "alone")[0], metrics(tmp_path / "watched")[0]
    assert [alone[i]["ce"] for i in range(6)] == [watched[i]["ce"] for i in range(6)]
    assert all(watched[i]["kd"] > 0 for i in range(6))
    ours, theirs = weights(tmp_path / "alone"), weights(tmp_path / "watched")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_resume_with_a_teacher_is_exact_and_refuses_another(student_run, teacher_run, data_dir, tmp_path):
    half = tmp_path / "half"
    train(half, data_dir, f"--distill_from={teacher_run}", *DISTIL, "--max_iters=6")
    spare = shutil.copytree(half, tmp_path / "spare")
    train(half, data_dir, f"--distill_from={teacher_run}", *DISTIL, "--init_from=resume")
    steps, evals = metrics(half)
    straight_steps, straight_evals = metrics(student_run[0])
    assert [steps[i] | {"ms": 0, "tokens_per_s": 0, "peak_mem_mb": 0} for i in range(6, 12)] == [
        straight_steps[i] | {"ms": 0, "tokens_per_s": 0, "peak_mem_mb": 0} for i in range(6, 12)]
    assert evals[12] == straight_evals[12]
    ours, theirs = weights(half), weights(student_run[0])
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    # another teacher under another name, no teacher, and another teacher under the same name
    other = shutil.copytree(teacher_run, tmp_path / "other_teacher")
    result = train(spare, data_dir, f"--distill_from={other}", *DISTIL, "--init_from=resume", check=False)
    assert_clean_error(result, f"was trained with distill_from={teacher_run}", f"settings say {other}")
    result = train(spare, data_dir, "--init_from=resume", check=False)
    assert_clean_error(result, f"was trained with distill_from={teacher_run}")
    ckpt = torch.load(other / "ckpt.pt", weights_only=True)
    ckpt["model"]["lm_head.weight"] += 0.01  # a teacher retrained into the same folder
    torch.save(ckpt, other / "ckpt.pt")
    spare_ckpt = torch.load(spare / "ckpt.pt", weights_only=True)
    spare_ckpt["config"]["distill_from"] = str(other)  # as if it had been trained from this folder
    torch.save(spare_ckpt, spare / "ckpt.pt")
    result = train(spare, data_dir, f"--distill_from={other}", *DISTIL, "--init_from=resume", check=False)
    assert_clean_error(result, "is not the teacher", "was trained with (its weights have changed)")


def test_two_processes_with_a_teacher_match_one(teacher_run, data_dir, tmp_path):
    args = ["--dropout=0.0", "--gradient_accumulation_steps=2", "--max_iters=4", "--eval_interval=4",
            f"--distill_from={teacher_run}", *DISTIL]
    train(tmp_path / "one", data_dir, *args)
    train(tmp_path / "two", data_dir, *args, nproc=2)
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4) for k in one)
    steps_one, steps_two = metrics(tmp_path / "one")[0], metrics(tmp_path / "two")[0]
    for key in ("ce", "kd", "geometry"):  # the whole global batch's terms, not rank 0's share
        assert [steps_two[i][key] for i in range(4)] == pytest.approx([steps_one[i][key] for i in range(4)],
                                                                       abs=1e-5)


# -----------------------------------------------------------------------------
# one sentence for every mistake


def assert_clean_error(result, *words):
    message = result.stderr.strip()
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith("error: ") and all(w in message for w in words), message


def run_in_process(*args):
    """train.py in this interpreter (a subprocess costs seconds of imports): the message of its sys.exit, or
    None if it ran to its end."""
    return run("train.py", *TINY, *args)


def assert_one_sentence(code, *words):
    assert isinstance(code, str) and code.startswith("error: ") and "\n" not in code, code
    assert all(w in code for w in words), code


@pytest.mark.parametrize("args, words", [
    (["--distill_weight=1.5"], ["distill_weight=1.5 is not allowed: it must be alpha in [0, 1]"]),
    (["--distill_weight=-0.1"], ["distill_weight=-0.1 is not allowed"]),
    (["--distill_temperature=0"], ["distill_temperature=0.0 is not allowed: it must be a temperature above"]),
    (["--distill_temperature=-1"], ["distill_temperature=-1.0 is not allowed"]),
    (["--distill_hidden_weight=1"], ["distill_hidden_weight=1.0", "distill_from names none"]),
    (["--distill_from=OUT", "--out_dir=OUT"], ["is this run's own out_dir", "cannot be its own teacher"]),
], ids=["alpha_above_1", "alpha_below_0", "T_zero", "T_negative", "geometry_without_teacher", "self"])
def test_bad_distillation_settings_stop_before_anything_is_written(data_dir, tmp_path, args, words):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    code = run_in_process(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", *args)
    assert_one_sentence(code, *words)
    assert not (tmp_path / "out").exists()


def test_the_defaults_train_without_a_teacher():
    config = defaults()
    assert config["distill_from"] == "" and config["distill_hidden_weight"] == 0
    check_config(config)
    with pytest.raises(ConfigError, match="distill_weight=2.0 is not allowed"):  # checked with no teacher too
        check_config({**config, "distill_weight": 2.0})


def edited_teacher(teacher_run, tmp_path, **model_args):
    """A copy of the teacher whose checkpoint says other model_args (checked before its weights load)."""
    folder = shutil.copytree(teacher_run, tmp_path / "edited")
    ckpt = torch.load(folder / "ckpt.pt", weights_only=True)
    ckpt["model_args"].update(model_args)
    torch.save(ckpt, folder / "ckpt.pt")
    return folder


def test_every_bad_teacher_is_one_sentence(teacher_run, data_dir, tmp_path):
    def code(teacher, *more):
        return run_in_process(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'student'}",
                              f"--distill_from={teacher}", *more)
    assert_one_sentence(code(tmp_path / "no_such_run"), "does not exist", "out_dir of a train.py run")
    assert_one_sentence(code("someone/some-model"), "does not exist")  # a hub name: a char data set has none
    (tmp_path / "empty").mkdir()
    assert_one_sentence(code(tmp_path / "empty"), "holds no ckpt.pt", "char-level (another tokenizer)")
    assert_one_sentence(code(edited_teacher(teacher_run, tmp_path / "v", vocab_size=16)),
                        "vocabulary of 16, smaller than the data set's 28")
    assert_one_sentence(code(edited_teacher(teacher_run, tmp_path / "c", block_size=16)),
                        "reads at most 16 tokens, fewer than block_size=32", "set block_size to 16")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert_one_sentence(code(tmp_path / "broken"), "cannot read checkpoint")
    # another tokenizer: a teacher trained on another character data set (other text, other characters)
    rng = random.Random(1)
    prepare_text("\n".join("".join(rng.choice("abcxyz ") for _ in range(60)) for _ in range(200)),
                 tmp_path / "other_data", block_size=32)  # 8 characters: a b c x y z, space and newline
    other = tmp_path / "other_teacher"
    train(other, tmp_path / "other_data", "--max_iters=2", "--eval_interval=2")
    assert_one_sentence(code(other), "was trained with another tokenizer", "(char, 8 tokens)",
                        "(char, 28 tokens, meta.json differs)")
    assert not (tmp_path / "student").exists()  # each stopped before out_dir was made


# -----------------------------------------------------------------------------
# a Hugging Face teacher: a GPT-2-BPE data set and GPT-2's tokenizer


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A GPT-2-BPE data set; tiny random GPT-2 models saved with GPT-2's tokenizer (the right one, one with
    a vocabulary of 1,000, one with a context of 16) and one saved with another tokenizer."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from scripts.export import gpt2_tokenizer
    root = tmp_path_factory.mktemp("hf")
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(300))
    prepare_text(text, root / "data", tokenizer="gpt2", block_size=32)
    tok = gpt2_tokenizer(64)
    for name, vocab, positions in (("gpt2", 50257, 64), ("small_vocab", 1000, 64), ("short", 50257, 16),
                                   ("other_tokenizer", 50257, 64)):
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=32, n_layer=2,
                                         n_head=2)
        transformers.GPT2LMHeadModel(config).save_pretrained(root / name)
        if name != "other_tokenizer":
            tok.save_pretrained(root / name)
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *sorted(set(text.split()))])},
                                       unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(
        root / "other_tokenizer")
    return root


def test_a_hugging_face_teacher_trains_a_student(hf, tmp_path):
    out_dir = tmp_path / "student"
    train(out_dir, hf / "data", f"--distill_from={hf / 'gpt2'}", *DISTIL, "--max_iters=3",
          "--eval_interval=3")
    steps = metrics(out_dir)[0]
    assert sorted(steps) == [0, 1, 2] and all(r["kd"] > 0 and r["geometry"] > 0 for r in steps.values())
    assert steps[2]["kd"] < steps[0]["kd"]
    transformers = pytest.importorskip("transformers")
    teacher = transformers.GPT2LMHeadModel.from_pretrained(hf / "gpt2")
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))
    assert ckpt["teacher"]["parameters"] == sum(p.numel() for p in teacher.parameters())


def test_every_bad_hugging_face_teacher_is_one_sentence(hf, data_dir, tmp_path):
    def code(teacher, data=hf / "data"):
        return run_in_process(f"--data_dir={data}", f"--out_dir={tmp_path / 'student'}",
                              f"--distill_from={teacher}")
    assert_one_sentence(code(hf / "other_tokenizer"), "another tokenizer than GPT-2's")
    assert_one_sentence(code(hf / "small_vocab"), "vocabulary of 1000, smaller than GPT-2's 50257")
    assert_one_sentence(code(hf / "short"), "reads at most 16 tokens, fewer than block_size=32")
    assert_one_sentence(code("nobody-here/no-such-model"), "not in the local cache")  # offline
    assert_one_sentence(code(hf / "gpt2", data=data_dir), "char-level (another tokenizer)")
    assert not (tmp_path / "student").exists()
