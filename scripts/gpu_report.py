"""
The paperwork of a scripts/gpu_suite.py run: before it, the plan (each step's estimate from the configs' sizes
and the costs assumed in COSTS: scripts/gpu_suite.py --plan); after it, the facts of the machine (facts.json,
nvidia-smi.txt) and the summary (summary.md: Markdown tables ready for the README), written from the suite's
record (summary.json) and the files its steps left (bench.json, the study folders, compare.json).

    python -m scripts.gpu_report results/gpu_suite      # writes results/gpu_suite/summary.md again,
                                                # e.g. after an edit here

scripts/gpu_suite.py calls write_summary() after every step, so the summary always says what has finished.
"""

import json
import os
import platform
import shlex
import subprocess
import sys

from configurator import configure, show_help, wants_help
from settings import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
OTHER_STUDIES = ("studies/gpu_init.py", "studies/gpu_mlp.py", "studies/gpu_size.py", "studies/gpu_knobs.py")
# at least 40% MFU; at most 5% more step time with the dispersion loss
MFU_TARGET, OVERHEAD_TARGET = 0.40, 0.05

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4"]
# the arguments of each kind of command: on a GPU the configs as they are, in the rehearsal tiny ones
SCALES = {
    "gpu": dict(every=[], timing=["--warmup=10", "--iters=50", "--log_every=10"], full=[],
                gpt2=["--n_layer=12", "--n_head=12", "--n_embd=768", "--block_size=1024", "--batch_size=16",
                      "--dropout=0.0"],
                measure=["--device=cuda", "--windows=64", "--layers=12"]),  # scripts/bench_measure.py's
    "rehearsal": dict(  # one compiled run (mfu), the others eager; all in bf16 with the GPU's stacked loss
        every=["--device=cpu", "--dtype=bfloat16", "--dispersion_path=stacked", "--compile=False", *TINY],
        timing=["--warmup=1", "--iters=2", "--log_every=1"], gpt2=["--dropout=0.0", "--compile=True"],
        full=["--max_iters=4", "--eval_interval=2", "--eval_iters=1", "--log_interval=1", "--warmup_iters=1",
              "--track_sequences=2"],
        measure=["--device=cpu", "--windows=2", "--layers=2"]),
}
COSTS = {  # what the estimates assume (see the docstring): seconds, FLOP/s and MFU
    "gpu": dict(peak=989e12, mfu_gpt2=0.40, mfu_small=0.20, start=10, compile_gpt2=60, compile_small=30,
                warm=10, loss=15, evaluation=1.0, checkpoint_gpt2=10, term=5, measure=5, facts=5,
                mfu_measure=0.02, cpu_flops=1e11, model_write=5, model_load=1),
    "rehearsal": dict(peak=1e11, mfu_gpt2=0.1, mfu_small=0.1, start=5, compile_gpt2=30, compile_small=0,
                      warm=0, loss=0, evaluation=0.2, checkpoint_gpt2=0, term=2, measure=0.5, facts=3,
                      mfu_measure=0.5, cpu_flops=1e10, model_write=2, model_load=0.5),
}
VOCAB = 50304  # GPT-2's 50,257 tokens padded to a multiple of 64 (model.padded_vocab)


# -----------------------------------------------------------------------------
# the plan: estimates from the configs' sizes and COSTS


def run_settings(scale, *extra):
    """The settings of config/small_base.py with the scale's arguments, as train.py reads them."""
    return configure(defaults(), ["config/small_base.py", *SCALES[scale]["every"], *extra])


def step_seconds(c, s, mfu):
    """Compute time of one training step of the model the settings s describe, from model.flops_per_token
    (6 N + 12 L T C) on a model built on the meta device (no memory)."""
    import torch
    from condense.checkpoint import config_from_settings
    from model import GPT
    with torch.device("meta"):
        flops = GPT(config_from_settings(s, VOCAB)).flops_per_token(s["block_size"])
    return s["batch_size"] * s["gradient_accumulation_steps"] * s["block_size"] * flops / (c["peak"] * mfu)


def measure_plan(c, args):
    """The 'measure' step (scripts/bench_measure.py --sections=gpu): the suite's process, our child on the
    device and the package's; writing the model; our runs and the package's forward passes at c["mfu_measure"]
    of the peak, 2 x the blocks' parameters + 4 L T C (attention) FLOPs per token (neither side runs the
    output head); the package's cosines, L + 1 matrices of 512 x 512 x 768 per window, in numpy on the CPU at
    c["cpu_flops"]; loading the model three times (fp32 and bf16 ours, fp32 theirs)."""
    from scripts.bench_measure_gpu import LENGTH, RUNS, SHARE_PAIRS, TIMED
    given = dict(a[2:].split("=") for a in args)
    windows, layers = int(given["windows"]), int(given["layers"])
    flops = (2 * 12 * layers * 768**2 + 4 * layers * LENGTH * 768) * LENGTH  # per window
    ours = len(RUNS) * (1 + TIMED) + 2 * SHARE_PAIRS  # measure() runs over every window
    theirs = 1 + windows  # a warm-up window, then each
    cosines = theirs * (layers + 1) * 2 * LENGTH**2 * 768 / c["cpu_flops"]
    return dict(processes=3, compile=0, rest=c["model_write"] + 3 * c["model_load"],
                compute=(ours * windows + theirs) * flops / (c["peak"] * c["mfu_measure"]) + cosines)


def plan(scale):
    """{step: {part: seconds}}: each step's estimate, and its parts (processes started, compile, compute,
    rest)."""
    c, sc = COSTS[scale], SCALES[scale]
    small, gpt2, full = (run_settings(scale), run_settings(scale, *sc["gpt2"]),
                         run_settings(scale, *sc["full"]))
    timed = 1 + sum(int(a.split("=")[1]) for a in sc["timing"][:2])  # bench: warm-up + timed steps + 1
    evals = full["max_iters"] // full["eval_interval"] + 1
    # small_base then small_disp, each trained and measured: 4 processes, the loss 5% slower and compiled too
    pair = dict(processes=4, compile=3 * c["warm"], rest=2 * evals * c["evaluation"] + 2 * c["measure"],
                compute=2.05 * full["max_iters"] * step_seconds(c, full, c["mfu_small"]))
    steps = {
        "facts": dict(processes=0, compile=0, compute=0.0, rest=c["facts"]),
        "mfu": dict(processes=2, compile=c["compile_gpt2"],
                    compute=timed * step_seconds(c, gpt2, c["mfu_gpt2"]),
                    rest=2 * c["evaluation"] + c["checkpoint_gpt2"]),
        "measure": measure_plan(c, sc["measure"]),
        "overhead": dict(processes=3, compile=2 * c["compile_small"] + 2 * c["loss"], rest=4 * c["evaluation"]
                         + c["term"], compute=2.05 * timed * step_seconds(c, small, c["mfu_small"])),
        "full": {**pair, "processes": 5, "rest": pair["rest"] + 3 * c["measure"]},  # then compare: 3 models
        "studies": pair,
    }
    for p in steps.values():
        p["estimate"] = p["processes"] * c["start"] + p["compile"] + p["compute"] + p["rest"]
    return steps


def plan_table(scale, budget):
    lines, total = ["| step | processes | compile s | compute s | rest s | estimate s | total s |",
                    "|---|---:|---:|---:|---:|---:|---:|"], 0.0
    for name, p in plan(scale).items():
        total += p["estimate"]
        lines.append(f"| {name} | {p['processes']} | {p['compile']:.0f} | {p['compute']:.1f} | "
                     f"{p['rest']:.0f} | {p['estimate']:.0f} | {total:.0f} |")
    return lines + ["", f"{total:.0f} s of a budget of {budget:.0f} s ({scale} scale)"]


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def machine_facts(folder):
    """The GPU, torch, CUDA, Python and the CPU, as a dict; also written to folder/facts.json and
    nvidia-smi.txt."""
    import torch
    f = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda, gpu=None,
             cpu_cores=os.cpu_count(), platform=platform.platform(), nvidia_smi="not found")
    try:  # Linux names its processor here
        with open("/proc/cpuinfo") as cpuinfo:
            f["cpu"] = next((l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name")), "")
    except OSError:
        f["cpu"] = platform.processor()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        f["gpu"] = dict(name=p.name, memory_gib=round(p.total_memory / 2**30, 1),
                        capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
    query = "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm,clocks.max.mem"
    try:
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        f["nvidia_smi"] = subprocess.run(["nvidia-smi", query, "--format=csv"], capture_output=True,
                                         text=True, timeout=30).stdout.strip()
        with open(os.path.join(folder, "nvidia-smi.txt"), "w") as out:
            out.write(text + "\n" + f["nvidia_smi"] + "\n")
    except (OSError, subprocess.TimeoutExpired):  # no NVIDIA driver here: f says "not found"
        pass
    with open(os.path.join(folder, "facts.json"), "w") as out:
        json.dump(f, out, indent=1)
    return f


def bench_section(folder, name, title, verdict, report="bench"):
    """The verdict on the numbers (report.json), then report.md as it is (its header names the command and
    the machine)."""
    numbers = read_json(os.path.join(folder, name, report + ".json"))
    if not numbers:
        return []
    with open(os.path.join(folder, name, report + ".md")) as f:
        return [f"## {title}", "", verdict(numbers), "", f.read().strip(), ""]


def mfu_verdict(numbers):
    mfu = numbers["training"][0]["mfu"]
    if mfu is None:
        return "MFU not reported: PEAK_FLOPS (condense/device.py) has no peak FLOP/s for this device."
    return (f"**MFU {100 * mfu:.1f}%**: the target of at least 40% is "
            f"{'met' if mfu >= MFU_TARGET else 'not met'}.")


def measure_verdict(numbers):
    g = numbers["gpu"]
    fp32 = next(r for r in g["ours"] if (r["dtype"], r["batch_size"]) == ("float32", 16))
    package = (f"the package takes {g['package']['times_ours']:.2f}x our time" if g["package"] else
               "the package was not installed (see below)")
    return (f"**measure(), batch 16 in fp32: {fp32['windows_per_s']:.1f} windows/s, "
            f"{g['speedup_batch16']:.2f}x batch 1**; the statistics {100 * g['share']:.1f}% of the forward "
            f"passes; {package}.")


def overhead_verdict(numbers):
    rows = numbers["training"]
    extra = rows[1]["ratio"] - 1
    return (f"**angular: {100 * extra:+.1f}% step time** ({rows[1]['ms']:.2f} ms against {rows[0]['ms']:.2f} "
            f"ms off): the target of at most +5% is {'met' if extra <= OVERHEAD_TARGET else 'not met'}.")


def differing_settings(run_dir, config_file, run_args):
    """The settings of a run that differ from those of `python train.py CONFIG_FILE RUN_ARGS`."""
    saved = read_json(os.path.join(run_dir, "config.json"))
    expected = configure(defaults(), [config_file, *run_args])
    return [k for k, v in expected.items() if k != "out_dir" and v not in ("", None) and saved.get(k) != v]


def full_section(folder, run_args):
    """The README's Results rows for small_base and small_disp (seed 1337 of gpu_method), and the
    comparison."""
    from scripts.study import run_numbers
    extra = "".join(" " + a for a in run_args)
    rows = []
    for run in ("small_base", "small_disp"):
        run_dir = os.path.join(folder, "gpu_method", f"{run}-s1337")
        if os.path.exists(os.path.join(run_dir, "condensation.json")):
            n, c = run_numbers(run_dir), read_json(os.path.join(run_dir, "config.json"))
            differ = differing_settings(run_dir, f"config/{run}.py", run_args)
            rows.append(f"| {run}: {c['n_layer']} x {c['n_embd']}, {c['dataset']}, {c['max_iters']:,} steps "
                        f"| `python train.py config/{run}.py{extra}`"
                        + (f" (but {', '.join(differ)} differ)" if differ else "")
                        + f" | {n['final_val_loss']:.3f} | {n['wall_s']:.0f} s | {n['spearman']:+.2f}, "
                        f"{n['late_cos']:.2f} |")
    if not rows:
        return []
    lines = ["## d. small_base and small_disp at full length", "",
             "| run | command | val loss | time | condensation (Spearman, late-layer mean cos) |",
             "|---|---|---:|---:|---|", *rows, "",
             "Val loss at the last step; time: the training alone; condensation: measure.py on 100 "
             "validation windows of the final checkpoint (gpu_method/*-s1337/condensation.png).", ""]
    compare = read_json(os.path.join(folder, "full", "compare.json"))
    if compare:
        lines += ["| model | Spearman | Kendall | mean cos, embedding | mean cos, output |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['spearman']:+.2f} | {r['kendall']:+.2f} | {r['mean_cos'][0]:.3f} | "
                  f"{r['mean_cos'][-1]:.3f} |" for r in compare]
        lines += ["", "![condensation at init, after small_base and after small_disp](full/compare.png)", ""]
    return lines


def studies_section(folder):
    """Each study's own results.md (mean and spread over seeds) and figure."""
    lines = []
    for name in ["gpu_method"] + [os.path.basename(path)[:-3] for path in OTHER_STUDIES]:
        if os.path.exists(os.path.join(folder, name, "results.md")):
            with open(os.path.join(folder, name, "results.md")) as f:
                table = f.read().strip().splitlines()[1:]  # without its title
            lines += [f"### {name}", *table, "", f"![{name}]({name}/condensation.png)", ""]
    return ["## e. Studies", "", *lines] if lines else []


def header(record):
    f, s = record["facts"] or {}, record["settings"]
    gpu = f.get("gpu") or {}
    lines = [f"# GPU suite: {gpu.get('name', 'no GPU')}" + (" (rehearsal)" if s["rehearse"] else ""), ""]
    if s["rehearse"]:
        lines += ["A rehearsal on a CPU at tiny sizes: it tests the steps; its numbers mean nothing.", ""]
    if f:
        lines += [f"Machine: {gpu.get('name', 'no GPU')}" + (f" ({gpu['memory_gib']} GiB)" if gpu else "")
                  + f", {f['cpu_cores']} CPU cores ({f['cpu']}); torch {f['torch']}, CUDA {f['cuda']}, "
                  f"Python {f['python']}; nvidia-smi: {(f['nvidia_smi'].splitlines() or ['no answer'])[-1]}."]
    command = f"python -m scripts.gpu_suite {shlex.join(record['argv'])}"
    lines += [f"Command: `{command}`: {record['elapsed_s']:.0f} s of "
              f"a budget of {s['budget']:.0f} s.", "", "| step | status | estimate s | wall s | result |",
              "|---|---|---:|---:|---|"]
    rows = list(record["steps"].items()) + [("studies: " + p["label"], p) for p in record["studies"]]
    return lines + [f"| {name} | {r['status']} | {r['estimate']:.0f} | "
                    + ("-" if r["wall"] is None else f"{r['wall']:.0f}") + f" | {r['result']} |"
                    for name, r in rows]


def write_summary(folder):
    """summary.md from folder/summary.json and the steps' files; returns its path."""
    record = read_json(os.path.join(folder, "summary.json"))
    if record is None:
        raise ValueError(f"{folder} holds no summary.json; give the results folder of a "
                         "scripts/gpu_suite.py run.")
    lines = [*header(record), "",
             *bench_section(folder, "mfu", "a. MFU: GPT-2-small shape, bf16 and compile", mfu_verdict),
             *bench_section(folder, "measure", "b. Measurement on the GPU", measure_verdict, "bench_measure"),
             *bench_section(folder, "overhead", "c. Dispersion overhead on small_base, compiled",
                            overhead_verdict),
             *full_section(folder, record["run_args"]), *studies_section(folder),
             "Raw numbers: summary.json (steps, commands, facts), facts.json, nvidia-smi.txt, mfu/ and "
             "overhead/bench.json, measure/bench_measure.json, full/compare.json, gpu_method/results.json; "
             "logs/: the output of every command."]
    path = os.path.join(folder, "summary.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):
        show_help(__doc__, {}, [])
    if len(sys.argv) != 2:
        sys.exit("error: give one results folder: python -m scripts.gpu_report results/gpu_suite")
    folder = os.path.abspath(sys.argv[1])
    os.chdir(ROOT)  # config files name their paths from the repo root
    try:
        print(write_summary(folder))
    except ValueError as e:
        sys.exit(f"error: {e}")
