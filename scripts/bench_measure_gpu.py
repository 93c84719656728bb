"""
The GPU section of scripts/bench_measure.py: measure() batched on a device, next to the authors' package.

    python -m scripts.bench_measure --sections=gpu --device=cuda   # 64 windows: out/bench_measure.md, .json

One child process on the device (`python scripts/bench_measure.py --child=gpu`) runs our measure() on
--windows windows of 512 tokens of the GPT-2-small-shaped model (random weights), in fp32 at batch size 1
and 16, and in bfloat16 at batch 16; each a warm-up run, then 3 timed runs (torch.cuda.synchronize around
each on a GPU): median and range. Then, at batch 16 in fp32, the statistics' share of the forward passes:
measure() with and without them, in turn, 3 pairs, the median of their ratios (bench_share.py). Then the
authors' package (embedding-condensation 2.0: one sequence at a time, fp32, output_hidden_states=True, the
cosine matrices in numpy on the CPU) in a child of --authors_python on the same device and windows, if that
Python can import it (a warm-up window, then one timed run); it needs only torch, numpy, transformers,
tqdm and matplotlib, so where those are installed

    pip install --no-deps embedding-condensation==2.0

installs it without the network's other packages. The numbers go to bench_measure.json (under "gpu"), which
scripts/gpu_suite.py's 'measure' step reads. measure_speed, scripts/bench.py's row of measure()'s speed,
times the same way.
"""

import json
import statistics
import subprocess
import sys
import time

from scripts.bench_measure import ROOT, run_child, summary, texts
from scripts.bench_share import with_and_without

LENGTH = 512  # tokens per window, as the package cuts them (max_length=512)
RUNS = (("float32", 1), ("float32", 16), ("bfloat16", 16))  # (dtype, batch size) of our timed runs
TIMED, SHARE_PAIRS = 3, 3  # timed runs after each warm-up; pairs with and without the statistics


def device_line(a):
    """The report's header line for the device, after checking --device; exits with one sentence if it
    cannot be used."""
    import torch
    try:
        kind = torch.device(a.device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu or cuda (cuda:N), not {a.device!r}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device={a.device}, but torch sees no CUDA GPU here; use --device=cpu.")
    if a.windows < 1 or a.layers < 1:
        raise SystemExit(f"error: --windows and --layers must be at least 1, not {a.windows} and {a.layers}.")
    name = torch.cuda.get_device_name(torch.device(a.device)) if kind == "cuda" else "CPU"
    return f"device: {a.device} ({name}); torch {torch.__version__}"


def seconds(fn, sync):
    """The wall time of fn(), the device's queue emptied before and after (sync: torch.cuda.synchronize on a
    GPU)."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def timed_runs(fn, sync, repeats=TIMED):
    """A warm-up run of fn (CUDA's start, kernel choices, the allocator's first blocks), then `repeats` timed
    ones: their times in seconds."""
    return [seconds(fn, sync) for _ in range(repeats + 1)][1:]


def measure_speed(model, sequences, batch_size, device, sync, repeats=3):
    """measure()'s median wall time in ms on sequences (N, T), and its statistics' share of the forward
    passes with the ratios it is the median of, from one warm-up and `repeats` pairs of runs with and without
    the statistics, in turn (with_and_without; above 1 for a model so small that its statistics cost more than
    it). For scripts/bench.py's report."""
    from condensation import measure
    run = lambda: measure(model, sequences, batch_size=batch_size, device=device)
    seconds(run, sync)  # CUDA's start, kernel choices, the allocator's first blocks
    pairs = with_and_without([run], repeats, sync)
    total = 1000 * statistics.median(pairs["with"])
    n, T = sequences.shape
    return dict(sequences=n, seq_len=T, ms=total, sequences_per_s=n / (total / 1000),
                tokens_per_s=n * T / (total / 1000), statistics_share=pairs["share"],
                share_ratios=pairs["ratios"])


def child_gpu(a):
    """Our measure() on --device: each of RUNS a warm-up then TIMED runs, and the statistics' share at batch
    16 in fp32; prints {runs: [{dtype, batch_size, timed: [{seconds}]}], share, share_ratios}."""
    sys.path.insert(0, ROOT)
    import torch
    from condensation import measure
    from condense.hf_models import load_hf
    sync = torch.cuda.synchronize if torch.device(a.device).type == "cuda" else lambda: None
    out, models = dict(runs=[]), {}
    for dtype, batch in RUNS:
        if dtype not in models:  # one copy on the device at a time
            models.clear()
            models[dtype], tokenizer = load_hf(a.model, a.device, dtype)
            seqs = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"][:LENGTH])
                    for t in texts(a)]
        run = lambda: measure(models[dtype], seqs, batch_size=batch, device=a.device)
        out["runs"].append(dict(dtype=dtype, batch_size=batch,
                                timed=[dict(seconds=t) for t in timed_runs(run, sync)]))
        if (dtype, batch) == ("float32", 16):  # with and without the statistics in turn
            pairs = with_and_without([run], SHARE_PAIRS, sync)
            out["share"], out["share_ratios"] = pairs["share"], pairs["ratios"]
    print(json.dumps(out))


def package_found(python):
    """True if `python` finds the authors' package (False too if there is no such program). find_spec, not
    import: a Python start without torch, so that a missing package costs nothing; a broken install fails in
    the package's run, with its error."""
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('embedding_condensation') is None)"
    try:
        return subprocess.run([python, "-c", check], capture_output=True, cwd=ROOT).returncode == 0
    except OSError:
        return False


def gpu_section(a, folder):
    """(report lines, numbers for bench_measure.json): our runs on the device, then the package's."""
    from scripts.bench_measure import make_model
    model = f"{folder}/gpt2_{a.layers}"
    make_model(model, a.layers)
    common = (f"--model={model}", f"--n={a.windows}", f"--device={a.device}")
    ours = run_child(a, sys.executable, "--child=gpu", *common)
    print(f"  gpu, ours: {ours}", flush=True)
    rows = [dict(dtype=r["dtype"], batch_size=r["batch_size"], timed=r["timed"],
                 median_s=statistics.median(t["seconds"] for t in r["timed"])) for r in ours["runs"]]
    for r in rows:
        r["windows_per_s"] = a.windows / r["median_s"]
    base = {(r["dtype"], r["batch_size"]): r["median_s"] for r in rows}
    numbers = dict(device=a.device, windows=a.windows, tokens=LENGTH, layers=a.layers, ours=rows,
                   speedup_batch16=base["float32", 1] / base["float32", 16], share=ours["share"],
                   share_ratios=ours["share_ratios"], package=None)
    lines = ["", f"On the device, {a.device}: our measure() on {a.windows} windows of {LENGTH} tokens, "
                 f"GPT-2-small shape ({a.layers} x 768, random weights), in one process; a warm-up run, then "
                 f"{TIMED} timed runs each, median (min - max):", "",
             "| | dtype | batch | measurement s | windows/s |", "|---|---|---:|---:|---:|"]
    lines += [f"| measure() | {r['dtype']} | {r['batch_size']} | "
              f"{summary(r['timed'], 'seconds', digits=3)} | {r['windows_per_s']:.1f} |" for r in rows]
    if package_found(a.authors_python):
        theirs = run_child(a, a.authors_python, "--child=theirs", *common)
        print(f"  gpu, theirs: {theirs}", flush=True)
        numbers["package"] = dict(seconds=theirs["seconds"], load_seconds=theirs["load_seconds"],
                                  times_ours=theirs["seconds"] / base["float32", 16],
                                  times_ours_batch1=theirs["seconds"] / base["float32", 1])
        lines.append(f"| embedding-condensation 2.0 (one run after a warm-up) | float32 | 1 | "
                     f"{theirs['seconds']:.3f} | {a.windows / theirs['seconds']:.1f} |")
    lines += ["", f"Batch 16 over batch 1 (fp32): {numbers['speedup_batch16']:.2f}x the windows per second; "
                  f"bfloat16 over fp32 at batch 16: {base['float32', 16] / base['bfloat16', 16]:.2f}x. "
                  f"Our statistics at batch 16, fp32: {100 * ours['share']:.1f}% of the forward passes "
                  f"(measure() with and without them, alternating, median of {SHARE_PAIRS} ratios: "
                  f"{', '.join(f'{x:.3f}' for x in ours['share_ratios'])})."]
    p = numbers["package"]
    lines += ["", f"The package (one sequence at a time, fp32, output_hidden_states=True, cosine matrices in "
              f"numpy on the CPU) takes {p['times_ours']:.2f}x our time at batch 16 in fp32 and "
              f"{p['times_ours_batch1']:.2f}x at batch 1." if p else
              f"The package was not run: embedding_condensation is not installed for {a.authors_python}; "
              "install it there with `pip install --no-deps embedding-condensation==2.0` (its code needs "
              "only torch, numpy, transformers, tqdm and matplotlib)."]
    return lines, numbers
