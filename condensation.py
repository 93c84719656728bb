"""
The condensation statistics of a model's hidden states: how the tokens of one sequence crowd into a narrow
cone, layer by layer. Definitions: docs/condensation.md, sections 1 and 2.

    from condensation import measure        # also importable from measure.py
    # model: our GPT or a transformers causal LM; sequences: a list of 1-D token tensors or (N, T)
    result = measure(model, sequences)
    result.mean_cos, result.spearman, result.save("cond.json")

measure.py is the command around this library; condense/plots.py draws its figures.
"""

import json
import math
import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from condense import cosines
from condense.parallel import keep_freed_memory, parallel_map
from model import GPT

# -----------------------------------------------------------------------------
# library: statistics of hidden states


@dataclass
class Result:
    mean_cos: list  # per hidden-state entry 0..n_layer: mean off-diagonal cosine, averaged over sequences
    # per entry: density of the off-diagonal cosines on equal bins over [-1, 1], pooled over sequences
    hist: list
    erank: list | None  # per entry: effective rank of the unit token vectors, averaged over sequences
    top_share: list | None  # per entry: sigma_1^2 / sum sigma^2 of the same matrix, averaged over sequences
    spearman: float  # rank correlation of mean_cos with the entry index; +1: cosines rise with depth
    kendall: float  # Kendall's tau-b of the same
    last_n_mean: list  # [k - 1]: mean of mean_cos over the last k entries, k = 1..n_layer+1
    num_sequences: int
    num_tokens: int
    name: str = ""

    def save(self, path):
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=1)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls(**json.load(f))


def ranks(x):
    """Rank of each value in 1..n; tied values share their average rank: #smaller + (#equal + 1) / 2."""
    return [sum(v < xi for v in x) + (sum(v == xi for v in x) + 1) / 2 for xi in x]


def spearman(x, y):
    """Pearson correlation of the ranks. 0.0 (no trend) when either side is constant, so JSON never holds
    NaN."""
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0


def kendall(x, y):
    """tau-b = (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y); 0.0 when either is
    0."""
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    sign = lambda v: (v > 0) - (v < 0)
    s = sum(sign(x[i] - x[j]) * sign(y[i] - y[j]) for i, j in pairs)
    nx, ny = sum(x[i] != x[j] for i, j in pairs), sum(y[i] != y[j] for i, j in pairs)
    return s / math.sqrt(nx * ny) if nx > 0 and ny > 0 else 0.0


def layer_sums(h, lengths, bins, erank=False, top_share=False, scratch=None):
    """Sums over the sequences of a batch, for one hidden-state entry h (B, T, C) whose sequence b holds
    lengths[b] tokens (right padding beyond is ignored). Returns the sums of the per-sequence mean cosine,
    effective rank and top share ((3,), 0 for one not asked for; (1,) when neither is), and the histogram
    counts of the ordered pairs i != j (raw: cosines.histogram turns a sum of them into the bins). scratch: a
    dict the caller keeps between calls on hidden states of one shape (measure(): one per thread), in which
    the histogram's buffers are kept for the next call (cosines.PairCounts).

    u_i = h_i / max(||h_i||, 1e-8); cos_ij = u_i . u_j; mean_cos = sum_{i != j} cos_ij / (n (n - 1)), summed
    from the products the histogram computes anyway (cosines.PairCounts).
    Effective rank (Roy & Vetterli 2007) = exp(-sum_k p_k log p_k), p_k = sigma_k / sum sigma, and
    top share = sigma_1^2 / sum sigma^2, with sigma the singular values of the (n, C) matrix of unit tokens,
    not centred: a cone of tokens has one dominant direction, and no single huge token (GPT-2's first
    position) can dominate. sigma^2 are the eigenvalues of the cosine matrix, and sum sigma^2 its trace,
    sum_i ||u_i||^2 (n, less any zero tokens). Both are opt-in, for their cost (measure()): the effective rank
    needs every sigma^2 (cosines.effective_rank), the top share only sigma_1^2 (cosines.top_eigenvalue)."""
    B, T, C = h.shape
    h = (h.detach() if h.requires_grad else h).float()  # statistics, never a gradient; float32 as it is
    scratch = {} if scratch is None else scratch
    if "counter" not in scratch or not scratch["counter"].fits(h, bins):
        scratch["counter"] = cosines.PairCounts(B, T, C, bins, h.device)
    counter = scratch["counter"]
    lengths = lengths.tolist() if torch.is_tensor(lengths) else lengths  # measure() gives a list: no sync
    padded = min(lengths) < T  # full windows, the usual case, skip every mask
    norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True)  # (B, T, 1)
    clamped = norm.clamp_min(1e-8)
    u = torch.div(h, clamped, out=counter.u)  # (B, T, C), as F.normalize, where the histogram reads it
    if padded and scratch.get("lengths") != lengths:  # once per batch: a copy to a GPU waits for the GPU
        valid = torch.arange(T, device=h.device) < torch.tensor(lengths, device=h.device)[:, None]
        scratch.update(lengths=lengths, valid=valid[..., None])  # (B, T, 1) True for a real token
    sums = None
    if erank or top_share:  # padding at 0 for the spectrum; sum_i ||u_i||^2 is the trace, about n
        if padded:
            u.mul_(scratch["valid"])
            clamped = clamped.masked_fill(~scratch["valid"], math.inf)  # norm / inf = 0
        trace = (norm / clamped).square().sum((1, 2))  # ||u_i|| = 1 but for a (near) zero token
        zero = trace.new_zeros(())
        if erank:
            ranks, top = cosines.effective_rank(u)  # (B,) each; top: sigma_1^2
        else:
            ranks, top = zero, cosines.top_eigenvalue(u, trace) if top_share else zero
        top = top / trace.clamp_min(1e-12) if top_share else zero  # (B,)
        sums = (ranks.sum(), top.sum())
    if padded:  # the histogram and the mean leave out every pair with a padding token, NaN for it
        u.masked_fill_(~scratch["valid"], math.nan)
    counts, mean_sum = counter(lengths if padded else None)
    sums = mean_sum if sums is None else torch.cat([mean_sum, torch.stack(sums)]).double()  # (1,) or (3,)
    return sums, counts


def accumulate(totals, l, sums, counts):
    """Add entry l's sums and histogram counts of one batch into totals (a list, one [sums, counts] per
    entry)."""
    if len(totals) <= l:
        totals.append([sums, counts])
    else:
        totals[l] = [totals[l][0] + sums, totals[l][1] + counts]


def summarize(totals, num_sequences, num_tokens, name="", erank=False, top_share=False):
    """Averages, densities and rank correlations from the accumulated sums (one transfer off the device);
    None for a statistic not asked for."""
    sums = torch.stack([s for s, _ in totals]).cpu().double() / num_sequences  # (L+1, 3), or (L+1, 1)
    raw = torch.stack([c for _, c in totals]).cpu()  # (L+1, 2 * COPIES * (bins + 2))
    counts = cosines.histogram(raw).double()  # (L+1, bins)
    width = 2 / counts.shape[1]
    hist = counts / (counts.sum(1, keepdim=True).clamp_min(1) * width)  # a density: sum(hist) * width = 1
    mean_cos = sums[:, 0].tolist()
    layers = list(range(len(mean_cos)))
    return Result(mean_cos=mean_cos, hist=hist.tolist(), erank=sums[:, 1].tolist() if erank else None,
                  top_share=sums[:, 2].tolist() if top_share else None, spearman=spearman(mean_cos, layers),
                  kendall=kendall(mean_cos, layers),
                  last_n_mean=[sum(mean_cos[-k:]) / k for k in range(1, len(mean_cos) + 1)],
                  num_sequences=num_sequences, num_tokens=num_tokens, name=name)


def hidden_stats(hidden, lengths=None, *, bins=128, name="", erank=False, top_share=False):
    """The Result for given hidden states: a list of (B, T, C) tensors, one per entry 0..n_layer, and
    optionally lengths (B,) of right-padded sequences. measure() does the same batch by batch."""
    B, T, _ = hidden[0].shape
    lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
    if lengths.min() < 2:
        raise ValueError("every sequence needs at least 2 tokens for a cosine between tokens.")
    totals, scratch, spectrum = [], {}, dict(erank=erank, top_share=top_share)
    for l, h in enumerate(hidden):
        accumulate(totals, l, *layer_sums(h, lengths, bins, scratch=scratch, **spectrum))
    return summarize(totals, B, int(lengths.sum()), name, erank, top_share)


# -----------------------------------------------------------------------------
# library: running a model, one hidden state at a time


def model_limits(model):
    """(context length, vocabulary size) of our GPT or a transformers model."""
    c = model.config
    if isinstance(model, GPT):
        return c.block_size, c.vocab_size
    return (getattr(c, "max_position_embeddings", None) or math.inf,
            model.get_input_embeddings().weight.shape[0])


def check_sequences(sequences, context, vocab_size):
    """A list of 1-D long tensors, or ValueError with one sentence saying what is wrong."""
    seqs = list(sequences) if isinstance(sequences, torch.Tensor) else [torch.as_tensor(s) for s in sequences]
    if not seqs:
        raise ValueError("there are no sequences to measure; give at least one of 2 or more tokens.")
    for i, s in enumerate(seqs):
        if s.dim() != 1 or s.dtype.is_floating_point:
            raise ValueError(f"sequence {i} is a {s.dtype} tensor of shape {tuple(s.shape)}; "
                             "give 1-D tensors of token ids.")
        if len(s) < 2:
            raise ValueError(f"sequence {i} has {len(s)} token(s), but a cosine between tokens needs "
                             "at least 2.")
        if len(s) > context:
            raise ValueError(f"sequence {i} has {len(s)} tokens, more than the model's context of {context}; "
                             "cut it into windows.")
    flat = torch.cat([s.flatten() for s in seqs])
    lo, hi = flat.min().item(), flat.max().item()  # one device sync for all of them
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} is outside the model's vocabulary 0..{vocab_size - 1}; "
                         "tokenise with the model's own tokenizer.")
    return [s.long() for s in seqs]


def find_blocks(model):
    """The transformer blocks, in order: our GPT's transformer.h, or the first ModuleList inside a
    transformers model's base model that holds config.num_hidden_layers modules (GPT-2's h; the layers of
    Llama, Qwen, GPT-NeoX, OLMo, Gemma; OPT's decoder.layers). None if there is no such list."""
    if isinstance(model, GPT):
        return model.transformer.h
    n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    return next((m for m in model.base_model.modules()
                 if isinstance(m, torch.nn.ModuleList) and len(m) == n), None)


def stream_hidden(model, x, consume, blocks):
    """Run model on tokens x (B, T) and hand each hidden-state entry l = 0..L to consume(l, h), h (B, T, C),
    the moment the forward pass produces it. Entry l < L is the input of block l (a forward pre-hook); entry L
    is the output of the final norm: our ln_f, or a transformers base model's last_hidden_state. That is the
    convention of output_hidden_states (docs/condensation.md, section 1), but nothing holds an entry after
    consume returns, so memory does not grow with depth. Only the base model runs, without a KV cache: no
    output head (our GPT's is handed no positions; on one position it cost 16% of small_base's forward).
    blocks: find_blocks(model); with None, a transformers model's output_hidden_states is used instead, which
    holds all L + 1 entries at once."""
    with hidden_stream(model, blocks) as run:
        run(x, consume)


@contextmanager
def hidden_stream(model, blocks):
    """stream_hidden's hooks, registered once for any number of forward passes: yields run(x, consume). Each
    hook hands its entry to the consumer of the thread that runs the forward pass (a thread without one is
    not seen), so several threads can stream through one model at once, as measure() does on a CPU."""
    local = threading.local()

    def hand(l, h):
        consume = getattr(local, "consume", None)
        if consume is not None:
            consume(l, h)

    def run(x, consume):
        if blocks is None:
            hidden = model.base_model(input_ids=x, output_hidden_states=True, use_cache=False).hidden_states
            for l, h in enumerate(hidden):
                consume(l, h)
            return
        local.consume = consume
        try:
            if isinstance(model, GPT):
                model(x)
            else:
                hand(len(blocks), model.base_model(input_ids=x, use_cache=False).last_hidden_state)
        finally:
            local.consume = None

    handles = [block.register_forward_pre_hook(
        lambda m, args, kwargs, l=l: hand(l, args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        for l, block in enumerate(blocks or [])]
    if blocks is not None and isinstance(model, GPT):
        handles.append(model.transformer.ln_f.register_forward_hook(lambda m, a, out: hand(len(blocks), out)))
        # no positions for the head, in the streaming thread only (None: the input as it is)
        handles.append(model.lm_head.register_forward_pre_hook(
            lambda m, args: (args[0][:, :0],) if getattr(local, "consume", None) else None))
    try:
        yield run
    finally:
        for handle in handles:
            handle.remove()


def hooks_agree(model, blocks, x):
    """True if stream_hidden's hooks see the entries output_hidden_states returns, on a few tokens x (1, t).
    Checked once per measure(): an architecture whose blocks are not fed the residual stream directly is then
    measured through output_hidden_states instead of silently on the wrong tensors."""
    seen = []
    stream_hidden(model, x, lambda l, h: seen.append(h.clone()), blocks)
    ref = model.base_model(input_ids=x, output_hidden_states=True, use_cache=False).hidden_states
    close = lambda a, b: a.shape == b.shape and (a - b).float().norm() <= 1e-3 * b.float().norm() + 1e-6
    return len(seen) == len(ref) and all(close(a, b) for a, b in zip(seen, ref))


@torch.inference_mode()  # as no_grad, and without autograd's version counters: 2-5% faster on a CPU
def measure(model, sequences, *, bins=128, batch_size=1, device=None, name="", progress=None, erank=False,
            top_share=False):
    """The condensation Result of model over sequences: a list of 1-D token tensors of any lengths from 2
    up to the model's context, or an (N, T) tensor. Input that cannot be measured raises ValueError.

    The model (our GPT, or a transformers causal LM) is moved to device (default: where it is), run in eval
    mode, and put back in its previous mode. Sequences are sorted by length and batched; shorter ones are
    right-padded, which the causal mask keeps from changing earlier positions, and padding is left out of
    every statistic. Each hidden state is reduced to sums as the forward pass produces it (stream_hidden), so
    memory grows neither with depth nor with N. On a CPU, batches run side by side, one per core
    (parallel_map), and glibc keeps freed memory for the next layer from then on (keep_freed_memory: the
    process, train.py's included, keeps its peak heap). progress(done, total) is called after each batch.

    erank and top_share (Result.erank, .top_share; None unless asked for) cost more than the rest: on one CPU
    thread the top share alone adds about 2% of the forward passes on a GPT-2-small shape and 9% on
    config/small_base.py's; the effective rank (one eigendecomposition per sequence and entry, which gives the
    top share too) 27% and 35% (docs/performance.md)."""
    device = device or next(model.parameters()).device
    model.to(device)
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # page faults were about 6% of a measurement's time (condense/parallel.py)
    seqs = check_sequences(sequences, *model_limits(model))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    was_training = model.training
    model.eval()
    blocks = find_blocks(model)
    first = seqs[0][None, :16].to(device)  # (1, t) a few tokens for the check
    if blocks is not None and not isinstance(model, GPT) and not hooks_agree(model, blocks, first):
        warnings.warn(f"{type(model).__name__}: its blocks do not see the hidden states output_hidden_states "
                      "returns, so it is measured through output_hidden_states (memory grows with depth).")
        blocks = None
    batches = [[seqs[i] for i in order[k:k + batch_size]] for k in range(0, len(seqs), batch_size)]
    spectrum = dict(erank=erank, top_share=top_share)

    kept = threading.local()  # each thread's scratch: its buffers serve every batch of their shape
    def batch_sums(group):  # entry by entry, the sums of one batch; run: hidden_stream's, opened below
        with torch.inference_mode():  # (thread-local)
            x = pad_sequence(group, batch_first=True).to(device)  # (B, T) right-padded with token 0
            lengths, sums, scratch = [len(s) for s in group], [], kept.__dict__.setdefault("scratch", {})
            run(x, lambda l, h: accumulate(sums, l, *layer_sums(h, lengths, bins, scratch=scratch,
                                                                **spectrum)))
            return sums

    totals, done = [], 0
    try:
        with hidden_stream(model, blocks) as run, parallel_map(device, len(batches)) as map_in_order:
            for group, sums in zip(batches, map_in_order(batch_sums, batches)):
                for l, entry in enumerate(sums):
                    accumulate(totals, l, *entry)
                done += len(group)
                if progress:
                    progress(done, len(seqs))
    finally:
        model.train(was_training)
    return summarize(totals, len(seqs), sum(len(s) for s in seqs), name, erank, top_share)


# -----------------------------------------------------------------------------
# sequences to measure


WINDOW = 512  # tokens per measured window, as the paper measured


def window_length(context, asked=0):
    """Tokens per window: the length asked for (0: none), else WINDOW or the model's context if shorter. The
    one rule for measure.py and for train.py's tracking."""
    return asked or min(context, WINDOW)


def window_starts(num_tokens, n, length, seed):
    """n window starts in a text of num_tokens tokens: floor(u_k * (num_tokens - length + 1)), u_k uniform in
    [0, 1) from seed. The u_k do not depend on the tokenizer, so models with different tokenizers read windows
    that begin at about the same place in the same text."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (n,)
    return (u * (num_tokens - length + 1)).long().tolist()


def windows(ids, n, length, seed, prefix=(), source="the text"):
    """(n, length) tensor: each row is prefix followed by length - len(prefix) consecutive ids from a seeded
    random start (window_starts). ids: a 1-D array of the text's token ids."""
    body = length - len(prefix)
    if len(ids) < body:
        raise ValueError(f"{source} holds {len(ids)} tokens, fewer than one window of {body}; "
                         "lower seq_len or give more text.")
    rows = [np.concatenate([np.asarray(prefix, dtype=np.int64), np.asarray(ids[i:i + body], dtype=np.int64)])
            for i in window_starts(len(ids), n, body, seed)]
    return torch.from_numpy(np.stack(rows))


def val_windows(data_dir, n, length, seed):
    """n windows of length tokens from data_dir/val.bin at random offsets fixed by seed: (n, length)."""
    data = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")
    return windows(data, n, length, seed, source=f"{data_dir}/val.bin")


def text_windows(text, encode, n, length, prefix=(), source="the text"):
    """Up to n consecutive windows from the start of text, each prefix + length - len(prefix) tokens of it;
    a shorter rest at the end is left out, so every window has the same length."""
    if not text:
        raise ValueError("the text is empty; give a text file with something in it.")
    ids, body = encode(text), length - len(prefix)
    if len(ids) < body:
        raise ValueError(f"{source} holds {len(ids)} tokens, fewer than one window of {body}; give a longer "
                         "text or a lower --seq_len.")
    return [torch.tensor([*prefix, *ids[i:i + body]], dtype=torch.long)
            for i in range(0, len(ids) - body + 1, body)][:n]
