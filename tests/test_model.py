"""Tests for model.py: shapes, causality, equivalence with Hugging Face GPT-2, training, sampling,
checkpoints.

    python -m pytest tests/test_model.py -q

The Hugging Face model is a small randomly initialised transformers GPT2LMHeadModel: no download.
"""
import math
import os

import pytest
import torch
from torch.nn import functional as F

from condense.checkpoint import config_from_settings, load_checkpoint, model_from_checkpoint
from condense.device import peak_flops
from model import GPT, GPTConfig
from settings import defaults as train_settings

TINY = dict(block_size=16, vocab_size=40, n_layer=3, n_head=2, n_embd=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread; two threads on a busy machine can each wait for the
    other at every operation and take 30 times as long. The thread count is put back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def tokens(B=3, T=16, vocab=40, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_loss():
    model = tiny_model().eval()
    x, y = tokens(), tokens(seed=2)
    logits, loss = model(x)
    assert logits.shape == (3, 16, 40) and loss is None  # every position, not only the last
    logits, loss, hidden = model(x, y, return_hidden=True)
    assert logits.shape == (3, 16, 40) and loss.shape == ()
    assert len(hidden) == TINY["n_layer"] + 1 and all(h.shape == (3, 16, 32) for h in hidden)
    assert torch.allclose(loss, F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    assert torch.equal(model(x, y)[0], logits)  # return_hidden changes nothing else
    # targets of -1 are ignored, and sliced (non-contiguous) targets work
    y_masked = y.clone()
    y_masked[:, :8] = -1
    expected = F.cross_entropy(logits[:, 8:].flatten(0, 1), y[:, 8:].flatten())
    assert torch.allclose(model(x, y_masked)[1], expected)
    xy = tokens(T=17)
    assert torch.allclose(model(xy[:, :-1], xy[:, 1:])[1], model(xy[:, :-1], xy[:, 1:].contiguous())[1])


def test_hidden_states_follow_the_transformers_convention():
    model = tiny_model().eval()
    x = tokens()
    _, _, hidden = model(x, return_hidden=True)
    t = model.transformer
    h = t.wte(x) + t.wpe(torch.arange(16))
    assert torch.allclose(hidden[0], h)  # entry 0: token + position embedding
    for i, block in enumerate(t.h[:-1]):
        h = block(h)
        assert torch.allclose(hidden[i + 1], h, atol=1e-6)  # residual stream after block i + 1
    assert torch.allclose(hidden[-1], t.ln_f(t.h[-1](h)), atol=1e-6)  # the last entry after ln_f
    assert torch.allclose(model.lm_head(hidden[-1]), model(x)[0], atol=1e-6)


def test_causality():
    """Changing the tokens from position t on never changes logits or hidden states before t."""
    model = tiny_model().eval()
    x = tokens()
    logits, _, hidden = model(x, return_hidden=True)
    for t in (1, 7, 15):
        changed = x.clone()
        changed[:, t:] = (changed[:, t:] + 1 + torch.arange(16 - t)) % 40
        logits2, _, hidden2 = model(changed, return_hidden=True)
        assert torch.allclose(logits2[:, :t], logits[:, :t], atol=1e-6)
        assert not torch.allclose(logits2[:, t:], logits[:, t:], atol=1e-3)  # the test can see a change
        for h, h2 in zip(hidden, hidden2):
            assert torch.allclose(h2[:, :t], h[:, :t], atol=1e-6)


def hf_gpt2(**overrides):
    import transformers  # in requirements-dev.txt; imported here because it takes seconds
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=32, n_layer=3, n_head=2,
                                     bos_token_id=0, eos_token_id=0, **overrides)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("n_inner", [None, 48])
def test_from_hf_gives_the_same_logits_and_hidden_states(n_inner):
    hf = hf_gpt2(n_inner=n_inner)
    with torch.no_grad():  # transformers initialises biases to zero: give them values so they are tested too
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    ours = GPT.from_hf(hf).eval()
    assert ours.transformer.h[0].mlp.c_fc.weight.shape == (n_inner or 128, 32)
    x = tokens()
    with torch.no_grad():
        theirs = hf(x, output_hidden_states=True)
        logits, _, hidden = ours(x, return_hidden=True)
    assert torch.allclose(logits, theirs.logits, atol=1e-5)
    assert len(hidden) == len(theirs.hidden_states) == 4
    for h, h_hf in zip(hidden, theirs.hidden_states):
        assert torch.allclose(h, h_hf, atol=1e-5)


def test_from_hf_refuses_models_it_cannot_copy_exactly():
    with pytest.raises(ValueError, match="GELU"):
        GPT.from_hf(hf_gpt2(activation_function="relu"))
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        GPT.from_hf(hf_gpt2(layer_norm_epsilon=1e-6))
    with pytest.raises(ValueError, match="tied"):
        GPT.from_hf(hf_gpt2(tie_word_embeddings=False))


def test_overfits_one_batch():
    model = tiny_model(dropout=0.0)
    xy = tokens(B=4, T=17)
    optimizer = model.configure_optimizers(0.0, 1e-2, (0.9, 0.95), "cpu")
    for _ in range(60):
        _, loss = model(xy[:, :-1], xy[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05  # from about ln(40) = 3.7


def test_generate():
    model = tiny_model().eval()
    prompt = tokens(B=2, T=5)
    out = model.generate(prompt, max_new_tokens=20, top_k=1)  # 25 tokens: longer than block_size 16
    assert out.shape == (2, 25) and torch.equal(out[:, :5], prompt)
    assert out.min() >= 0 and out.max() < 40
    torch.manual_seed(123)  # top_k=1 is greedy: no randomness left
    assert torch.equal(model.generate(prompt, max_new_tokens=20, top_k=1, temperature=0.7), out)
    greedy = prompt
    for _ in range(20):  # the same by hand: argmax of the last position, context cropped to block_size
        logits, _ = model(greedy[:, -16:])
        greedy = torch.cat([greedy, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, greedy)
    sampled = [model.generate(prompt, max_new_tokens=20, top_k=None) for _ in range(3)]
    assert not all(torch.equal(s, sampled[0]) for s in sampled)  # sampling does vary


def test_mlp_dim():
    assert tiny_model().transformer.h[0].mlp.c_fc.weight.shape == (128, 32)  # None means 4 * n_embd
    model = tiny_model(mlp_dim=24)
    for block in model.transformer.h:
        assert block.mlp.c_fc.weight.shape == (24, 32) and block.mlp.c_proj.weight.shape == (32, 24)
    assert model(tokens())[0].shape == (3, 16, 40)


def test_config_errors():
    with pytest.raises(ValueError, match="n_embd=30 must be divisible by n_head=4"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="longer than block_size 16"):
        tiny_model()(tokens(T=17))


def test_weight_decay_only_on_matrices():
    model = tiny_model(bias=True)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}  # tied lm_head / wte appear once
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {n for n, p in model.named_parameters() if p.dim() == 2}
    assert "transformer.wte.weight" in decayed and "transformer.h.0.mlp.c_fc.weight" in decayed
    assert all(p.dim() == 1 for p in no_decay["params"])  # biases and LayerNorm gains
    assert "transformer.h.0.ln_1.weight" in {names[id(p)] for p in no_decay["params"]}
    everything = decay["params"] + no_decay["params"]
    assert len({id(p) for p in everything}) == len(everything) == len(list(model.parameters()))


def test_hidden_states_carry_gradients():
    model = tiny_model()
    _, _, hidden = model(tokens(), return_hidden=True)
    for i, h in enumerate(hidden):
        model.zero_grad(set_to_none=True)
        h.pow(2).mean().backward(retain_graph=True)
        assert model.transformer.wte.weight.grad.abs().sum() > 0
        if i >= 1:  # entry i depends on block i (and every block before it)
            grad = model.transformer.h[i - 1].attn.c_attn.weight.grad
            assert grad is not None and grad.abs().sum() > 0


def test_embed_noise_is_bounded_and_only_in_training():
    alpha = 5.0
    model = tiny_model(embed_noise_alpha=alpha)  # dropout 0, so entry 0 is embedding + noise
    x = tokens(B=8)
    t = model.transformer
    clean = t.wte(x) + t.wpe(torch.arange(16))  # (B, T, C)
    bound = alpha / math.sqrt(16 * 32)
    noise = model(x, return_hidden=True)[2][0] - clean
    assert noise.abs().max() <= bound * (1 + 1e-5)
    assert noise.abs().max() > 0.9 * bound  # uniform on the whole interval: 4096 draws reach near the edge
    assert abs(noise.mean().item()) < 0.05 * bound
    assert not torch.equal(model(x, return_hidden=True)[2][0] - clean, noise)  # fresh noise each call
    model.eval()
    assert torch.equal(model(x, return_hidden=True)[2][0], clean)  # none in eval mode


def test_peak_flops():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12  # not read as the SXM H100
    assert peak_flops("NVIDIA H100 NVL") == 835e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA L40S") == 362e12
    assert peak_flops("NVIDIA L40") == 181e12  # not read as an L4
    assert peak_flops("NVIDIA GeForce RTX 4090") == 165e12
    assert peak_flops("Tesla T4") == 65e12
    assert peak_flops("NVIDIA A10G") is None
    assert peak_flops("Some Future Accelerator") is None


def save_tiny_checkpoint(path):
    model = tiny_model()
    torch.save({"model": model.state_dict(), "model_args": dict(TINY), "iter_num": 0}, path)
    return model


def test_checkpoint_round_trip(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    model = save_tiny_checkpoint(path).eval()
    loaded = model_from_checkpoint(load_checkpoint(path)).eval()
    x = tokens()
    assert torch.equal(loaded(x)[0], model(x)[0])


class NotData:  # pickled below: weights_only loading must refuse to run code from a checkpoint
    pass


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint at .*train one first"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    real = tmp_path / "real.pt"
    save_tiny_checkpoint(str(real))
    data = real.read_bytes()
    cases = {
        "random.pt": os.urandom(4096),
        "truncated.pt": data[:len(data) // 2],
        "empty.pt": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit, match="cannot read checkpoint .* corrupt or not ours"):
            load_checkpoint(str(tmp_path / name))
    torch.save({"code": NotData()}, tmp_path / "code.pt")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        load_checkpoint(str(tmp_path / "code.pt"))
    for name, obj in {"other_dict.pt": {"state": torch.zeros(2)}, "tensor.pt": torch.zeros(3),
                      "no_args.pt": {"model": {}}}.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(SystemExit, match="is not a checkpoint written by train.py"):
            load_checkpoint(str(tmp_path / name))


def test_config_from_settings_is_the_model_train_py_settings_describe():
    """train.py, measure.py --init and scripts/bench.py all build their model with it, from train.py's
    settings."""
    settings = {**train_settings(), "n_layer": 3, "n_embd": 48, "n_head": 4, "mlp_dim": 0, "dropout": 0.2,
                "bias": False, "block_size": 32, "embed_noise_alpha": 5.0}
    config = config_from_settings(settings, vocab_size=65)
    assert config == GPTConfig(block_size=32, vocab_size=128, n_layer=3, n_head=4, n_embd=48, mlp_dim=192,
                               dropout=0.2, bias=False, embed_noise_alpha=5.0)
    assert config_from_settings({**settings, "mlp_dim": 100}, vocab_size=50257).mlp_dim == 100
    assert config_from_settings(settings, vocab_size=50257).vocab_size == 50304
