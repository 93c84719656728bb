"""
The statistics' share of the forward passes, measured one way for every benchmark of measure()
(scripts/bench_measure.py on a CPU, bench_measure_gpu.py on a device, bench.py's row of measure()'s speed):
the same measure() with each hidden state's statistics and with them replaced by nothing, in turn.
"""

import contextlib
import statistics
import time


@contextlib.contextmanager
def no_statistics():
    """measure() with each hidden state's statistics replaced by zeros: its forward passes alone, run exactly
    as in a measurement (the same batches and threads)."""
    import torch
    import condensation
    real = condensation.layer_sums
    condensation.layer_sums = lambda h, lengths, bins, **spectrum: (torch.zeros(3), torch.zeros(
        2 * condensation.cosines.COPIES * (bins + 2), dtype=torch.long))  # the raw counts' shape
    try:
        yield
    finally:
        condensation.layer_sums = real


@contextlib.contextmanager
def timed_statistics():
    """measure() with the time spent in each hidden state's statistics added up, over every thread: yields a
    dict whose "seconds" grows as they run."""
    import threading
    import condensation
    real, lock, spent = condensation.layer_sums, threading.Lock(), {"seconds": 0.0}

    def layer_sums(*args, **kwargs):
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        with lock:
            spent["seconds"] += time.perf_counter() - t0
        return out

    condensation.layer_sums = layer_sums
    try:
        yield spent
    finally:
        condensation.layer_sums = real


def with_and_without(runs, rounds, sync=lambda: None):
    """The statistics' share of the forward passes: each of runs (callables, one measurement each) timed with
    the statistics and with them replaced by nothing (no_statistics), in turn, `rounds` times over; the order
    flips from one run to the next and from one round to the next, so that neither side always goes first.
    sync empties a device's queue around each timing. Returns {share: the median of the pairs' ratios less 1,
    ratios, with and without: the times (s), inside: the seconds spent in the statistics during the with runs
    (timed_statistics)}."""
    out, inside = {"ratios": [], "with": [], "without": []}, 0.0
    for k in range(rounds):
        for i, run in enumerate(runs):
            for kind in ("with", "without") if (k + i) % 2 == 0 else ("without", "with"):
                with no_statistics() if kind == "without" else timed_statistics() as spent:
                    sync()
                    t0 = time.perf_counter()
                    run()
                    sync()
                    out[kind].append(time.perf_counter() - t0)
                inside += spent["seconds"] if kind == "with" else 0.0
            out["ratios"].append(out["with"][-1] / out["without"][-1])
    return {**out, "share": statistics.median(out["ratios"]) - 1, "inside": inside}
