"""
Speed path of condensation.measure() on a CPU: batches side by side, one per core.
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch


@contextmanager
def parallel_map(device, num_batches):
    """A map that runs as many batches at once as torch has threads, each in a thread of its own with one
    thread for torch, and yields their results in order. Each batch then takes its forward pass and its
    statistics on its own core: the statistics' many small operations (and the opt-in eigendecompositions,
    single-threaded: cosines.eigenvalues) would otherwise leave the other cores idle, and every small
    operation of a threaded forward pass waits for the slowest core (on a busy 2-core machine, 8 GPT-2
    windows took 8.4-9.5 s side by side against 19-23 s with two threads per operation). Memory: one batch's
    activations per core, still flat in depth and N. The threads share the model, whose forward pass in eval
    mode must not change it (true of every architecture tested). On a GPU, with one thread, or with fewer
    batches than threads (cores would idle, and one thread count cannot be shared safely), the plain map."""
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1 or num_batches < threads:
        yield map
        return
    torch.set_num_threads(1)  # threads start with it (and MKL's count is global)
    pool = ThreadPoolExecutor(threads)
    try:
        yield pool.map
    finally:
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(threads)
