"""
The plumbing of train.py, kept out of the training loop's way: the check of the token files, one run per
out_dir, checkpoints that survive a crash and resume exactly, metrics.jsonl, peak memory and the stop on a
non-finite loss, a stop by Ctrl-C or SIGTERM told in one sentence, and a clean end of DDP processes. Nothing
here changes what is trained; a reader of train.py can take each function at its name.
"""

import json
import os
import shlex
import signal
import socket
import sys
import threading

import torch

from condense.checkpoint import checkpoint_iteration, data_changed


def check_token_files(data_dir, block_size):
    """Stop with one sentence unless train.bin and val.bin of data_dir are there, hold whole uint16 token ids
    (an even number of bytes) and at least one window of block_size + 1 tokens: np.memmap would otherwise fail
    with a traceback, or read a cut-short file without a word."""
    again = "prepare the data set again (data/prepare_text.py, or data/<name>/prepare.py)"
    for split in ("train", "val"):
        path = os.path.join(data_dir, f"{split}.bin")
        if not os.path.isfile(path):
            sys.exit(f"error: {path} is missing; {again}.")
        size = os.path.getsize(path)
        if size == 0 or size % 2:  # uint16: two bytes per token
            problem = "empty" if size == 0 else f"cut short ({size} bytes, an odd number)"
            sys.exit(f"error: {path} is {problem}, not uint16 token ids; {again}.")
        if size // 2 < block_size + 1:
            sys.exit(f"error: {path} holds {size // 2} tokens, fewer than block_size + 1 = {block_size + 1}; "
                     "lower block_size or prepare more text.")


# what a resume must share with the run it continues: the model's shape, the data and the teacher
RESUME_KEYS = ("n_layer", "n_head", "n_embd", "mlp_dim", "bias", "block_size", "dataset", "data_dir",
               "distill_from")


def check_resume(ckpt, config, meta, data_dir, ckpt_path, teacher):
    """Stop with one sentence unless the checkpoint at ckpt_path can continue under these settings: its own
    (a resume without its config file would change the run), on the data set it was trained on (the folder
    may hold other data by now, prepared again from other text: the ids would mean other tokens), with the
    teacher it was trained with (condense/distill.Teacher, or None), the same weights under the same name.
    Returns the checkpoint's settings."""
    saved = ckpt.get("config", {})
    for k in RESUME_KEYS:
        was = saved.get(k, "" if k == "distill_from" else None)  # checkpoints from before distillation: none
        if was != config[k]:
            sys.exit(f"error: {ckpt_path} was trained with {k}={was}, but the settings say {config[k]}; "
                     "resume with the run's own config or pick another --out_dir.")
    why = data_changed(ckpt, meta)  # the one check of the data set, as sample.py, measure.py and export do it
    if why:
        sys.exit(f"error: the data set in {data_dir} is not the one {ckpt_path} was trained on ({why}); "
                 "put the run's own data back, or start a new run in another --out_dir.")
    if teacher is not None and ckpt.get("teacher") != teacher.fingerprint:  # retrained into the same folder
        sys.exit(f"error: distill_from={config['distill_from']!r} is not the teacher {ckpt_path} was trained "
                 "with (its weights have changed); resume with the run's own teacher, or another --out_dir.")
    return saved


def claim_out_dir(out_dir):
    """One run at a time per out_dir: the training process (rank 0) holds an exclusive lock on
    out_dir/train.lock while it lives, and the kernel lets go when the process ends, however it ends. A second
    run started into the folder stops here, before it reads or writes anything there. Returns the open lock
    file; closing it would release the lock. (Windows has no flock: there the check is skipped.)"""
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock = open(os.path.join(out_dir, "train.lock"), "a+")
    except OSError as e:
        sys.exit(f"error: cannot write to out_dir {out_dir} ({e.strerror or e}); pick a folder you can write "
                 "to.")
    try:
        import fcntl
    except ImportError:
        return lock
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        sys.exit(f"error: another run ({lock.read().strip() or 'a process'}) is training into {out_dir}; "
                 "wait for it to finish or pick another --out_dir.")
    lock.truncate(0)
    lock.write(f"process {os.getpid()} on {socket.gethostname()}")
    lock.flush()
    return lock


def rng_states(ddp, device_type, world_size):
    """Every process's (CPU, GPU) random state, gathered on all of them: dropout and embedding noise differ
    per process, so an exact resume needs each one's stream, not only rank 0's."""
    here = (torch.get_rng_state(), torch.cuda.get_rng_state() if device_type == "cuda" else None)
    if not ddp:
        return [here]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, here)
    return states


def restore_rng(rng, rank, device_type, batch_gen):
    """Put back this process's random streams and the batch generator from a checkpoint's rng entry."""
    if rank < len(rng["torch"]):  # a process the saved run did not have keeps its own seed
        torch.set_rng_state(rng["torch"][rank])
        if device_type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"][rank])
    batch_gen.set_state(rng["batch"])


def write_checkpoint(ckpt, path):
    """Write ckpt (tensors and plain values only, so it loads with weights_only=True) to a temporary file,
    then rename it over path: a crash never leaves a half-written checkpoint, and a failed write leaves the
    previous one as it was."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
        os.replace(tmp, path)
    # a full disk: torch's writer raises a RuntimeError around the OSError; so it does around a Ctrl-C
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if STOP["signal"] is not None or not isinstance(e, (OSError, RuntimeError)):
            raise  # a stop by signal is told by stop_on_signals' report, not blamed on the disk
        if not os.path.isdir(os.path.dirname(path) or "."):
            sys.exit(f"error: could not write the checkpoint to {path}: {gone_or_locked(path)}")
        cause = e
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        reason = (cause.strerror or str(cause)) if cause is not None else str(e).strip().splitlines()[0]
        sys.exit(f"error: could not write the checkpoint to {path} ({reason}); free space or fix the folder "
                 "and continue with --init_from=resume (the previous checkpoint, if any, is intact).")


# the signal that is stopping the run (set by stop_on_signals' handler), for every part of it to see
STOP = {"signal": None}


def stop_on_signals(where, ckpt_path, master, world_size):
    """Ctrl-C (SIGINT) and SIGTERM, at any moment, end the run with one sentence on stderr: the iteration it
    stopped at (where(): None before the training loop), the checkpoint that is intact and its iteration (read
    from the file itself), and the command that continues; the exit code is 128 + the signal (130, 143).
    The signal raises KeyboardInterrupt wherever the run is, so every `with` and `finally` unwinds
    (write_checkpoint removes its temporary file); whatever then reaches the top, the KeyboardInterrupt or
    the error torch makes of it inside a checkpoint write or a collective, is reported as the stop instead of
    a traceback (sys.excepthook). Under DDP every process gets the terminal's Ctrl-C (torchrun passes a
    SIGTERM on) and stops; rank 0 speaks."""
    def on_signal(signum, frame):
        STOP["signal"] = signum
        raise KeyboardInterrupt

    def report(kind, value, tb):
        if STOP["signal"] is None and not issubclass(kind, KeyboardInterrupt):
            return sys.__excepthook__(kind, value, tb)  # a real error: its traceback
        signum = STOP["signal"] or signal.SIGINT
        if master:
            print(stop_sentence(signum, where(), ckpt_path, world_size), file=sys.stderr, flush=True)
        sys.exit(128 + signum)

    if threading.current_thread() is threading.main_thread():  # Python sets handlers there only
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    sys.excepthook = report


def stop_sentence(signum, it, ckpt_path, world_size):
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    at = f"at iteration {it}" if it is not None else "before training began"
    saved = checkpoint_iteration(ckpt_path)
    launch = ["torchrun", f"--nproc_per_node={world_size}"] if world_size > 1 else ["python"]
    if saved is None:
        return (f"stopped {at} by {name}, before the first checkpoint; nothing to continue from: start "
                f"again with {shlex.join([*launch, 'train.py', *sys.argv[1:]])}")
    args = [a for a in sys.argv[1:] if not a.startswith("--init_from=")]
    return (f"stopped {at} by {name}; {ckpt_path} (iteration {saved}) is intact; continue with: "
            f"{shlex.join([*launch, 'train.py', *args, '--init_from=resume'])}")


def start_metrics(path, resume_iter):
    """Start metrics.jsonl for this run. A new run (resume_iter None) drops the lines of an earlier one that
    died before its first checkpoint; a resume keeps the lines up to its checkpoint (and that checkpoint's
    evaluation), not those a crashed run logged after it, so the file reads as one run."""
    kept = []
    if resume_iter is not None and os.path.exists(path):
        try:
            kept = [r for r in read_metrics(path)
                    if r["iter"] < resume_iter or (r["iter"] == resume_iter and "val_loss" in r)]
        except ValueError as e:
            sys.exit(f"error: {e}")
    try:
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    except OSError as e:
        sys.exit(f"error: cannot write {path} ({e.strerror or e}); pick an out_dir you can write to.")


def read_metrics(path):
    """The records of a metrics.jsonl, in order. A last line cut short, what a crash in the middle of
    append_metrics leaves, is dropped with a one-line note on stderr; a damaged line before it raises
    ValueError naming it (something else changed the file, and its records cannot be trusted)."""
    with open(path) as f:
        lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != lines[-1][0]:
                raise ValueError(f"line {i} of {path} is damaged (not JSON), and lines after it are not; "
                                 "fix or delete that line.") from None
            print(f"note: dropped the last line of {path}, cut short (a crash while writing it)",
                  file=sys.stderr, flush=True)
    return records


def append_metrics(path, record):
    """Add one record to metrics.jsonl; stops with one sentence if the out_dir has gone."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        sys.exit(f"error: cannot write to {path} ({e.strerror or e}): {gone_or_locked(path)}")


def gone_or_locked(path):
    """Why a file of out_dir cannot be written any more, in words, with what to do."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return (f"{folder} was removed during the run, and its checkpoint with it; start the run again "
                "(nothing is left to continue from).")
    return (f"{folder} was made read-only during the run; make it writable again and continue with "
            "--init_from=resume (the last checkpoint there is intact).")


def start_wandb(config):
    """Weights & Biases for wandb_log=True: a run of wandb_project, named wandb_run_name or after the
    out_dir's folder, holding the settings; returns the wandb module. Stops with one sentence if it is not
    installed."""
    try:
        import wandb
    except ImportError:
        sys.exit("error: wandb_log=True needs the wandb package: pip install wandb (or leave wandb_log off).")
    name = config["wandb_run_name"] or os.path.basename(os.path.abspath(config["out_dir"]))
    wandb.init(project=config["wandb_project"], name=name, config=config)
    return wandb


def peak_memory_mb(device_type, device):
    """Peak memory so far in MiB: on CUDA the tensors' peak (torch.cuda.max_memory_allocated); elsewhere the
    peak resident size of the whole process (ru_maxrss: KiB on Linux, bytes on macOS), which includes Python
    and torch themselves."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows has no getrusage
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def stop_if_nonfinite(bad, *, ddp, device, master, iter_num, out_dir):
    """Stop every process together if any of them saw a non-finite loss: a process that stopped alone would
    leave the others waiting in their next collective."""
    bad = torch.tensor(float(bad), device=device)
    if ddp:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.item():
        if master:
            print(f"error: the loss became non-finite by iteration {iter_num}; the last good checkpoint in "
                  f"{out_dir} is untouched. Lower learning_rate, or use dtype=float32 or bfloat16.",
                  file=sys.stderr, flush=True)
        if ddp:  # none ends before rank 0 has said why: torchrun stops the rest as soon as one has ended
            torch.distributed.barrier()
        sys.exit(1)


def exit_before_interpreter_shutdown():
    """End a DDP process as soon as its script is over, before the interpreter shuts down (registered with
    atexit right after init_process_group, so it runs however the script ends). Gloo's worker threads outlive
    destroy_process_group, and one may still be letting go of the last collective's tensors, which takes the
    GIL; Python ends a thread that asks for the GIL during shutdown in the middle of a C++ destructor, and the
    process aborts ("terminate called without an active exception"). A process that has called
    destroy_process_group is done and exits 0; any other stopped on a reported error and exits 1, or on a
    signal (stop_on_signals) and exits 128 + the signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + STOP["signal"] if STOP["signal"] else 1 if torch.distributed.is_initialized() else 0)
