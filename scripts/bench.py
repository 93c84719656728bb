"""
Benchmark the training step with the dispersion loss off and with each variant on (time, tokens/s, peak
memory, MFU), the dispersion term alone (scripts/bench_loss.py: stacked over layers vs a loop, and its
activation memory), and measure()'s speed (scripts/bench_measure.py).

    python -m scripts.bench config/tiny_base.py --threads=1          # CPU: off and all six variants
    python -m scripts.bench config/tiny_base.py --variants=angular --repeats=5
    python -m scripts.bench config/small_base.py --warmup=10 --iters=50 --log_every=10   # GPU: bf16, compiled
    # the MFU target: GPT-2-small shape (124M), bf16 and compile, on an H100/H200
    python -m scripts.bench config/small_base.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 \
        --batch_size=16 --dropout=0.0 --variants=angular --warmup=10 --iters=50 --log_every=10

Settings work as in train.py (config files, then --key=value) and go to every training run; BENCH_SETTINGS
below steer the benchmark. It prints Markdown tables (they paste into the README) and writes SAVE.md and
SAVE.json. On a CPU shared with other work use --threads=1: with more threads than free cores every parallel
op waits for a descheduled thread, and the many small ops of the dispersion term suffer most (10x slower steps
were seen).

Training: each setting (off, then each variant at dispersion_weight `weight` unless the settings give one) is
a run of train.py itself in a subprocess, from scratch into a temporary out_dir; it evaluates once at
iteration 0 (left out of the step times) and logs every log_every steps. The first `warmup` steps
(compilation, allocator, caches) are dropped; a run's figure is the median ms of its other records; a
setting's figure is the median over `repeats` runs. Runs alternate (off, a, b, ..., then ..., b, a, off) so a
change in machine load shows in the spread (max - min over repeats, relative to the median) instead of moving
one setting. MFU = model FLOPs per token (model.flops_per_token: 6N + 12 L T C; the dispersion term is not
counted) x tokens/s / the device's peak FLOP/s from PEAK_FLOPS (condense/device.py), or --peak_tflops for a
device not in it. Peak memory is train.py's peak_mem_mb: the tensors' peak on CUDA, the peak resident size of
the whole process elsewhere.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from types import SimpleNamespace

import torch

from condensation import val_windows
from condense.checkpoint import config_from_settings
from condense.device import peak_flops, pick_device
from configurator import configure
from dispersion import VARIANTS, select_layers
from measure import data_meta
from model import GPT
from scripts.bench_loss import bench_memory, bench_term, cuda_term_peak, fmt, memory_table, sync, term_table
from scripts.bench_measure_gpu import measure_speed
from settings import HELP, check_ranges, defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
BENCH_SETTINGS = dict(
    iters=10,  # timed training steps per run, after the warm-up
    warmup=3,  # steps per run left out of the timing: compilation, allocator and cache warm-up
    repeats=3,  # runs per setting; each figure is the median over them
    # train.py's log_interval in the runs: a log waits for the device, so on a GPU use 10 or more
    log_every=1,
    variants="all",  # dispersion variants to run beside 'off': 'all', 'none' or names like 'angular,cosine'
    weight=0.1,  # dispersion_weight of the variant runs when the settings leave it at 0 (the paper's 0.1)
    threads=0,  # torch threads (OMP_NUM_THREADS) in the runs and here; 0 leaves the machine's default
    # peak FLOP/s of the device in TFLOP/s, for MFU on a device PEAK_FLOPS (condense/device.py) lacks (a CPU)
    peak_tflops=0.0,
    term_repeats=5,  # timed repeats of the dispersion term alone (stacked vs per-layer loop); 0 skips it
    # also time the term under torch.compile; None: where the runs compile (compile setting)
    term_compile=None,
    # count the activation memory the dispersion term keeps for backward, for several max_tokens
    memory_check=True,
    measure_sequences=32,  # sequences of block_size tokens timed through measure.measure(); 0 skips it
    measure_batch_size=8,  # sequences per forward pass in measure()
    save="",  # path stem of the files written (SAVE.md, SAVE.json); empty means out_dir/bench
)
BENCH_RULES = {  # the range of each, as settings.RULES gives train.py's: (test, what it must be)
    "iters": (lambda v: v >= 1, "at least 1"),
    "warmup": (lambda v: v >= 0, "0 or more"),
    "repeats": (lambda v: v >= 1, "at least 1"),
    "log_every": (lambda v: v >= 1, "at least 1"),
    "threads": (lambda v: v >= 0, "0 (the machine's default) or more"),
    "peak_tflops": (lambda v: v >= 0, "0 (from PEAK_FLOPS) or more"),
    "term_repeats": (lambda v: v >= 0, "0 (skipped) or more"),
    "measure_sequences": (lambda v: v >= 0, "0 (skipped) or more"),
    "measure_batch_size": (lambda v: v >= 1, "at least 1"),
}


# -----------------------------------------------------------------------------
# settings, device and model size


def read_settings(args):
    """(settings, the arguments for train.py): bench's own --key=value overrides are not passed on."""
    own = ("the benchmark's own settings", "scripts/bench.py", BENCH_RULES, "BENCH_SETTINGS")
    s = SimpleNamespace(**configure({**defaults(), **BENCH_SETTINGS}, args, __doc__, [HELP, own]))
    train_args = [a if a.startswith("--") else os.path.abspath(a) for a in args
                  if not (a.startswith("--") and a[2:].partition("=")[0] in BENCH_SETTINGS)]
    names = (list(VARIANTS) if s.variants == "all" else [] if s.variants == "none"  # 'none': 'off' alone
             else [v.strip() for v in s.variants.split(",") if v.strip()])
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not (names or s.variants == "none"):
        raise ValueError(f"unknown dispersion variant(s) {unknown or s.variants!r}; choose 'all', 'none' or "
                         f"names from {', '.join(VARIANTS)}.")
    check_ranges(vars(s), BENCH_RULES)
    s.variants = names
    return s, train_args


def resolve_device(s):
    """(device, device_type, dtype name) as train.py picks them."""
    device, device_type, dtype, _ = pick_device(s.device, s.dtype)
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} is not available here (torch sees no CUDA GPU); "
                         "pick --device=cpu.")
    return device, device_type, dtype


def device_name(device_type):
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    if device_type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        except OSError:
            model = ""
        return f"{model or platform.processor() or 'CPU'} ({os.cpu_count()} cores)"
    return device_type


def peak_flop_rate(s, device_type):
    """(peak FLOP/s or None, where it came from)."""
    if s.peak_tflops > 0:
        return s.peak_tflops * 1e12, "--peak_tflops"
    peak = peak_flops(torch.cuda.get_device_name()) if device_type == "cuda" else None
    return peak, "PEAK_FLOPS (condense/device.py)" if peak else None


def flops_per_token(s, vocab_size):
    """Training FLOPs per token of the model the settings describe, built on the meta device (no memory)."""
    with torch.device("meta"):
        return GPT(config_from_settings(vars(s), vocab_size)).flops_per_token(s.block_size)


# -----------------------------------------------------------------------------
# training runs (train.py in a subprocess)


def run_env(s):
    env = dict(os.environ)
    if s.threads:
        env["OMP_NUM_THREADS"] = str(s.threads)
    return env


def run_train(train_args, extra, out_dir, env):
    """Run train.py with the settings and extra overrides; return its step records from metrics.jsonl."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *train_args, *extra, f"--out_dir={out_dir}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"train.py failed ({last}); run it alone to see why: {' '.join(command)}")
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "ms" in r]


def timed_records(records, warmup):
    """The step records whose steps all come at or after step `warmup`. A record at iteration i holds the mean
    over the steps since the previous record: (previous i) + 1 .. i."""
    kept, previous = [], -1
    for r in records:
        if previous + 1 >= warmup:
            kept.append(r)
        previous = r["iter"]
    return kept


def max_iters_for(s):
    """Steps per run, so that the last step is a logged one and `iters` steps follow the warm-up."""
    return s.log_every * math.ceil((s.warmup + s.iters - 1) / s.log_every) + 1


def setting_overrides(name, s):
    """train.py overrides for one setting: 'off', or a variant name."""
    fixed = [f"--max_iters={max_iters_for(s)}", f"--log_interval={s.log_every}", "--eval_interval=1000000000",
             "--eval_iters=1", "--track_sequences=0", "--init_from=scratch", "--always_save_checkpoint=False"]
    if name == "off":
        return [*fixed, "--dispersion_weight=0.0"]
    return [*fixed, f"--dispersion_weight={s.dispersion_weight or s.weight}", f"--dispersion_variant={name}"]


def bench_training(s, train_args):
    """{setting: {"ms": [per repeat], "peak_mem_mb": [...], "load": [...]}}, runs alternating in order."""
    names = ["off", *s.variants]
    runs = {n: {"ms": [], "peak_mem_mb": [], "load": []} for n in names}
    env = run_env(s)
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        for repeat in range(s.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                load = os.getloadavg()[0]
                records = run_train(train_args, setting_overrides(name, s),
                                    os.path.join(tmp, f"{name}-{repeat}"), env)
                kept = timed_records(records, s.warmup)
                if not kept:
                    raise ValueError(f"no step was timed after the warm-up of {s.warmup}; raise iters.")
                ms = statistics.median(r["ms"] for r in kept)
                mem = records[-1].get("peak_mem_mb")
                runs[name]["ms"].append(ms)
                runs[name]["peak_mem_mb"].append(mem)
                runs[name]["load"].append(load)
                print(f"  run {repeat + 1}/{s.repeats} {name:>13}: {ms:8.1f} ms/iter over "
                      f"{len(kept)} records, load {load:.2f}", flush=True)
    return runs


def training_rows(runs, tokens_per_iter, flops, peak):
    """One row per setting: medians over repeats, the ratio to 'off', tokens/s, TFLOP/s and MFU."""
    rows = []
    ms_off = statistics.median(runs["off"]["ms"])
    for name, r in runs.items():
        ms = statistics.median(r["ms"])
        tokens_per_s = tokens_per_iter / (ms / 1000)
        mems = [m for m in r["peak_mem_mb"] if m is not None]
        rows.append(dict(setting=name, ms=ms, ratio=ms / ms_off, tokens_per_s=tokens_per_s,
                         peak_mem_mb=statistics.median(mems) if mems else None,
                         tflops=flops * tokens_per_s / 1e12,
                         mfu=flops * tokens_per_s / peak if peak else None,
                         spread=(max(r["ms"]) - min(r["ms"])) / ms, runs=r))
    return rows


# -----------------------------------------------------------------------------
# report


def training_table(rows):
    lines = ["| setting | ms/iter | x off | tokens/s | peak MiB | model TFLOP/s | MFU | spread |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['ms']:.1f} | {r['ratio']:.3f} | {r['tokens_per_s']:,.0f} | "
                     f"{fmt(r['peak_mem_mb'], '.0f')} | {r['tflops']:.3g} | "
                     f"{fmt(r['mfu'], '.1f', 100, '%')} | {100 * r['spread']:.0f}% |")
    return lines


def main(args):
    s, train_args = read_settings(args)
    if s.threads:
        torch.set_num_threads(s.threads)
    device, device_type, dtype = resolve_device(s)
    folder, meta = data_meta(s, s.dataset)
    flops = flops_per_token(s, meta["vocab_size"])
    peak, peak_source = peak_flop_rate(s, device_type)
    tokens_per_iter = s.gradient_accumulation_steps * s.batch_size * s.block_size
    layers = select_layers(s.dispersion_layers, s.n_layer)
    compiles = s.compile if s.compile is not None else device_type == "cuda"  # train.py's default
    name = device_name(device_type)
    m = min(s.block_size, s.dispersion_tokens or s.block_size)
    header = [f"command: python -m scripts.bench {' '.join(args)}",
              f"device: {device} ({name}), {dtype}, compile={compiles}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} torch threads"
              + (f" (OMP_NUM_THREADS={s.threads} in the runs)" if s.threads else ""),
              f"model: {s.n_layer} layers, {s.n_embd} wide, block {s.block_size}, batch {s.batch_size} x "
              f"{s.gradient_accumulation_steps}; {tokens_per_iter:,} tokens and "
              f"{flops * tokens_per_iter / 1e12:.3g} model TFLOP per step; "
              f"dispersion on hidden states {layers}, m = {m} tokens per sequence",
              f"MFU against {peak / 1e12:.3g} TFLOP/s from {peak_source}" if peak else
              f"MFU: no peak FLOP/s for {name} in PEAK_FLOPS (condense/device.py), so it is not reported; "
              "give --peak_tflops=N to set one"]
    load_before = os.getloadavg()
    print("\n".join(header) + f"\nload average before: {load_before[0]:.2f}\n", flush=True)

    print(f"training: {s.repeats} x ({len(s.variants) + 1} settings), {s.warmup} + {s.iters} steps each")
    rows = training_rows(bench_training(s, train_args), tokens_per_iter, flops, peak)
    torch.manual_seed(s.seed)
    model = GPT(config_from_settings(vars(s), meta["vocab_size"])).to(device)
    term_rows, cuda_peaks, memory_rows, ms, measure_row = [], {}, [], [], None
    if s.term_repeats:
        autocast = (nullcontext() if dtype == "float32"
                    else torch.autocast(device_type, dtype=getattr(torch, dtype)))
        x = val_windows(folder, s.batch_size, s.block_size, s.seed).to(device)  # (B, T)
        with autocast:
            # the states, as leaves
            hidden = [h.detach().requires_grad_() for h in model(x, return_hidden=True)[2]]
        print("dispersion term alone (forward + backward):")
        compile_too = s.term_compile if s.term_compile is not None else compiles
        term_rows = bench_term(s, hidden, layers, device_type, compile_too)
        cuda_peaks = cuda_term_peak(s, hidden, layers) if device_type == "cuda" else {}
    if s.memory_check:
        memory_rows, ms = bench_memory(s, len(layers), s.batch_size, s.n_embd, device)
    if s.measure_sequences:
        sequences = val_windows(folder, s.measure_sequences, s.block_size, s.seed + 1)  # (N, T)
        measure_row = measure_speed(model, sequences, s.measure_batch_size, device, lambda: sync(device_type),
                                    repeats=max(1, min(3, s.term_repeats or 3)))
    load = (load_before[0], os.getloadavg()[0])

    lines = [*header, f"load average (1 min) before {load[0]:.2f}, after {load[1]:.2f}", "",
             f"Training step ({s.repeats} runs per setting, median; {s.warmup} warm-up + "
             f"{s.iters} timed steps, log every {s.log_every}; x off = ms / ms of 'off'; "
             "spread = (max - min) / median over runs; "
             "peak MiB: " + ("max_memory_allocated" if device_type == "cuda" else "process peak RSS")
             + "):", "",
             *training_table(rows)]
    if term_rows:
        lines += ["", "Dispersion term alone, forward + backward on the model's hidden states "
                      f"({len(layers)} layers x {s.batch_size} sequences x {s.block_size} tokens, median of "
                      f"{s.term_repeats}). train.py uses the per-layer loop on a CPU and the stacked call "
                      "elsewhere; 'compiled' is its form under torch.compile:", "",
                  *term_table(term_rows, cuda_peaks)]
    if memory_rows:
        lines += ["", "Activation memory of the dispersion term (tensors kept for backward, stacked form) "
                      f"for m = max_tokens, T = {s.block_size}, L x B = {len(layers)} x {s.batch_size}, "
                      f"C = {s.n_embd}; fit: bytes = 4 L B (a m C + k m^2):", "",
                  *memory_table(memory_rows, ms)]
    if measure_row:
        r = measure_row
        lines += ["", f"measure(): {r['sequences']} sequences of {r['seq_len']} tokens in {r['ms']:.0f} ms: "
                      f"{r['sequences_per_s']:.1f} sequences/s, {r['tokens_per_s']:,.0f} tokens/s; "
                      f"the statistics {100 * r['statistics_share']:.0f}% of the forward passes"]
    report = dict(command=args, device=device, device_name=name, dtype=dtype, torch=torch.__version__,
                  threads=torch.get_num_threads(), load=load, tokens_per_iter=tokens_per_iter,
                  flops_per_token=flops, peak_flops=peak, training=rows, term=term_rows,
                  term_cuda_peak_mib=cuda_peaks,
                  memory=[{**r, "mib": {str(m): v for m, v in r["mib"].items()}} for r in memory_rows],
                  measure=measure_row)
    save(s.save or os.path.join(s.out_dir, "bench"), "\n".join(lines), report)


def save(stem, markdown, report):
    print("\n" + markdown)
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".md", "w") as f:
        f.write(markdown + "\n")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, RuntimeError) as e:  # ConfigError too: a mistake the user can fix, in one sentence
        sys.exit(f"error: {e}")
