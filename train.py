"""
Train a GPT, optionally with a dispersion loss against embedding condensation.

One process (CPU, one GPU, Apple):
    python train.py config/tiny_base.py
    python train.py config/small_disp.py --batch_size=8 --compile=False
Several GPUs or processes (DDP):
    torchrun --standalone --nproc_per_node=8 train.py config/small_disp.py
Across nodes, on every node (node_rank 0 and 1 here):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=HOST --master_port=29500 train.py ...

Settings: the defaults in settings.py, then a config file, then --key=value overrides (configurator.py).
"""

import atexit
import json
import math
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from condensation import measure, window_length
from condense.checkpoint import checkpoint_iteration, config_from_settings, load_checkpoint
from condense.distill import distill_terms, load_teacher
from condense.device import gpu_peak, pick_device
from condense.progress import Progress
from condense.train_utils import (append_metrics, check_resume, check_token_files, claim_out_dir,
                                  exit_before_interpreter_shutdown, peak_memory_mb, restore_rng, rng_states,
                                  start_metrics, start_wandb, stop_if_nonfinite, stop_on_signals,
                                  write_checkpoint)
from configurator import configure
from data.common import data_fingerprint, find_data, read_meta
from dispersion import FAST_PATHS, dispersion_loss, select_layers, uses_speed_path
from model import GPT, GPTConfig
from settings import HELP, check_config, defaults

# the settings: settings.py's defaults, then config files and --key=value overrides, each value checked
# against settings.RULES (a mistake stops here). Every setting becomes a name of this script: out_dir,
# batch_size, ...
try:
    config = configure(defaults(), sys.argv[1:], __doc__, [HELP])  # -h or --help: the settings, and stop
    check_config(config)
    globals().update(config)
    device, device_type, dtype, autocast = pick_device(device, dtype)  # stops if the device is not there
except ValueError as e:  # ConfigError is one
    sys.exit(f"error: {e}")

# processes, device and precision
ddp = int(os.environ.get("RANK", -1)) != -1  # launched by torchrun?
if ddp:
    init_process_group(backend=backend or ("nccl" if device_type == "cuda" else "gloo"))
    atexit.register(exit_before_interpreter_shutdown)  # see condense/train_utils.py: avoids an abort at exit
    rank, local_rank, world_size = (int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]),
                                    int(os.environ["WORLD_SIZE"]))
    if device_type == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
else:
    rank, local_rank, world_size = 0, 0, 1
master = rank == 0  # the process that logs and writes checkpoints
# Ctrl-C or SIGTERM from here: one sentence (where it stopped, the checkpoint, how to continue), no traceback
stop_on_signals(lambda: globals().get("iter_num"), os.path.join(out_dir, "ckpt.pt"), master, world_size)
if gradient_accumulation_steps < 1 or gradient_accumulation_steps % world_size != 0:
    sys.exit(f"error: gradient_accumulation_steps={gradient_accumulation_steps} must be a positive "
             f"multiple of the {world_size} process(es); set it to a multiple of {world_size}.")
local_accum = gradient_accumulation_steps // world_size  # micro-batches this process runs per step
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if compile is None:
    compile = device_type == "cuda"
dispersion_path = dispersion_path or ("per_layer" if device_type == "cpu" else "stacked")
torch.manual_seed(seed + rank)  # dropout and noise differ per process; batches do not (see below)
if device_type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

# data: the default data sets prepare themselves on first use, once per machine (nodes need not share a disk)
if ddp and local_rank != 0:
    torch.distributed.barrier()  # wait for local rank 0 to prepare it
try:
    data_dir = find_data(dataset, data_dir, prepare=local_rank == 0)
except ValueError as e:
    sys.exit(f"error: {e}.")
if ddp and local_rank == 0:
    torch.distributed.barrier()
try:
    meta = read_meta(data_dir)
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}.")
check_token_files(data_dir, block_size)  # train.bin and val.bin there, whole uint16 ids, a window long


def load_batch(split, offsets):
    """Sequences starting at offsets, and the same shifted by one as targets. The memmap is opened per
    call, because a long-lived np.memmap keeps its pages and memory creeps up over a long run."""
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in offsets.tolist()])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64))
                     for i in offsets.tolist()])
    if max(x.max().item(), y.max().item()) >= meta["vocab_size"]:  # on the CPU: cheap, no device-side assert
        sys.exit(f"error: {split}.bin in {data_dir} holds token id {max(x.max().item(), y.max().item())}, "
                 f"but its meta.json has a vocabulary of {meta['vocab_size']}: the files come from different "
                 "preparations; prepare the data set again.")
    if device_type == "cuda":  # pinned memory lets the copy overlap with the model's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def split_length(split):
    return len(np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r"))


# every process draws the whole global batch and keeps its own share: the same batch for any process count
batch_gen = torch.Generator().manual_seed(seed)
eval_gen = torch.Generator().manual_seed(seed + 1)  # fixed evaluation windows: the same every time, per seed
eval_offsets = {s: torch.randint(split_length(s) - block_size, (eval_iters, batch_size), generator=eval_gen)
                for s in ("train", "val")}

# teacher (condense/distill.py: loaded once, frozen, eval mode; checked before out_dir is touched) and model
try:
    teacher = load_teacher(distill_from, meta, block_size, device, compile) if distill_from else None
except ValueError as e:
    sys.exit(f"error: {e}")
out_dir_lock = claim_out_dir(out_dir) if master else None  # held open until this process ends
model_args = asdict(config_from_settings(config, meta["vocab_size"]))  # saved in the checkpoint
ckpt_path = os.path.join(out_dir, "ckpt.pt")
iter_num, best_val_loss, ckpt = 0, float("inf"), None
if init_from != "resume" and os.path.exists(ckpt_path):
    sys.exit(f"error: {ckpt_path} already exists; continue it with --init_from=resume, or pick another "
             "--out_dir (nothing was overwritten).")
if init_from == "scratch":
    model = GPT(GPTConfig(**model_args))
elif init_from == "resume":
    ckpt = load_checkpoint(ckpt_path)  # on the CPU: RNG states must stay there; the model moves below
    saved = check_resume(ckpt, config, meta, data_dir, ckpt_path, teacher)  # its own shape, data and teacher
    # the shape then comes from the checkpoint (GPT-2's after init_from=gpt2), dropout and noise from settings
    iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
    if iter_num >= max_iters:  # said, not silently skipped; nothing in out_dir has changed
        if master:
            print(f"nothing to do: {ckpt_path} is at iteration {iter_num} and max_iters is {max_iters}; "
                  "raise max_iters to train further.")
        if ddp:
            destroy_process_group()
        sys.exit(0)
    model_args = {**ckpt["model_args"], "dropout": dropout, "embed_noise_alpha": embed_noise_alpha}
    model = GPT(GPTConfig(**model_args))
    model.load_state_dict(ckpt["model"])
elif init_from.startswith("gpt2"):
    pretrained = GPT.from_pretrained(init_from)
    if block_size > pretrained.config.block_size:
        sys.exit(f"error: block_size={block_size} is longer than {init_from}'s "
                 f"{pretrained.config.block_size}; set block_size to {pretrained.config.block_size} or less.")
    for k in ("n_layer", "n_head", "n_embd", "mlp_dim", "vocab_size", "bias"):
        model_args[k] = getattr(pretrained.config, k)
    model = GPT(GPTConfig(**model_args))  # GPT-2's shape with our block_size, dropout and embed noise
    weights = pretrained.state_dict()
    weights["transformer.wpe.weight"] = weights["transformer.wpe.weight"][:block_size]
    model.load_state_dict(weights)
    pretrained = weights = None  # free the memory
model.to(device)
alpha, geometry = (distill_weight, distill_hidden_weight > 0) if teacher else (0.0, False)
weights = (1 - alpha, alpha, distill_hidden_weight * geometry, dispersion_weight)  # of forward()'s 4 terms
disp_layers = []  # the hidden-state entries the dispersion loss reads; with weight 0 none are even collected
if dispersion_weight > 0:  # named layer sets follow the model's depth, which after init_from=gpt2 is GPT-2's
    try:
        disp_layers = select_layers(dispersion_layers, model.config.n_layer)
    except ValueError as e:  # only after gpt2: check_config has checked the layers against n_layer
        sys.exit(f"error: dispersion_layers={dispersion_layers!r}: {e}.")
    # asked once, before torch.compile: a built-in formula edited in dispersion.py trains as written
    speed_path = uses_speed_path(dispersion_variant, tau=dispersion_tau, clamp=dispersion_clamp,
                                 margin=dispersion_margin, norm_weight=dispersion_norm_weight)

scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))  # only fp16 needs loss scaling
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if ckpt is not None:
    # the saved moments, with this run's hyperparameters (load_state_dict would bring back the saved ones)
    fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, settings in zip(optimizer.param_groups, fresh):
        group.update(settings)
    changed = [f"{k} {saved.get(k)} -> {config[k]}" for k in ("weight_decay", "beta1", "beta2")
               if saved.get(k) != config[k]]
    if changed and master:
        print(f"resume: this run's {', '.join(changed)} apply from iteration {iter_num} on")
    scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"], rank, device_type, batch_gen)
ckpt = None  # free the memory

raw_model = model  # the plain module: what gets evaluated, measured and saved (no _orig_mod. prefix)
dispersion_fn = dispersion_loss
if compile:
    import torch._dynamo
    torch._dynamo.config.suppress_errors = True  # a model that fails to compile runs eagerly, with a warning
    model = torch.compile(model)
    # compiled on its own, as it runs outside the model: its passes fuse into a few kernels (scripts/bench.py)
    dispersion_fn = torch.compile(dispersion_loss)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)


def get_lr(it):
    """Linear warm-up from learning_rate / (warmup_iters + 1) (never zero), then cosine decay to min_lr."""
    decay_end = lr_decay_iters or max_iters
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= decay_end:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_end - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def forward(m, x, y):
    """(cross-entropy, kd, geometry, dispersion), each unweighted; a term that is off is a zero tensor."""
    with autocast:
        out = m(x, y, return_hidden=bool(disp_layers) or geometry)  # hidden states only if a term reads them
        logits, ce, hidden = out if len(out) == 3 else (*out, None)
        zero = torch.zeros((), device=ce.device)
        kd, geo = (distill_terms(teacher, x, logits, hidden[-1] if geometry else None, distill_temperature)
                   if teacher else (zero, zero))
        if not disp_layers:
            return ce, kd, geo, zero
        loss_args = dict(tau=dispersion_tau, clamp=dispersion_clamp, margin=dispersion_margin,
                         norm_weight=dispersion_norm_weight, max_tokens=dispersion_tokens)
        if dispersion_path == "per_layer":  # a CPU's default: each layer's (B, m, m) matrices stay in cache
            disp = sum(dispersion_fn(hidden[i], dispersion_variant, **loss_args) for i in disp_layers)
            return ce, kd, geo, disp / len(disp_layers)  # each layer draws its own max_tokens subset
        # "stacked", the default elsewhere: the chosen layers as one batch of L * B sequences (fewer, larger
        # kernels); the batch mean is the mean over layers
        z = torch.stack([hidden[i] for i in disp_layers]).flatten(0, 1)  # (L * B, T, C)
        return ce, kd, geo, dispersion_fn(z, dispersion_variant, **loss_args)


@torch.no_grad()
def evaluate():
    """Mean loss on the fixed batches of each split."""
    raw_model.eval()
    out = {}
    for split, offsets in eval_offsets.items():
        losses = []
        for o in offsets:
            with autocast:
                losses.append(raw_model(*load_batch(split, o))[1])
            progress.batch_evaluated()  # after the first few batches, on a CPU: the whole run's estimate
        out[f"{split}_loss"] = torch.stack(losses).mean().item()
    raw_model.train()
    return out


def condensation_summary(m):
    """Condensation of the fixed validation windows (measure() puts the model in eval mode and back)."""
    x, _ = load_batch("val", eval_offsets["val"].flatten()[:track_sequences])
    result = measure(m, x[:, :window_length(block_size)], batch_size=batch_size, device=device)
    return {"mean_cos": [round(v, 5) for v in result.mean_cos], "spearman": result.spearman}


def save_checkpoint(batch_state):
    """Everything a resume needs: weights, optimizer moments, the step, every process's RNG states and the
    batch generator's state before this step's draw (train_utils.write_checkpoint makes the write atomic)."""
    states = rng_states(ddp, device_type, world_size)  # a collective: every process takes part
    if not master:
        return
    ckpt = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "model_args": model_args, "iter_num": iter_num,
            "best_val_loss": best_val_loss, "config": config,
            "data": data_fingerprint(meta),  # a resume refuses another data set under the same name
            "teacher": teacher.fingerprint if teacher else None,  # ... and another teacher
            "rng": {"torch": [cpu for cpu, _ in states], "batch": batch_state,
                    "cuda": [gpu for _, gpu in states] if device_type == "cuda" else None}}
    write_checkpoint(ckpt, ckpt_path)


def forget_embedding():
    """Active forgetting (Chen et al. 2023): re-draw the token embedding and drop its AdamW moments.
    wte and lm_head are one tied tensor here, so the output head is re-initialised with it."""
    wte = raw_model.transformer.wte.weight
    with torch.no_grad():
        torch.nn.init.normal_(wte, mean=0.0, std=0.02)
        if ddp:  # each process has its own random stream: keep rank 0's draw everywhere
            torch.distributed.broadcast(wte, src=0)
    optimizer.state.pop(wte, None)


config.update(dtype=dtype, compile=compile, dispersion_path=dispersion_path)  # so config.json says what ran
metrics_path = os.path.join(out_dir, "metrics.jsonl")
stop_args = dict(ddp=ddp, device=device, master=master, out_dir=out_dir)
if master:  # out_dir exists: claim_out_dir made it
    start_metrics(metrics_path, iter_num if init_from == "resume" else None)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(json.dumps(config, indent=2))
    print(f"{world_size} process(es), {local_accum} micro-batch(es) each, "
          f"{tokens_per_iter:,} tokens per iteration")
    print(f"model: {raw_model.num_params() / 1e6:.2f}M parameters; "
          f"device {device}, {dtype}, compile={compile}" + (f"; teacher {distill_from}, weights of ce, kd, "
          f"geometry, dispersion {weights}, T={distill_temperature}" if teacher else ""))
    if disp_layers:
        print(f"dispersion: {dispersion_variant} x {dispersion_weight} on hidden states {disp_layers}")
        if dispersion_variant in FAST_PATHS and not speed_path:
            print(f"dispersion: {dispersion_variant} in dispersion.py differs from its speed path "
                  "(condense/dispersion_fused.py), so it trains as written in dispersion.py, more slowly")
wandb = start_wandb(config) if master and wandb_log else None  # optional: records go to Weights & Biases too


def log_record(record):
    """One record of the run: a line of metrics.jsonl, and with wandb_log a point in Weights & Biases."""
    append_metrics(metrics_path, record)
    if wandb:
        wandb.log(record, step=record["iter"])


peak = gpu_peak(device_type, say=master)  # the GPU's peak FLOP/s for the MFU; None on a CPU

# ---------------------------------- the training loop ----------------------------------
nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # checked without a device sync in the step
start_iter, last_log_iter, t0 = iter_num, iter_num, time.perf_counter()
progress = Progress(config, iter_num, local_accum, device_type, sys.argv[1:])  # the log line's clock and ETA
while True:
    batch_state = batch_gen.get_state()  # before this step's draw: a resume from here redraws the same batch
    evaluation_due = iter_num % eval_interval == 0 or iter_num == max_iters
    if evaluation_due and not (init_from == "resume" and iter_num == start_iter):  # a resume is past its eval
        t_eval = progress.start_evaluation(iter_num)
        metrics = evaluate()
        # checked before tracking (an eigendecomposition of NaNs raises) and before any checkpoint; the fresh
        # losses count too, because the weights can turn non-finite in the step just taken
        stop_if_nonfinite(nonfinite.item() or not math.isfinite(metrics["train_loss"] + metrics["val_loss"]),
                          iter_num=iter_num, **stop_args)
        if track_sequences:
            metrics.update(condensation_summary(raw_model))
        if master:
            print(f"iter {iter_num}: train loss {metrics['train_loss']:.4f}, "
                  f"val loss {metrics['val_loss']:.4f}"
                  + (f", condensation spearman {metrics['spearman']:+.2f}" if "spearman" in metrics else ""))
            log_record({"iter": iter_num, **metrics})
        if metrics["val_loss"] < best_val_loss or always_save_checkpoint:
            best_val_loss = min(best_val_loss, metrics["val_loss"])
            if iter_num > 0:
                save_checkpoint(batch_state)
        t0 += progress.evaluated(time.perf_counter() - t_eval)  # the step timings leave it out, the ETA not
    if iter_num >= max_iters:
        break
    if forget_every and iter_num > 0 and iter_num % forget_every == 0:
        forget_embedding()

    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group["lr"] = lr
    offsets = torch.randint(split_length("train") - block_size, (gradient_accumulation_steps, batch_size),
                            generator=batch_gen)[rank * local_accum:(rank + 1) * local_accum]
    x, y = load_batch("train", offsets[0])
    sums = 0.0  # of the four terms (a tensor after the first micro-batch)
    for micro in range(local_accum):
        if ddp:  # average gradients across processes only on the last micro-batch
            model.require_backward_grad_sync = micro == local_accum - 1
        terms = forward(model, x, y)
        # (1 - alpha) ce + alpha kd + distill_hidden_weight geometry + dispersion_weight dispersion
        loss = sum(w * t for w, t in zip(weights, terms)) / local_accum
        if micro + 1 < local_accum:
            x, y = load_batch("train", offsets[micro + 1])  # fetch the next batch while the device works
        scaler.scale(loss).backward()
        sums = sums + torch.stack(terms).detach()
        nonfinite |= ~torch.isfinite(loss.detach())
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if iter_num % log_interval == 0:  # the only place the step waits for the device
        stop_if_nonfinite(nonfinite.item(), iter_num=iter_num, **stop_args)
        losses = sums.float() / local_accum  # this process's micro-batch mean
        if ddp:  # the mean over all processes: the loss of the whole global batch, not rank 0's share
            torch.distributed.all_reduce(losses)
            losses /= world_size
        ce_val, kd_val, geo_val, disp_val = losses.tolist()
    if iter_num % log_interval == 0 and master:
        ms = 1000 * (time.perf_counter() - t0) / (iter_num + 1 - last_log_iter)  # mean since the last log
        total = sum(w * v for w, v in zip(weights, (ce_val, kd_val, geo_val, disp_val)))
        mfu = (raw_model.flops_per_token(block_size) * tokens_per_iter / world_size / (ms / 1000) / peak
               if peak else None)
        head, tail = progress.line(iter_num, ms)  # 'iter 50/1800 (2.8%)' and ', elapsed 12s, eta 3m41s'
        print(f"{head}: loss {total:.4f} (ce {ce_val:.4f}, " + (f"kd {kd_val:.4f}, " if teacher else "")
              + (f"geometry {geo_val:.4f}, " if geometry else "") + f"disp {disp_val:.4f}), lr {lr:.2e}, "
              f"{ms:.0f} ms/iter, {tokens_per_iter / (ms / 1000):,.0f} tok/s"
              + (f", MFU {100 * mfu:.1f}%" if mfu else "") + tail)
        log_record({"iter": iter_num, "loss": total, "ce": ce_val, "kd": kd_val, "geometry": geo_val,
                    "dispersion": disp_val, "lr": lr, "ms": ms, "tokens_per_s": tokens_per_iter / (ms / 1000),
                    "mfu": mfu, "peak_mem_mb": peak_memory_mb(device_type, device)})
        last_log_iter, t0 = iter_num + 1, time.perf_counter()
    iter_num += 1

if master:  # what was written where, the best val loss, and the commands that look at the result
    progress.finish(out_dir, checkpoint_iteration(ckpt_path), best_val_loss)
if ddp:
    destroy_process_group()
