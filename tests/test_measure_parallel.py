"""Tests of measure() on several CPU cores: batches side by side, one thread each (condense/parallel.py),
give the Result one thread gives, bit for bit; errors reach the caller; torch's thread count comes back; with
fewer batches than threads, they run one after the other on every thread.

    python -m pytest tests/test_measure_parallel.py -q
"""

import os
import subprocess
import sys
import threading

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import condensation  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

VOCAB = 100


def ours():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=32, vocab_size=VOCAB))


def llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, num_hidden_layers=3,
                                      max_position_embeddings=64)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def sequences():
    """7 sequences of mixed lengths: 4 batches of 2, the shorter ones padded."""
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (n,), generator=g) for n in (9, 32, 32, 12, 32, 5, 32)]


@pytest.fixture
def threads():
    """Sets torch's thread count for a test (the suite's workers run with one) and puts it back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("make", [ours, llama])
def test_batches_side_by_side_give_the_result_of_one_thread(make, threads, monkeypatch):
    model, seqs = make(), sequences()
    threads(1)
    one = condensation.measure(model, seqs, batch_size=2)

    # Two batches must be in their statistics at the same moment to pass this barrier: it proves they run
    # side by side (one after the other, the first would wait for the second in vain and break it).
    real, seen, lock = condensation.layer_sums, [], threading.Lock()
    together = threading.Barrier(2, timeout=10)

    def layer_sums(h, lengths, bins, **spectrum):
        with lock:
            seen.append((threading.get_ident(), torch.get_num_threads()))
            first_two = len(seen) <= 2
        if first_two:
            together.wait()
        return real(h, lengths, bins, **spectrum)

    monkeypatch.setattr(condensation, "layer_sums", layer_sums)
    threads(3)
    done = []
    side = condensation.measure(model, seqs, batch_size=2, progress=lambda d, n: done.append((d, n)))
    assert side == one  # every number, to the last bit
    assert len({ident for ident, _ in seen}) >= 2 and {n for _, n in seen} == {1}  # 3 batches at once, 1 each
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert done == [(2, 7), (4, 7), (6, 7), (7, 7)]  # in order
    assert torch.get_num_threads() == 3


def test_fewer_batches_than_cores_run_one_after_the_other_on_every_thread(threads, monkeypatch):
    model, seen = ours(), []
    real = condensation.layer_sums

    def layer_sums(h, lengths, bins, **spectrum):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return real(h, lengths, bins, **spectrum)

    monkeypatch.setattr(condensation, "layer_sums", layer_sums)
    threads(4)
    condensation.measure(model, sequences()[:3], batch_size=1)  # 3 batches, 4 threads
    assert set(seen) == {(threading.get_ident(), 4)} and torch.get_num_threads() == 4


def test_an_error_in_a_batch_reaches_the_caller_and_the_threads_come_back(threads, monkeypatch):
    model, calls = ours(), []

    def layer_sums(h, lengths, bins, **spectrum):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("the sixth entry fails")
        return torch.zeros(3), torch.zeros(bins, dtype=torch.long)

    monkeypatch.setattr(condensation, "layer_sums", layer_sums)
    threads(2)
    model.train()
    with pytest.raises(RuntimeError, match="the sixth entry fails"):
        condensation.measure(model, sequences(), batch_size=1)
    assert torch.get_num_threads() == 2 and model.training
    assert len(calls) < 7 * 4  # the batches not yet started were cancelled


def test_a_gpu_one_thread_or_fewer_batches_than_threads_use_the_plain_map(threads):
    threads(4)
    for device, batches in (("cuda", 8), (torch.device("meta"), 8), ("cpu", 3), ("cpu", 1)):
        with condensation.parallel_map(device, batches) as map_in_order:
            assert map_in_order is map
    threads(1)
    with condensation.parallel_map("cpu", 8) as map_in_order:
        assert map_in_order is map


def test_the_hooks_see_only_the_thread_that_streams(threads):
    """A forward pass in a thread without a consumer (here the caller's own, outside run) hands nothing."""
    model, x, seen = ours(), torch.randint(3, VOCAB, (1, 8)), []
    with torch.no_grad(), condensation.hidden_stream(model, condensation.find_blocks(model)) as run:
        model(x)
        assert seen == []
        run(x, lambda l, h: seen.append(l))
    assert seen == [0, 1, 2, 3]
    model(x)  # the hooks are gone
    assert seen == [0, 1, 2, 3]


@pytest.mark.skipif(not (sys.platform == "linux" and __import__("platform").libc_ver()[0] == "glibc"),
                    reason="glibc's malloc only")
def test_freed_memory_is_kept_for_the_next_layer():
    """Three measurements of a model whose MLP activations are 8 MiB: by default glibc hands freed memory back
    and the next layer faults thousands of pages in again; with keep_freed_memory, as measure() runs on a CPU,
    a few at most, as the heap happens to be laid out (0-2,560 seen, against 12,000-25,000). Each in a fresh
    process, where glibc's thresholds are still its defaults."""
    code = """if 1:
        import resource, sys, torch
        sys.path.insert(0, {root!r})
        import condensation
        from model import GPT, GPTConfig
        torch.set_num_threads(1)
        if sys.argv[1] == "default":
            condensation.keep_freed_memory = lambda: False
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=256, block_size=256, vocab_size=100))
        x = torch.randint(100, (8, 256))
        condensation.measure(model, x, batch_size=8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            condensation.measure(model, x, batch_size=8)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """.format(root=ROOT)
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "keep")}
    assert faults["default"] > 3000 and faults["keep"] * 4 < faults["default"], faults


def test_the_head_is_skipped_only_in_the_streaming_thread():
    """While measure()'s hooks are on our GPT, its output head sees no positions in the thread that streams
    hidden states (they are not needed), and every position in any other call."""
    model, x = ours(), torch.randint(VOCAB, (2, 16))
    shapes = []
    model.lm_head.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape)))
    with torch.no_grad(), condensation.hidden_stream(model, condensation.find_blocks(model)) as run:
        run(x, lambda l, h: None)
        model(x)
    assert shapes == [(2, 0, VOCAB), (2, 16, VOCAB)]
