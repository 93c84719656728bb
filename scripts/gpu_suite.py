"""
One GPU, about ten minutes: the measurements the README still leaves "not yet measured", in order of value,
under a time budget. Everything goes into one folder; the last line printed is the path of its summary.md.

    python -m scripts.gpu_suite              # one GPU, 570 s: results/gpu_suite/summary.md, README tables
    python -m scripts.gpu_suite --budget=1800  # more time: more seeds and more studies
    python -m scripts.gpu_suite --plan         # the steps and their estimates; runs nothing
    python -m scripts.gpu_suite --rehearse   # a CPU, tiny sizes, a few minutes: the same steps and files

First the facts (nvidia-smi, torch, CUDA, Python, the CPU -> facts.json, nvidia-smi.txt), then the steps, each
a few runs of scripts/bench.py, scripts/study.py and measure.py in subprocesses:
  mfu       MFU of the GPT-2-small shape (12 x 768, block 1024, batch 16), bf16 and compile, 10 + 50 steps, by
            scripts/bench.py --variants=none -> mfu/bench.md, .json (the target: at least 40% on an H100/H200)
  measure   our measure() on 64 windows of 512 tokens of a GPT-2-small-shaped model on the GPU, fp32 at batch
            1 and 16 and bf16 at batch 16, the statistics' share, then the authors' package where this Python
            has it, by scripts/bench_measure.py --sections=gpu -> measure/bench_measure.md, .json
  overhead  small_base with the dispersion loss off and angular (0.1, all layers), compiled, 10 + 50 steps
            each, and the loss term alone -> overhead/bench.md, .json (the target: at most 5% more step time)
  full      small_base and small_disp at full length (2,000 steps), each measured on 100 windows, then
            measure.py --compare=init,small_base,small_disp -> full/compare.png, .json. scripts/study.py
            trains them as seed 1337 of studies/gpu_method.py's plain and dispersion runs with the settings of
            `python train.py config/small_base.py` and `small_disp.py` (the summary checks their config.json),
            so that more seeds join them in one table -> gpu_method/
  studies   seeds 1, 2, 3 of both, a seed at a time, then gpu_method's noise and forget runs; then the studies
            gpu_init, gpu_mlp, gpu_size and gpu_knobs, each whole
A step (or a part of 'studies') whose estimate exceeds the budget left is skipped, not started. When the
budget runs out, the running command and its children are stopped and what finished is kept; summary.md is
rewritten after every step. The folder also holds checkpoints (ckpt.pt, up to 1.5 GB) and the measure step's
random model (measure/bench_measure/gpt2_12, 0.5 GB): tar --exclude=ckpt.pt --exclude=model.safetensors to
copy it.

Estimates on one H200 (--plan): 10 s per process started (python, torch, CUDA, data, model) + compile +
compute + the rest. Compute = steps x tokens per step x FLOPs per token (6 N + 12 L T C, GPT-2's vocabulary) /
(989 TFLOP/s x MFU), assuming 40% MFU for the GPT-2-small shape (its target) and 20% for small_base (6 x 384,
8,192 tokens per step: small matrices). Compile: 60 s for 12 layers and 30 s for 6 with a cold cache, 10 s for
a graph compiled earlier in the suite (inductor's cache), 15 s for the dispersion loss. The rest: 1 s per
evaluation (40 batches, 16 windows measured, a checkpoint), 5 s per model measured, 10 s for the 124M
checkpoint, 5 s for scripts/bench.py's term and memory checks. The measure step: 5 s to write its model, 1 s
per load of it (3), its forward passes at 2% of the peak (fp32 without tensor cores, batch 1, the statistics),
the package's cosine matrices in numpy at 100 GFLOP/s on the CPU (scripts/gpu_report.py's measure_plan).

| step | processes | compile s | compute s | rest s | estimate s | total s |
|---|---:|---:|---:|---:|---:|---:|
| facts | 0 | 0 | 0.0 | 5 | 5 | 5 |
| mfu | 2 | 60 | 2.2 | 12 | 94 | 99 |
| measure | 3 | 0 | 9.3 | 8 | 47 | 147 |
| overhead | 3 | 90 | 1.0 | 9 | 130 | 276 |
| full | 5 | 30 | 31.7 | 47 | 159 | 435 |
| studies | 4 | 30 | 31.7 | 32 | 134 | 569 |

569 s of the default 570 fit on paper; 'studies' there is its first part (seed 1 of both runs), and once
'full' has run the parts are estimated from its measured time per run. These are assumptions: the summary
shows each step's measured time next to its estimate.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from configurator import ConfigError, configure
from scripts.gpu_report import (OTHER_STUDIES, SCALES, machine_facts, plan, plan_table, read_json,
                                run_settings, write_summary)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
SUITE_SETTINGS = dict(
    budget=570.0,  # seconds for the whole suite; a step whose estimate exceeds what is left is skipped
    rehearse=False,  # tiny sizes on a CPU (bf16 autocast, the stacked dispersion loss): every step in minutes
    plan=False,  # print the steps and their estimates, and run nothing
    # the folder everything goes to; it must not exist yet (nothing is overwritten)
    results="results/gpu_suite",
    steps="mfu,measure,overhead,full,studies",  # the steps to run (always in this order, after the facts)
    data_dir="",  # a prepared data set for every run instead of the configs' own (data/shakespeare)
)
STEPS = ("mfu", "measure", "overhead", "full", "studies")
METHOD_RUNS = {"small_base": "plain", "small_disp": "dispersion", "noise": "noise", "forget": "forget"}


class OutOfTime(Exception):
    """The budget ran out: the running command was stopped."""


class StepFailed(Exception):
    """A command exited with an error; the message says which, why, and where its log is."""


# -----------------------------------------------------------------------------
# running commands under the budget


class Suite:
    def __init__(self, s, argv):
        self.s, self.argv, self.scale, self.t0 = (s, argv, "rehearsal" if s.rehearse else "gpu",
                                                  time.monotonic())
        self.deadline = self.t0 + s.budget
        data = [f"--data_dir={s.data_dir}"] if s.data_dir else []  # for every command (measure's texts too)
        # the arguments by kind
        self.args = {**SCALES[self.scale], "every": SCALES[self.scale]["every"] + data,
                     "measure": SCALES[self.scale]["measure"] + data}
        self.records, self.parts, self.facts, self.per_run, self.commands = {}, [], {}, None, []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the logs fill as the commands go
        if s.rehearse:  # tiny models run fastest on one thread, and a shared machine stays usable
            self.env.setdefault("OMP_NUM_THREADS", "1")

    def left(self):
        return self.deadline - time.monotonic()

    def path(self, *parts):
        return os.path.join(self.s.results, *parts)

    def run(self, args, log_name):
        """python ARGS in the repo root, its output to logs/LOG_NAME.log; when the budget runs out it is
        stopped with its children and OutOfTime is raised; a non-zero exit raises StepFailed."""
        if self.left() <= 0:
            raise OutOfTime
        self.commands.append(shlex.join(["python", *args]))
        log_path = self.path("logs", log_name + ".log")
        with open(log_path, "a") as log:
            log.write(f"$ {shlex.join([sys.executable, *args])}\n")
            log.flush()
            # a process group of its own, so that stop() reaches its train.py runs and compile workers too
            proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, process_group=0)
            try:
                rc = proc.wait(timeout=max(0.0, self.left()))
            except subprocess.TimeoutExpired:
                stop(proc)
                raise OutOfTime from None
            except KeyboardInterrupt:
                stop(proc)
                raise
        if rc != 0:  # the last line of its log that names an error says why
            lines = [l.strip() for l in open(log_path, errors="replace") if l.strip()]
            why = ([l for l in lines if "error" in l.lower()] or lines)[-1][:300]
            name = args[1] if args[0] == "-m" else args[0]  # scripts.bench, measure.py, ...
            raise StepFailed(f"{name} exited with status {rc}: {why} (log: {log_path})")


def stop(proc):
    """SIGTERM to the command's process group, SIGKILL if it is still there 10 s later."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:  # it had ended already
        pass


# -----------------------------------------------------------------------------
# the steps, each returning a line for the summary's table; then the record of them all


def step_mfu(suite):
    suite.run(["-m", "scripts.bench", "config/small_base.py", *suite.args["every"], *suite.args["gpt2"],
               *suite.args["timing"], "--variants=none", "--repeats=1", "--term_repeats=0",
               "--memory_check=False", "--measure_sequences=0", f"--save={suite.path('mfu', 'bench')}"],
              "mfu")
    row = read_json(suite.path("mfu", "bench.json"))["training"][0]
    return f"{row['ms']:.1f} ms/iter, MFU " + ("n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%")


def step_measure(suite):
    suite.run(["-m", "scripts.bench_measure", "--sections=gpu", *suite.args["measure"],
               f"--out_dir={suite.path('measure')}", f"--authors_python={sys.executable}"], "measure")
    gpu = read_json(suite.path("measure", "bench_measure.json"))["gpu"]
    fp32 = next(r for r in gpu["ours"] if (r["dtype"], r["batch_size"]) == ("float32", 16))
    package = gpu["package"]
    return (f"batch 16: {fp32['windows_per_s']:.1f} windows/s, {gpu['speedup_batch16']:.2f}x batch 1; "
            + (f"package: {package['times_ours']:.2f}x our time" if package else "package not installed"))


def step_overhead(suite):
    suite.run(["-m", "scripts.bench", "config/small_base.py", *suite.args["every"], *suite.args["timing"],
               "--variants=angular", "--repeats=1", "--measure_sequences=0",
               f"--save={suite.path('overhead', 'bench')}"], "overhead")
    return (f"angular {read_json(suite.path('overhead', 'bench.json'))['training'][1]['ratio']:.3f}x "
            "off's step time")


def method_study(suite, runs, seeds):
    """studies/gpu_method.py cut to some runs and seeds, as a study file in the results folder."""
    path = suite.path("studies", "gpu_method.py")
    with open(path, "w") as f:
        f.write("# Written by scripts/gpu_suite.py: studies/gpu_method.py with the runs and seeds that fit "
                "the budget;\n# small_base is its 'plain' run and small_disp its 'dispersion' run.\n"
                'exec(open("studies/gpu_method.py").read())\n'
                "runs = {" + ", ".join(f"{r!r}: runs[{METHOD_RUNS[r]!r}]" for r in runs) + "}\n"
                f"seeds = {list(seeds)!r}\n")
    return path


def run_study(suite, study_file, log):
    suite.run(["-m", "scripts.study", study_file, f"--results={suite.s.results}", *suite.args["every"],
               *suite.args["full"]], log)


def step_full(suite):
    t = time.monotonic()
    run_study(suite, method_study(suite, ["small_base", "small_disp"], [1337]), "full")
    suite.per_run = (time.monotonic() - t) / 2  # to train and measure one run: what 'studies' is planned by
    runs = ",".join(suite.path("gpu_method", f"{r}-s1337") for r in ("small_base", "small_disp"))
    suite.run(["measure.py", "config/small_base.py", *suite.args["every"], *suite.args["full"],
               f"--compare=init,{runs}", f"--out_dir={suite.path('full')}"], "full")
    return f"trained and measured in {suite.per_run:.0f} s per run, then compared"


def study_queue(rehearse):
    """[(label, a study file or the (runs, seeds) of gpu_method)] in order of value; the rehearsal's first
    only."""
    pair = ("small_base", "small_disp")
    queue = [(f"gpu_method: small_base and small_disp, seed {s}",
              (pair, [1337, *range(1, s + 1)])) for s in (1, 2, 3)]
    queue.append(("gpu_method: noise and forget, seeds 1337, 1, 2, 3", (tuple(METHOD_RUNS), [1337, 1, 2, 3])))
    queue += [(path[len("studies/"):-3], path) for path in OTHER_STUDIES]
    return queue[:1] if rehearse else queue


def runs_to_train(suite, study):
    """The (run, seed) pairs of a study without a finished run folder."""
    if isinstance(study, str):
        from scripts.study import load_study
        spec = load_study(os.path.join(ROOT, study))
        name, runs, seeds = os.path.basename(study)[:-3], spec["runs"], spec["seeds"]
    else:
        (runs, seeds), name = study, "gpu_method"
    return [(r, s) for r in runs for s in seeds
            if not os.path.exists(suite.path(name, f"{r}-s{s}", "done.json"))]


def part_estimate(suite, study):
    per_run = suite.per_run or plan(suite.scale)["studies"]["estimate"] / 2
    return per_run * len(runs_to_train(suite, study))


def step_studies(suite):
    for label, study in study_queue(suite.s.rehearse):
        part = dict(label=label, estimate=part_estimate(suite, study), status="skipped", wall=None, result="")
        suite.parts.append(part)
        if part["estimate"] > suite.left():
            part["result"] = f"estimate > {suite.left():.0f} s left"
            continue
        t = time.monotonic()
        try:
            run_study(suite, study if isinstance(study, str) else method_study(suite, *study), "studies")
            part["status"] = "done"
        except (OutOfTime, StepFailed) as e:
            failed = isinstance(e, StepFailed)
            part["status"], part["result"] = ("failed", str(e)) if failed else ("stopped at the budget", "")
            raise
        finally:
            part["wall"] = time.monotonic() - t
    done = sum(p["status"] == "done" for p in suite.parts)
    return f"{done} of {len(suite.parts)} parts" + (" (the rehearsal has one)" if suite.s.rehearse else "")


STEP_FUNCTIONS = dict(mfu=step_mfu, measure=step_measure, overhead=step_overhead, full=step_full,
                      studies=step_studies)


def write_record(suite):
    """summary.json, everything the suite knows, and summary.md from it (scripts/gpu_report.py)."""
    record = dict(argv=suite.argv, settings={**vars(suite.s), "steps": ",".join(suite.s.steps)},
                  scale=suite.scale, run_args=suite.args["every"] + suite.args["full"],
                  elapsed_s=time.monotonic() - suite.t0, facts=suite.facts, steps=suite.records,
                  studies=suite.parts, per_run_s=suite.per_run)
    with open(suite.path("summary.json"), "w") as f:
        json.dump(record, f, indent=1)
    write_summary(suite.s.results)


# -----------------------------------------------------------------------------
# main


def check_data(s, scale):
    """Every run reads the configs' data set, or --data_dir: prepare it now, or say what to do, and exit."""
    dataset = run_settings(scale)["dataset"]
    folder = s.data_dir or os.path.join(ROOT, "data", dataset)
    if os.path.exists(os.path.join(folder, "meta.json")):
        return
    if s.data_dir:
        sys.exit(f"error: data_dir {s.data_dir} holds no prepared data set (meta.json); prepare one with "
                 "data/prepare_text.py or fix the path.")
    from data.common import prepare_default
    try:
        prepare_default(dataset)
    except (RuntimeError, ValueError, OSError) as e:
        sys.exit(f"error: data/{dataset} is not prepared and cannot be prepared here ({e}); run python "
                 f"data/{dataset}/prepare.py on a machine with internet and copy data/{dataset}/ here.")


def read_settings(argv):
    """The suite's settings from --key=value arguments (--rehearse and --plan need no value); exits on a
    mistake."""
    switches = {"--rehearse": "--rehearse=True", "--plan": "--plan=True"}
    try:
        own = ("the suite's settings", "scripts/gpu_suite.py", {}, "SUITE_SETTINGS")
        s = SimpleNamespace(**configure(SUITE_SETTINGS, [switches.get(a, a) for a in argv], __doc__, [own]))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    s.steps = [x.strip() for x in s.steps.split(",") if x.strip()]
    if not s.steps or any(x not in STEPS for x in s.steps):
        sys.exit(f"error: steps must be names from {','.join(STEPS)}, not {','.join(s.steps)!r}.")
    if s.budget <= 0:
        sys.exit(f"error: budget must be a positive number of seconds, like --budget=570, not {s.budget}.")
    s.results, s.data_dir = os.path.abspath(s.results), s.data_dir and os.path.abspath(s.data_dir)
    return s


def main(argv):
    s = read_settings(argv)
    os.chdir(ROOT)  # config and study files name their paths from the repo root
    scale = "rehearsal" if s.rehearse else "gpu"
    if s.plan:
        print("\n".join(plan_table(scale, s.budget)))
        return
    if os.path.exists(s.results) and os.listdir(s.results):
        sys.exit(f"error: {s.results} already holds results; give another --results or move it away "
                 "(nothing was overwritten).")
    if not s.rehearse:
        import torch
        if not torch.cuda.is_available():
            sys.exit("error: torch sees no CUDA GPU here; on a CPU, rehearse the suite with --rehearse.")
    check_data(s, scale)
    for folder in ("logs", "studies"):
        os.makedirs(os.path.join(s.results, folder), exist_ok=True)
    suite = Suite(s, argv)
    suite.facts = machine_facts(s.results)  # first: what ran where
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops the suite as Ctrl-C does
    for name in (x for x in STEPS if x in s.steps):
        seconds = (part_estimate(suite, study_queue(s.rehearse)[0][1]) if name == "studies"  # its first part
                   else plan(scale)[name]["estimate"])
        record = suite.records[name] = dict(estimate=seconds, status="skipped", wall=None, result="",
                                            commands=[])
        if seconds > suite.left():
            record["result"] = f"estimate > {suite.left():.0f} s left"
            print(f"{name}: skipped, {record['result']}", flush=True)
            continue
        print(f"{name}: estimate {seconds:.0f} s, {suite.left():.0f} s left", flush=True)
        suite.commands, t, interrupted = record["commands"], time.monotonic(), False
        try:
            record["result"], record["status"] = STEP_FUNCTIONS[name](suite), "done"
        except OutOfTime:
            record["status"] = "stopped at the budget"
        except StepFailed as e:
            record["status"], record["result"] = "failed", str(e)
        except KeyboardInterrupt:
            record["status"], interrupted = "interrupted", True
        record["wall"] = time.monotonic() - t
        print(f"  {record['status']} in {record['wall']:.0f} s: {record['result']}", flush=True)
        write_record(suite)
        if interrupted:
            break
    write_record(suite)
    print(suite.path("summary.md"))


if __name__ == "__main__":
    main(sys.argv[1:])
