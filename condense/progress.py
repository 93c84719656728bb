"""
Where a training run is and how long it has left, for train.py: the progress at the end of each log line
(iteration / total, percent, elapsed time, ETA), an estimate of the whole run on a CPU as soon as the first
evaluation batch is done (before any step, and with a word when the run is sized for a GPU), and the closing
note: what was written where, the best validation loss, and what to run next.
"""

import sys
import time

# seconds: a CPU run estimated to take longer is sized for a GPU, and told so. config/small_disp.py is
# estimated at 14 hours on a 2-core CPU, config/tiny_disp.py at 2 minutes (it took 127 s; 250-319 s under
# load).
SLOW_ON_A_CPU = 2 * 3600


def duration(seconds):
    """<1s, 42s, 3m07s, 2h05m: short enough for a log line."""
    seconds = round(seconds)
    if seconds < 1:
        return "<1s"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Keeps the run's clock, for train.py's settings (config: max_iters, eval_interval, eval_iters and
    dispersion_weight are read). start_iter: the first iteration this process trains (a resume's checkpoint);
    micro_batches: this process's per step; args (the command's arguments) keep the CPU config suggested to a
    run sized for a GPU from being the one it runs. It also makes stdout line-buffered, so that each line
    reaches a log file or a pipe (tee) as it is printed, not minutes later."""

    def __init__(self, config, start_iter, micro_batches, device_type, args):
        self.start_iter, self.max_iters = start_iter, config["max_iters"]
        self.eval_interval, self.eval_batches = config["eval_interval"], 2 * config["eval_iters"]  # 2 splits
        self.micro_batches, self.on_cpu = micro_batches, device_type == "cpu"
        if hasattr(sys.stdout, "reconfigure"):  # a real stream, not a stand-in
            sys.stdout.reconfigure(line_buffering=True)
        twin = "config/tiny_disp.py" if config["dispersion_weight"] else "config/tiny_base.py"  # CPU-sized
        self.cpu_config = None if any(a.endswith(twin) for a in args) else twin
        self.t_start = self.t_eval = time.perf_counter()
        self.eval_iter = None  # the iteration being evaluated
        self.eval_seconds = 0.0  # the last evaluation's wall time, for the ETA
        self.estimated = False
        self.batch_times = []  # the first evaluation's first two batches, in seconds

    def evaluations_after(self, it):
        """How many evaluations come after iteration it: every eval_interval, and one at max_iters."""
        every = self.max_iters // self.eval_interval - it // self.eval_interval
        return every + (self.max_iters % self.eval_interval != 0)

    def start_evaluation(self, it):
        self.t_eval, self.eval_iter = time.perf_counter(), it
        return self.t_eval

    def evaluated(self, seconds):
        """Record an evaluation's wall time; returns it (train.py leaves it out of the step timings)."""
        self.eval_seconds = seconds
        return seconds

    def batch_evaluated(self):
        """Called after each evaluation batch. After the run's second one (the first pays for warming up), on
        a CPU (where it is timed truly: a GPU works asynchronously), print the estimate of the whole run:
        evaluations at that batch's pace, and each training step as 3 forward passes per micro-batch (forward
        and backward, as the model's FLOPs count them). The first logged step then gives the measured ETA; on
        a CPU shared with other work, both vary a lot."""
        if self.estimated or not self.on_cpu or self.eval_iter != self.start_iter:
            return
        now = time.perf_counter()
        self.batch_times.append(now - self.t_eval)
        self.t_eval = now
        if len(self.batch_times) < min(2, self.eval_batches):
            return
        self.estimated = True
        batch = self.batch_times[-1]
        evaluation = batch * self.eval_batches
        steps = self.max_iters - self.start_iter
        step = 3 * batch * self.micro_batches
        total = evaluation * (1 + self.evaluations_after(self.start_iter)) + step * steps
        how = (f"estimated from the second evaluation batch, {batch:.3f} s, a training step counted as 3 "
               "forward passes")
        if not self.note_if_slow(total, how):
            print(f"iter {self.start_iter}: evaluating, about {duration(evaluation)}; then {steps:,} steps: "
                  f"the whole run about {duration(total)} on this CPU ({how})")

    def note_if_slow(self, total, how):
        """Say once, on a CPU, that a run estimated to take longer than SLOW_ON_A_CPU is sized for a GPU."""
        if not self.on_cpu or total < SLOW_ON_A_CPU:
            return False
        self.estimated = True
        instead = (f"train {self.cpu_config} instead (README, Quick start)" if self.cpu_config else
                   "lower max_iters, or the model's size")
        print(f"note: this run takes about {duration(total)} on this CPU ({how}); it is sized for a GPU: on "
              f"a CPU, {instead}")
        return True

    def line(self, it, ms):
        """(the head of a log line, its tail): 'iter 50/1800 (2.8%)' and ', elapsed 12s, eta 3m41s'. The ETA
        counts the steps left at the pace of the last log interval, and the evaluations left at the pace of
        the last one."""
        left = (self.max_iters - it - 1) * ms / 1000 + self.evaluations_after(it) * self.eval_seconds
        if not self.estimated:  # not on a CPU, or a resume (no evaluation first): from the first step's pace
            self.note_if_slow(left, f"estimated from the pace of iteration {it}, {ms:.0f} ms")
            self.estimated = True
        head = f"iter {it}/{self.max_iters} ({100 * (it + 1) / self.max_iters:.1f}%)"
        return head, f", elapsed {duration(time.perf_counter() - self.t_start)}, eta {duration(left)}"

    def finish(self, out_dir, ckpt_iter, best_val_loss):
        """The closing note: how long, what is where, and the commands that look at the result."""
        saved = (f"ckpt.pt (iteration {ckpt_iter}), " if ckpt_iter is not None else "no checkpoint, ")
        print(f"done: iterations {self.start_iter} to {self.max_iters} in "
              f"{duration(time.perf_counter() - self.t_start)}; best val loss {best_val_loss:.4f}; "
              f"{out_dir}/ holds {saved}metrics.jsonl and config.json")
        print(f"next: python measure.py --out_dir={out_dir}   # its condensation, layer by layer "
              f"(condensation.png)\n      python sample.py --out_dir={out_dir}    # text from it")
