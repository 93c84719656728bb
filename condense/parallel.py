"""
Speed paths of condensation.measure() on a CPU: batches side by side, one per core, and freed memory kept
for the next layer instead of handed back to the kernel.
"""

import ctypes
import platform
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_kept = None  # keep_freed_memory's answer, once asked


def keep_freed_memory():
    """Ask glibc's malloc to keep the memory a forward pass frees for the next one: every block's activations
    (6 MiB for one GPT-2 window) are allocated and freed anew, and by default glibc gives freed memory at the
    top of its heap back to the kernel and serves big requests by fresh mappings, so each layer faulted its
    pages back in, zeroed: 56,000-590,000 page faults per 8 GPT-2 windows, about 6% of the measurement's time
    on one thread (docs/performance.md). Now requests up to 32 MiB (glibc's limit) come from the heap, which
    is trimmed only beyond 1 GiB free. The process keeps its peak heap; results are the same to the bit.
    Once per process, on Linux with glibc; True if applied."""
    global _kept
    if _kept is None:
        _kept = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
            _kept = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 and mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
    return _kept


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
