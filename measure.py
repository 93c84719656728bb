"""
Measure embedding condensation: how the tokens of one sequence crowd into a narrow cone, layer by layer.

The numbers are defined in ../shared/reference/condensation-and-dispersion.md sections 1 and 2. As a library:

    from measure import measure
    result = measure(model, sequences)   # our GPT or a transformers causal LM; list of 1-D token tensors or (N, T)
    result.mean_cos, result.spearman, result.save("cond.json")

As a command, settings work as in train.py (config files, then --key=value overrides). The settings are
train.py's own, so its config files work here (a checkpoint keeps its own model and data set; --init builds
the model they describe), plus those in MEASURE_SETTINGS below. Each run writes a JSON and a PNG and prints
a table per model:

    python measure.py --out_dir=out/tiny_base                 # a checkpoint: out_dir/condensation.{json,png}
    python measure.py config/tiny_base.py --init=True         # the same model freshly initialised
    python measure.py --hf=gpt2 --dataset=shakespeare         # a Hugging Face model (transformers)
    python measure.py --compare=out/a,out/b,init,hf:gpt2      # side-by-side figure and table: out_dir/compare.*
    python measure.py --history=out/tiny_disp                 # condensation over training, from metrics.jsonl
"""

import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from configurator import configure
from model import GPT, config_from_settings, load_checkpoint, model_from_checkpoint
from settings import defaults

# -----------------------------------------------------------------------------
# library: statistics of hidden states


@dataclass
class Result:
    mean_cos: list  # per hidden-state entry 0..n_layer: mean off-diagonal cosine, averaged over sequences
    hist: list  # per entry: density of the off-diagonal cosines on equal bins over [-1, 1], pooled over sequences
    erank: list  # per entry: effective rank of the unit token vectors, averaged over sequences
    top_share: list  # per entry: sigma_1^2 / sum sigma^2 of the same matrix, averaged over sequences
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
    """Pearson correlation of the ranks. 0.0 (no trend) when either side is constant, so JSON never holds NaN."""
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0


def kendall(x, y):
    """tau-b = (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y); 0.0 when either is 0."""
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    sign = lambda v: (v > 0) - (v < 0)
    s = sum(sign(x[i] - x[j]) * sign(y[i] - y[j]) for i, j in pairs)
    nx, ny = sum(x[i] != x[j] for i, j in pairs), sum(y[i] != y[j] for i, j in pairs)
    return s / math.sqrt(nx * ny) if nx > 0 and ny > 0 else 0.0


def layer_sums(h, lengths, bins):
    """Sums over the sequences of a batch, for one hidden-state entry h (B, T, C) whose sequence b holds
    lengths[b] tokens (right padding beyond is ignored). Returns the sums of the per-sequence mean cosine,
    effective rank and top share, and the histogram counts of the pairs i < j (the same density as i != j).

    u_i = h_i / max(||h_i||, 1e-8); cos_ij = u_i . u_j; mean_cos = sum_{i != j} cos_ij / (n (n - 1)).
    Effective rank (Roy & Vetterli 2007) = exp(-sum_k p_k log p_k), p_k = sigma_k / sum sigma, and
    top share = sigma_1^2 / sum sigma^2, with sigma the singular values of the (n, C) matrix of unit tokens,
    not centred: a cone of tokens has one dominant direction, and no single huge token (GPT-2's first
    position) can dominate. sigma^2 are the eigenvalues of the cosine matrix itself (or of u^T u if C < T).
    """
    B, T, C = h.shape
    valid = torch.arange(T, device=h.device) < lengths[:, None].to(h.device)  # (B, T)
    h = h.float()
    u = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-8) * valid[..., None]  # (B, T, C), padding -> 0
    cos = u @ u.transpose(1, 2)  # (B, T, T)
    n = valid.sum(1).float()  # (B,)
    diag = cos.diagonal(dim1=1, dim2=2).sum(1)  # (B,) about n; a zero token contributes 0
    mean_cos = (cos.sum((1, 2)) - diag) / (n * (n - 1))  # (B,)
    pairs = torch.triu(torch.ones(T, T, dtype=torch.bool, device=h.device), 1) & valid[:, :, None] & valid[:, None, :]
    counts = torch.histc(cos[pairs].clamp(-1, 1), bins=bins, min=-1, max=1).long()  # (bins,) exact when summed
    gram = cos if T <= C else u.transpose(1, 2) @ u  # (B, T, T) or (B, C, C): the same nonzero eigenvalues
    eig = eigenvalues(gram)  # (B, min(T, C)) sigma^2, ascending
    tol = eig[:, -1:] * eig.shape[1] * torch.finfo(eig.dtype).eps  # rounding noise below it (matrix_rank's rule)
    eig = torch.where(eig > tol, eig, 0)
    sigma = eig.sqrt()
    p = sigma / sigma.sum(1, keepdim=True).clamp_min(1e-12)
    erank = torch.exp(-torch.xlogy(p, p).sum(1))  # (B,)
    top = eig[:, -1] / eig.sum(1).clamp_min(1e-12)  # (B,)
    return torch.stack([mean_cos.sum(), erank.sum(), top.sum()]), counts


def eigenvalues(gram):
    """Eigenvalues (ascending) of a batch of symmetric matrices; on the CPU with one thread. Small eigenproblems
    gain little from threads, and with the cores shared, MKL's threaded solver took 0.5 - 4 s for 8 matrices
    of 512 x 512 where one thread takes 0.08 s (2-core machine)."""
    if gram.device.type != "cpu":
        return torch.linalg.eigvalsh(gram)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigvalsh(gram)
    finally:
        torch.set_num_threads(threads)


def add_batch(totals, hidden, lengths, bins):
    """Add one batch's sums into totals (a list, one [sums, counts] per entry); nothing grows with N."""
    for l, h in enumerate(hidden):
        sums, counts = layer_sums(h, lengths, bins)
        if len(totals) <= l:
            totals.append([sums, counts])
        else:
            totals[l] = [totals[l][0] + sums, totals[l][1] + counts]


def summarize(totals, num_sequences, num_tokens, name=""):
    """Averages, densities and rank correlations from the accumulated sums (one transfer off the device)."""
    sums = torch.stack([s for s, _ in totals]).cpu().double() / num_sequences  # (L+1, 3)
    counts = torch.stack([c for _, c in totals]).cpu().double()  # (L+1, bins)
    width = 2 / counts.shape[1]
    hist = counts / (counts.sum(1, keepdim=True).clamp_min(1) * width)  # a density: sum(hist) * width = 1
    mean_cos = sums[:, 0].tolist()
    layers = list(range(len(mean_cos)))
    return Result(mean_cos=mean_cos, hist=hist.tolist(), erank=sums[:, 1].tolist(), top_share=sums[:, 2].tolist(),
                  spearman=spearman(mean_cos, layers), kendall=kendall(mean_cos, layers),
                  last_n_mean=[sum(mean_cos[-k:]) / k for k in range(1, len(mean_cos) + 1)],
                  num_sequences=num_sequences, num_tokens=num_tokens, name=name)


def hidden_stats(hidden, lengths=None, *, bins=128, name=""):
    """The Result for given hidden states: a list of (B, T, C) tensors, one per entry 0..n_layer, and
    optionally lengths (B,) of right-padded sequences. measure() does the same batch by batch."""
    B, T, _ = hidden[0].shape
    lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
    if lengths.min() < 2:
        raise ValueError("every sequence needs at least 2 tokens for a cosine between tokens.")
    totals = []
    add_batch(totals, hidden, lengths, bins)
    return summarize(totals, B, int(lengths.sum()), name)


# -----------------------------------------------------------------------------
# library: running a model


def model_limits(model):
    """(context length, vocabulary size) of our GPT or a transformers model."""
    c = model.config
    if isinstance(model, GPT):
        return c.block_size, c.vocab_size
    return getattr(c, "max_position_embeddings", None) or math.inf, c.vocab_size


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
            raise ValueError(f"sequence {i} has {len(s)} token(s), but a cosine between tokens needs at least 2.")
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


def forward_hidden(model, x):
    """Hidden-state entries 0..n_layer for tokens x (B, T), from our GPT or a transformers model."""
    if isinstance(model, GPT):
        return model(x, return_hidden=True)[2]
    return list(model(input_ids=x, output_hidden_states=True).hidden_states)


@torch.no_grad()
def measure(model, sequences, *, bins=128, batch_size=8, device=None, name=""):
    """The condensation Result of model over sequences: a list of 1-D token tensors of any lengths from 2
    up to the model's context, or an (N, T) tensor. Input that cannot be measured raises ValueError.

    The model (our GPT, or a transformers causal LM through output_hidden_states) is moved to device
    (default: where it is), run in eval mode, and put back in its previous mode. Sequences are sorted by
    length and batched; shorter ones are right-padded, which the causal mask keeps from changing earlier
    positions, and padding is left out of every statistic. Only sums are kept: memory does not grow with N.
    """
    device = device or next(model.parameters()).device
    model.to(device)
    seqs = check_sequences(sequences, *model_limits(model))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    was_training = model.training
    model.eval()
    # Only the hidden states are needed: lm_head gets just the last position, which saves its
    # (B, T, vocab) output, the largest tensor of the forward pass. Hidden states are taken before it.
    last_only = lambda module, args: (args[0][:, -1:],)
    hook = model.lm_head.register_forward_pre_hook(last_only) if hasattr(model, "lm_head") else None
    totals = []
    try:
        for k in range(0, len(seqs), batch_size):
            group = [seqs[i] for i in order[k:k + batch_size]]
            x = pad_sequence(group, batch_first=True).to(device)  # (B, T) right-padded with token 0
            lengths = torch.tensor([len(s) for s in group], device=device)  # (B,)
            add_batch(totals, forward_hidden(model, x), lengths, bins)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return summarize(totals, len(seqs), sum(len(s) for s in seqs), name)


# -----------------------------------------------------------------------------
# sequences to measure


def val_windows(data_dir, n, length, seed):
    """n windows of length tokens from data_dir/val.bin at random offsets fixed by seed: (n, length)."""
    data = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")
    if len(data) < length:
        raise ValueError(f"{data_dir}/val.bin holds {len(data)} tokens, fewer than one window of {length}; "
                         "lower seq_len or prepare more text.")
    starts = torch.randint(len(data) - length + 1, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([torch.from_numpy(data[i:i + length].astype(np.int64)) for i in starts.tolist()])


def text_windows(text, encode, n, length):
    """Up to n consecutive windows of length tokens from the start of text; a shorter last window counts too
    if it holds a pair of tokens."""
    if not text:
        raise ValueError("the text is empty; give a text file with something in it.")
    ids = encode(text)
    windows = [torch.tensor(ids[i:i + length], dtype=torch.long) for i in range(0, len(ids), length)]
    return [w for w in windows if len(w) >= 2][:n]


# -----------------------------------------------------------------------------
# command: settings are settings.py's (so train.py's config files work here) plus these


MEASURE_SETTINGS = dict(
    ckpt="",  # checkpoint file; empty means out_dir/ckpt.pt
    init=False,  # measure a freshly initialised model of the model settings (n_layer, n_embd, ...) instead
    hf="",  # measure a Hugging Face model instead: a name (gpt2) or a local folder; needs transformers
    compare="",  # comma-separated models, each an out_dir, a checkpoint file, 'init' or 'hf:NAME'
    history="",  # an out_dir: draw condensation over training from its metrics.jsonl
    num_sequences=100,  # validation windows measured (the paper: 100)
    seq_len=0,  # tokens per window; 0 means the model's context, capped at 512 (the paper: 512)
    text_file="",  # measure consecutive windows of this text file instead of the validation split
    texts=None,  # or a list of strings (in a config file), each one sequence
    data_dir="",  # folder with val.bin and meta.json; empty means data/<dataset> (a checkpoint's own dataset)
    bins=128,  # histogram bins on [-1, 1]
    measure_batch_size=8,  # sequences per forward pass
    save="",  # path stem of the files written (SAVE.json, SAVE.png); empty picks a name in out_dir
)


def data_meta(s, dataset, run_data_dir=""):
    """(folder, meta.json) of the data set: --data_dir, else the run's own data_dir, else data/<dataset>,
    where the default data sets prepare themselves on first use, as in train.py."""
    given = s.data_dir or run_data_dir
    folder = given or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", dataset)
    if not given and not os.path.exists(os.path.join(folder, "meta.json")):
        from data.common import prepare_default
        prepare_default(dataset)  # does nothing (returns False) for a name that is not a default data set
    if not os.path.exists(os.path.join(folder, "meta.json")):
        raise ValueError(f"{folder} holds no prepared data set (meta.json, val.bin); prepare it with "
                         "data/prepare_text.py, or pick another --dataset, --data_dir or --text_file.")
    with open(os.path.join(folder, "meta.json")) as f:
        return folder, json.load(f)


def load_entry(entry, s):
    """(model, name, data set, the run's data_dir or "") for 'init', 'hf:NAME' or a checkpoint (file or out_dir)."""
    if entry == "init":
        meta = data_meta(s, s.dataset)[1]
        torch.manual_seed(s.seed)
        model = GPT(config_from_settings(vars(s), meta["vocab_size"]))
        return model, "init", s.dataset, ""
    if entry.startswith("hf:"):
        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise ValueError("measuring a Hugging Face model needs transformers: pip install transformers") from None
        try:
            model = AutoModelForCausalLM.from_pretrained(entry[3:])
        except OSError as e:  # unknown name, no internet and no cached copy, a folder without weights
            raise ValueError(f"cannot load Hugging Face model {entry[3:]} ({type(e).__name__}); check the name, "
                             "or download it once while online.") from None
        return model, os.path.basename(entry[3:].rstrip("/")), s.dataset, ""
    path = os.path.join(entry, "ckpt.pt") if os.path.isdir(entry) else entry
    ckpt = load_checkpoint(path)  # exits with one sentence if it is missing or unreadable
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    run = ckpt.get("config", {})
    return model_from_checkpoint(ckpt), name, run.get("dataset", s.dataset), run.get("data_dir", "")


def measure_entry(entry, s, device):
    """Load one model, make its sequences (windows of val.bin, of a text file, or strings) and measure it.
    A Hugging Face model reads GPT-2 tokens; ours read the tokens of their data set."""
    model, name, dataset, run_data_dir = load_entry(entry, s)
    hf = entry.startswith("hf:")
    length = s.seq_len or min(model_limits(model)[0], 512)
    if s.text_file or s.texts:
        if hf:
            from data.common import gpt2_encoding
            encode = gpt2_encoding().encode_ordinary
        else:
            from data.common import load_tokenizer
            encode = load_tokenizer(data_meta(s, dataset, run_data_dir)[0])[0]
        if s.texts:
            texts = [s.texts] if isinstance(s.texts, str) else s.texts  # --texts=word is one string
            sequences = [torch.tensor(encode(text), dtype=torch.long) for text in texts]
        elif not os.path.isfile(s.text_file):
            raise ValueError(f"text_file {s.text_file} does not exist; give the path of a text file.")
        else:
            with open(s.text_file) as f:
                sequences = text_windows(f.read(), encode, s.num_sequences, length)
    else:
        folder, meta = data_meta(s, dataset, run_data_dir)
        tokenizer = meta["tokenizer"]
        if hf and tokenizer != "gpt2":
            raise ValueError(f"{name} reads GPT-2 tokens but {folder} holds '{tokenizer}' tokens; "
                             "add --dataset=shakespeare, or give --text_file=FILE.")
        sequences = val_windows(folder, s.num_sequences, length, s.seed)
    print(f"measuring {name}: {len(sequences)} sequences on {device}")
    return measure(model, sequences, bins=s.bins, batch_size=s.measure_batch_size, device=device, name=name)


def print_table(r):
    L = len(r.mean_cos) - 1
    print(f"{r.name}: {r.num_sequences} sequences, {r.num_tokens} tokens\nentry  l/L   mean_cos   erank  top_share")
    for l in range(L + 1):
        print(f"{l:5d}  {l / L:4.2f}  {r.mean_cos[l]:+8.4f}  {r.erank[l]:6.1f}  {r.top_share[l]:9.3f}")
    print(f"spearman {r.spearman:+.3f}  kendall {r.kendall:+.3f}\n")


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_signatures(results, path):
    """One signature heatmap per model: x = layer fraction l / n_layer, y = cosine, colour = density, white
    dots = mean_cos. Several models get the paper's figure 2 layout: a last panel of Spearman and Kendall."""
    from matplotlib.colors import PowerNorm
    plt = pyplot()
    panels = len(results) + (len(results) > 1)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        hist = np.array(r.hist)  # (L+1, bins)
        L = len(hist) - 1
        x_edges = (np.arange(L + 2) - 0.5) / L  # one column centred on each l / L
        mesh = ax.pcolormesh(x_edges, np.linspace(-1, 1, hist.shape[1] + 1), hist.T, cmap="magma", norm=PowerNorm(0.5))
        ax.plot(np.arange(L + 1) / L, r.mean_cos, "o-", color="white", ms=3, lw=1)
        ax.set(xlabel="layer fraction l / n_layer", ylabel="cosine similarity", ylim=(-1, 1),
               title=f"{r.name} (spearman {r.spearman:+.2f})")
        fig.colorbar(mesh, ax=ax, label="density (square-root colour scale)")
    if len(results) > 1:
        ax = axes[0][-1]
        ax.plot([r.spearman for r in results], "o-", label="Spearman")
        ax.plot([r.kendall for r in results], "s--", label="Kendall tau-b")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xticks(range(len(results)), [r.name for r in results], rotation=30, ha="right")
        ax.set(xlim=(-0.5, len(results) - 0.5), ylim=(-1.05, 1.05), ylabel="rank correlation of mean cosine with depth",
               title="condensation trend")
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_history(out_dir, path):
    """Loss curves, mean cosine per hidden-state entry, and Spearman against iteration, from metrics.jsonl."""
    records = []
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for i, line in enumerate(f, 1):
            try:
                records += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError:
                raise ValueError(f"line {i} of {out_dir}/metrics.jsonl is not JSON; fix or delete that line.") from None
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r and "mean_cos" in r]
    if not evals:
        raise ValueError(f"{out_dir}/metrics.jsonl has no evaluation with mean_cos; train with track_sequences > 0.")
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    it = [r["iter"] for r in evals]
    ce = [r.get("ce", r["loss"]) for r in steps]  # "loss" includes the dispersion term; "ce" is comparable to eval
    ax1.plot([r["iter"] for r in steps], ce, lw=0.7, alpha=0.6, label="train (steps)")
    ax1.plot(it, [r["train_loss"] for r in evals], "o-", label="train (eval)")
    ax1.plot(it, [r["val_loss"] for r in evals], "s-", label="val")
    ax1.set(xlabel="iteration", ylabel="cross-entropy loss", title="loss")
    ax1.legend()
    cos = np.array([r["mean_cos"] for r in evals])  # (evaluations, L+1)
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, cos.shape[1]))
    for l in range(cos.shape[1]):
        ax2.plot(it, cos[:, l], color=colours[l], label=f"entry {l}")
    ax2.set(xlabel="iteration", ylabel="mean cosine similarity", title="condensation per layer (0 = embedding)")
    ax2.legend(fontsize=7, ncol=2)
    ax3.plot(it, [r.get("spearman", float("nan")) for r in evals], "o-")
    ax3.axhline(0, color="gray", lw=0.5)
    ax3.set(xlabel="iteration", ylabel="Spearman: mean cosine vs depth", ylim=(-1.05, 1.05), title="trend")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def command(args):
    s = SimpleNamespace(**configure({**defaults(), **MEASURE_SETTINGS}, args))
    modes = [m for m in ("history", "compare", "hf", "init") if getattr(s, m)]
    if len(modes) > 1:
        raise ValueError(f"give only one of --history, --compare, --hf and --init, not {' and '.join(modes)}.")
    if s.history:
        if not os.path.exists(os.path.join(s.history, "metrics.jsonl")):
            raise ValueError(f"{s.history}/metrics.jsonl does not exist; give the out_dir of a training run.")
        path = (s.save or os.path.join(s.history, "history")) + ".png"
        plot_history(s.history, path)
        print(f"wrote {path}")
        return
    if s.compare:
        entries, stem = [e.strip() for e in s.compare.split(",") if e.strip()], os.path.join(s.out_dir, "compare")
    elif s.init or s.hf:  # no run folder of their own: the files go into out_dir
        entries = ["init" if s.init else "hf:" + s.hf]
        stem = os.path.join(s.out_dir, "condensation_" + ("init" if s.init else os.path.basename(s.hf.rstrip("/"))))
    else:
        entries = [s.ckpt or os.path.join(s.out_dir, "ckpt.pt")]
        stem = os.path.join(entries[0] if os.path.isdir(entries[0]) else os.path.dirname(entries[0]), "condensation")
    # mps only when asked for: not every torch version runs linalg.eigvalsh there
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = [measure_entry(e, s, device) for e in entries]
    stem = s.save or stem
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump([asdict(r) for r in results] if s.compare else asdict(results[0]), f, indent=1)
    plot_signatures(results, stem + ".png")
    for r in results:
        print_table(r)
    if s.compare:
        print(f"{'model':20s} {'spearman':>9s} {'kendall':>8s} {'cos first':>10s} {'cos last':>9s}")
        for r in results:
            print(f"{r.name:20s} {r.spearman:+9.3f} {r.kendall:+8.3f} {r.mean_cos[0]:+10.4f} {r.mean_cos[-1]:+9.4f}")
    print(f"wrote {stem}.json and {stem}.png")


def main(args):
    try:
        command(args)
    except ValueError as e:  # ConfigError too: a mistake the user can fix, said in one sentence
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
