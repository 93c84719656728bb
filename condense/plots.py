"""Figures of measure.py: the condensation signature of one or several models, and condensation over
training."""

import os

import numpy as np


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_signatures(results, path):
    """One signature heatmap per model: x = layer fraction l / n_layer, y = cosine, colour = density, white
    dots = mean_cos. Several models get the paper's figure 2 layout: a last panel of Spearman and Kendall.
    Every heatmap has the same colour scale, so that brightness compares across panels, and each title names
    its model and its depth. Returns the figure."""
    from matplotlib.colors import PowerNorm
    plt = pyplot()
    panels = len(results) + (len(results) > 1)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    norm = PowerNorm(0.5, vmin=0, vmax=max(float(np.max(r.hist)) for r in results))  # one scale for all
    for ax, r in zip(axes[0], results):
        hist = np.array(r.hist)  # (L+1, bins)
        L = len(hist) - 1
        x_edges = (np.arange(L + 2) - 0.5) / L  # one column centred on each l / L
        mesh = ax.pcolormesh(x_edges, np.linspace(-1, 1, hist.shape[1] + 1), hist.T, cmap="magma", norm=norm)
        ax.plot(np.arange(L + 1) / L, r.mean_cos, "o-", color="white", ms=3, lw=1, label="mean cosine")
        ax.legend(loc="lower right", fontsize=8, facecolor="gray", labelcolor="white", framealpha=0.6)
        ax.set(xlabel="layer fraction l / n_layer", ylabel="cosine similarity", ylim=(-1, 1),
               title=f"{r.name}, {L} layers (spearman {r.spearman:+.2f})")
    fig.colorbar(mesh, ax=axes[0][len(results) - 1],
                 label="density (square-root scale" + (", every panel)" if len(results) > 1 else ")"))
    if len(results) > 1:
        ax = axes[0][-1]
        ax.plot([r.spearman for r in results], "o-", label="Spearman")
        ax.plot([r.kendall for r in results], "s--", label="Kendall tau-b")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xticks(range(len(results)), [r.name for r in results], rotation=30, ha="right")
        ax.set(xlim=(-0.5, len(results) - 0.5), ylim=(-1.05, 1.05),
               ylabel="rank correlation of mean cosine with depth", title="condensation trend")
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def plot_history(out_dir, path):
    """Loss curves, mean cosine per hidden-state entry, and Spearman against iteration, from metrics.jsonl."""
    from condense.train_utils import read_metrics  # a last line cut short by a crash is dropped, with a note
    records = read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r and "mean_cos" in r]
    if not evals:
        raise ValueError(f"{out_dir}/metrics.jsonl has no evaluation with mean_cos; "
                         "train with track_sequences > 0.")
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    it = [r["iter"] for r in evals]
    # "loss" includes the dispersion term; "ce" is comparable to eval
    ce = [r.get("ce", r["loss"]) for r in steps]
    ax1.plot([r["iter"] for r in steps], ce, lw=0.7, alpha=0.6, label="train (steps)")
    ax1.plot(it, [r["train_loss"] for r in evals], "o-", label="train (eval)")
    ax1.plot(it, [r["val_loss"] for r in evals], "s-", label="val")
    ax1.set(xlabel="iteration", ylabel="cross-entropy loss", title="loss")
    ax1.legend()
    cos = np.array([r["mean_cos"] for r in evals])  # (evaluations, L+1)
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, cos.shape[1]))
    for l in range(cos.shape[1]):
        ax2.plot(it, cos[:, l], color=colours[l], label=f"entry {l}")
    ax2.set(xlabel="iteration", ylabel="mean cosine similarity",
            title="condensation per layer (0 = embedding)")
    ax2.legend(fontsize=7, ncol=2)
    ax3.plot(it, [r.get("spearman", float("nan")) for r in evals], "o-")
    ax3.axhline(0, color="gray", lw=0.5)
    ax3.set(xlabel="iteration", ylabel="Spearman: mean cosine vs depth", ylim=(-1.05, 1.05), title="trend")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_trend(rows, late_cos, path):
    """The paper's trend figure: Spearman (left) and late-layer mean cosine (right) against parameter count,
    log scale, one line per family. rows: dicts with family, params and result (a Result), smallest first."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for family in dict.fromkeys(r["family"] for r in rows):  # in the survey file's order
        mine = sorted((r for r in rows if r["family"] == family), key=lambda r: r["params"])
        params = [r["params"] for r in mine]
        ax1.plot(params, [r["result"].spearman for r in mine], "o-", label=family)
        ax2.plot(params, [late_cos(r["result"]) for r in mine], "o-", label=family)
    ax1.axhline(0, color="gray", lw=0.5)
    ax1.set(xscale="log", xlabel="parameters", ylabel="Spearman: mean cosine vs depth", ylim=(-1.05, 1.05),
            title="condensation trend (+1: cosine rises with every layer)")
    ax2.set(xscale="log", xlabel="parameters", ylabel="mean cosine, late half of the layers",
            title="how narrow the late layers' cone is")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_pairs(rows, late_cos, path):
    """Pairs side by side: for each pair (a base model and its distilled version, say), one bar per side of
    Spearman (left) and late-layer mean cosine (right). rows: dicts with family (the pair), role and result,
    in the survey file's order; a side that could not be measured is left empty."""
    plt = pyplot()
    pairs = list(dict.fromkeys(r["family"] for r in rows))
    roles = list(dict.fromkeys(r["role"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, value, label in ((axes[0], lambda res: res.spearman, "Spearman: mean cosine vs depth"),
                             (axes[1], late_cos, "mean cosine, late half of the layers")):
        for k, role in enumerate(roles):
            mine = {r["family"]: value(r["result"]) for r in rows if r["role"] == role}
            x = [i + (k - (len(roles) - 1) / 2) * 0.38 for i, p in enumerate(pairs) if p in mine]
            ax.bar(x, [mine[p] for p in pairs if p in mine], width=0.36, label=role)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xticks(range(len(pairs)), pairs, rotation=20, ha="right")
        ax.set(ylabel=label)
    axes[0].set(ylim=(-1.05, 1.05), title="condensation trend, pair by pair")
    axes[1].set(title="how narrow the late layers' cone is")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
