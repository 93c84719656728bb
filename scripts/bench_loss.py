"""
The dispersion term alone, for scripts/bench.py: its time stacked over layers against a loop over them
(train.py's two paths, chosen by dispersion_path), compiled or not, and the activation memory it keeps for
backward.

    python -m scripts.bench config/tiny_base.py --threads=1      # runs these after the training runs

Memory: the tensors the loss saves for backward are counted (saved_bytes, through autograd's saved-tensor
hooks) for several max_tokens = m and fitted to 4 * L * B * (a * m * C + k * m^2) bytes; docs/performance.md
gives the fit for each variant.
"""

import statistics
import time

import numpy as np
import torch

from dispersion import dispersion_loss


def sync(device_type):
    if device_type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device_type, repeats, warmup=1):
    """Median wall time of fn() in ms over repeats calls after warmup calls, waiting for the device."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device_type)
        t0 = time.perf_counter()
        fn()
        sync(device_type)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def loss_settings(s, variant):
    return dict(variant=variant, tau=s.dispersion_tau, clamp=s.dispersion_clamp, margin=s.dispersion_margin,
                norm_weight=s.dispersion_norm_weight, max_tokens=s.dispersion_tokens)


def stacked(hidden, layers, settings, loss=dispersion_loss):
    """train.py's way on a GPU: the chosen layers as one (L * B, T, C) batch, one call."""
    return loss(torch.stack([hidden[i] for i in layers]).flatten(0, 1), **settings)  # (L * B, T, C) in


def looped(hidden, layers, settings, loss=dispersion_loss):
    """train.py's way on a CPU: one call per layer (each draws its own token subset), then the mean over
    layers."""
    return sum(loss(hidden[i], **settings) for i in layers) / len(layers)


def bench_term(s, hidden, layers, device_type, compile_too):
    """Forward + backward of the dispersion term alone on the model's hidden states: stacked, looped, and
    (compile_too) under torch.compile in the form train.py uses on this device, as it runs with compile on."""
    rows = []
    train_form = looped if device_type == "cpu" else stacked
    for variant in s.variants:
        settings = loss_settings(s, variant)
        ways = {"stacked": lambda: stacked(hidden, layers, settings),
                "looped": lambda: looped(hidden, layers, settings)}
        if compile_too:
            compiled = torch.compile(dispersion_loss)
            ways["compiled"] = lambda: train_form(hidden, layers, settings, compiled)
        row = dict(variant=variant, compiled=None)
        for way, fn in ways.items():
            def step():
                for h in hidden:
                    h.grad = None
                fn().backward()
            row[way] = median_ms(step, device_type, s.term_repeats, warmup=2)
        rows.append(row)
        print(f"  term {variant:>13}: stacked {row['stacked']:.1f} ms, looped {row['looped']:.1f} ms, "
              f"compiled {fmt(row['compiled'], '.1f', unit=' ms')}", flush=True)
    return rows


def saved_bytes(fn, inputs):
    """Bytes of the tensors autograd keeps for backward while fn() runs (the activation memory of fn), counted
    once per storage and leaving out the inputs' own storage (the model keeps that anyway). Returns (bytes,
    out)."""
    own = {t.untyped_storage().data_ptr() for t in inputs}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(kept.values()), out


def bench_memory(s, L, B, C, device):
    """Activation memory of the stacked dispersion term for several m = max_tokens < T and at m = T, on random
    hidden states of the training shape (memory depends on shapes only), with a least-squares fit of
    bytes = 4 L B (a m C + k m^2): the gathered copy and the unit vectors (B m C each) plus k (B, m, m)
    matrices. Each m < T is also counted at T doubled: the bytes grow only by the 8 T bytes of the int64
    permutation the gather keeps (randperm(T)[:m] is a view of it), so the memory is bounded by max_tokens,
    not T."""
    T = s.block_size
    ms = sorted({m for m in (T // 8, T // 4, T // 2, s.dispersion_tokens) if 2 <= m < T} | {T})
    rows = []
    for variant in s.variants:
        settings = {**loss_settings(s, variant)}
        counted = {}
        for m in ms:
            for length in (T, 2 * T) if m < T else (T,):
                hidden = [torch.randn(B, length, C, device=device, requires_grad=True) for _ in range(L)]
                settings["max_tokens"] = m
                counted[(m, length)] = saved_bytes(lambda: stacked(hidden, range(L), settings), hidden)[0]
        x = np.array([[m * C, m * m] for m in ms], dtype=float) * 4 * L * B
        y = np.array([counted[(m, T)] for m in ms], dtype=float)
        (a, k), *_ = np.linalg.lstsq(x, y, rcond=None)
        fit_error = float(np.max(np.abs(x @ [a, k] - y) / y))
        growth = [counted[(m, 2 * T)] - counted[(m, T)] for m in ms if m < T]
        rows.append(dict(variant=variant, mib={m: counted[(m, T)] / 2**20 for m in ms}, a=float(a),
                         k=float(k), fit_error=fit_error, growth_2t=max(growth or [0])))
    return rows, ms


def cuda_term_peak(s, hidden, layers):
    """CUDA only: the peak extra memory allocated during forward + backward of the stacked term (transients
    too)."""
    out = {}
    for variant in s.variants:
        settings = loss_settings(s, variant)
        for h in hidden:
            h.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        stacked(hidden, layers, settings).backward()
        torch.cuda.synchronize()
        out[variant] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out

def fmt(v, spec, scale=1, unit=""):
    return "n/a" if v is None else format(scale * v, spec) + unit


def term_table(rows, cuda_peaks):
    lines = ["| variant | stacked ms | per-layer loop ms | loop / stacked | compiled ms |"
             + (" CUDA peak extra MiB (with the states' gradients) |" if cuda_peaks else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if cuda_peaks else "")]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['stacked']:.2f} | {r['looped']:.2f} | "
                     f"{r['looped'] / r['stacked']:.2f} | {fmt(r['compiled'], '.2f')} |"
                     + (f" {cuda_peaks[r['variant']]:.1f} |" if cuda_peaks else ""))
    return lines


def memory_table(rows, ms):
    lines = ["| variant | " + " | ".join(f"MiB at m={m}" for m in ms)
             + " | a | k | fit error | growth at 2T, bytes |",
             "|---|" + "---:|" * (len(ms) + 4)]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(f"{r['mib'][m]:.2f}" for m in ms)
                     + f" | {r['a']:.2f} | {r['k']:.2f} | {100 * r['fit_error']:.1f}% | {r['growth_2t']:,} |")
    return lines
