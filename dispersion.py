"""
Dispersion losses: push the tokens of one sequence apart so hidden states do not condense into a cone.

Definitions: docs/condensation.md, section 3 (the loss family and the choice of layers). train.py uses them as

    loss = cross_entropy + dispersion_weight * mean over the chosen layers l of dispersion_loss(hidden[l])

Each variant below is its formula in plain torch ops, built from the pairwise building blocks; autograd
supplies the gradient. That is what runs for a loss you add. The six built-in variants also have a speed path,
condense/dispersion_fused.py: the same values and gradients in fewer, larger kernels (tests/test_dispersion.py
holds it to the formulas here). dispersion_loss takes it only while it still equals the formula as written
here (uses_speed_path): edit a built-in, or a building block it uses, and the edit is what trains. You never
need to read the speed path to use or extend the losses.

Adding a loss: write `def my_loss(z, *, tau, **_):` mapping z (B, T, C), fp32 (fp64 in the gradient check), to
one value per sequence, shape (B,), and add `"my_loss": my_loss,` to VARIANTS. Settings a variant does not use
arrive in `**_`. `python -m pytest tests/test_dispersion.py -k my_loss` then holds it to the loss contract
(finite on condensed tokens, bounded below, lower for spread tokens than for condensed ones, ...) without a
test of your own, and `python train.py config/tiny_disp.py --dispersion_variant=my_loss` trains with it
(docs/lab.md, step 4).

On a GPU, train.py stacks the L chosen layers into one batch of L*B sequences: the mean over that batch is the
mean over layers of the per-layer means, in one call. On a CPU it calls the loss once per layer, which is
faster there (the smaller matrices stay in cache; scripts/bench.py measures both).
"""

import math

import torch
import torch.nn.functional as F

from condense import dispersion_fused as fused
from settings import RULES

EPS = 1e-6  # floor on norms: u_i = z_i / max(||z_i||, EPS); keeps zero vectors finite in value and gradient


# -----------------------------------------------------------------------------
# pairwise building blocks, (B, T, T) over the tokens of each sequence: the parts the variants are made of


def cosines(z):
    """c_ij = u_i . u_j with u_i = z_i / max(||z_i||, EPS)."""
    u = F.normalize(z, dim=-1, eps=EPS)  # (B, T, C)
    return u @ u.transpose(1, 2)  # (B, T, T)


def angles(z, clamp):
    """a_ij = arccos(clamp(c_ij, -1 + delta, 1 - delta)) / pi in [0, 1], delta = clamp.
    Straight-through clamp: the forward value uses the clamped cosine, the backward pass treats the clamp as
    the identity, so a pair beyond the band gets the finite slope at the band's edge.
    delta = 0 is floored at 1e-6 so the arccos slope at +-1 stays finite."""
    edge = 1 - max(clamp, 1e-6)
    c = cosines(z)  # (B, T, T)
    c = c + (c.clamp(-edge, edge) - c).detach()
    return torch.arccos(c) / math.pi


def squared_distances(z):
    """d_ij = ||z_i - z_j||^2 = |z_i|^2 + |z_j|^2 - 2 z_i . z_j, after subtracting the sequence mean
    (distances do not change; it avoids cancellation when all tokens share a large offset). The diagonal is
    set to its exact 0: computed, it is a difference of large numbers, and its rounding error grows with
    ||z||^2."""
    T = z.size(1)
    z = z - z.mean(dim=1, keepdim=True)  # (B, T, C)
    sq = z.pow(2).sum(-1)  # (B, T)
    d = torch.baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), z, z.transpose(1, 2), alpha=-2)  # (B, T, T)
    return d.masked_fill(~off_diagonal(T, z.device), 0.0).clamp_min(0)  # rounding can leave tiny negatives


def off_diagonal(T, device):
    return ~torch.eye(T, dtype=torch.bool, device=device)  # (T, T), True for i != j


def log_mean_exp(x, diagonal=False):
    """log mean_{i!=j} exp(x_ij) over the T(T-1) off-diagonal entries, or with diagonal=True over all T^2
    entries: logsumexp minus the log of the count, which never overflows."""
    T = x.size(-1)
    if diagonal:
        return torch.logsumexp(x.flatten(1), dim=1) - math.log(T * T)  # (B,)
    x = x.masked_fill(~off_diagonal(T, x.device), float("-inf"))  # (B, T, T)
    return torch.logsumexp(x.flatten(1), dim=1) - math.log(T * (T - 1))  # (B,)


def mean_pairs(x):
    """mean_{i!=j} x_ij over the T(T-1) off-diagonal entries."""
    T = x.size(-1)
    return x.masked_fill(~off_diagonal(T, x.device), 0.0).sum((1, 2)) / (T * (T - 1))  # (B,)


def entropy_rows(x):
    """H_i = -sum_{j!=i} p_ij log p_ij with p_i = softmax_{j!=i}(x_i): the entropy of each row, (B, T) in
    nats."""
    keep = off_diagonal(x.size(-1), x.device)  # (T, T)
    logp = F.log_softmax(x.masked_fill(~keep, float("-inf")), dim=-1)  # (B, T, T)
    return -(logp.exp() * logp.masked_fill(~keep, 0.0)).sum(-1)  # masking avoids 0 * -inf on i == j


# -----------------------------------------------------------------------------
# the variants (docs/condensation.md section 3): z (B, T, C), fp32 or fp64 -> the loss of each sequence (B,)


def angular(z, *, tau, clamp, **_):
    """Angular spread: log mean_{i!=j} exp(-a_ij / tau). Orthogonal tokens give -0.5 (tau = 1), condensed ones
    -arccos(1 - clamp) / pi. The authors' code divides by ||z_i|| + 0.01 where we floor the norm at EPS, a
    constant that matters only for tokens whose norm is not large against 0.01; we keep the floor."""
    return log_mean_exp(angles(z, clamp) / -tau)


def cosine(z, *, tau, **_):
    """InfoNCE on cosine (Wang & He 2025): log mean_{i!=j} exp(c_ij / tau)."""
    return log_mean_exp(cosines(z) / tau)


def l2_repel(z, *, tau, norm_weight, **_):
    """InfoNCE-L2: log mean_{i,j} exp(-||z_i - z_j||^2 / tau) over all T^2 pairs, the diagonal included, plus
    norm_weight * mean(z^2) over tokens and channels. The T diagonal terms are exp(0) = 1, so the mean is at
    least 1/T and the loss at least -log T: it saturates once tokens are a few sqrt(tau) apart. Without them
    the pair term would fall like -||z||^2 without limit and reward blowing up the hidden states."""
    return log_mean_exp(squared_distances(z) / -tau, diagonal=True) + norm_weight * z.pow(2).mean((1, 2))


def orthogonal(z, *, margin, clamp, **_):
    """Hinge: mean_{i!=j} max(0, margin - a_ij)^2; margin 0.5 = 90 degrees."""
    return mean_pairs(F.relu(margin - angles(z, clamp)).pow(2))


def decorrelation(z, **_):
    """mean_{i!=j} r_ij^2, r_ij = Pearson correlation of the feature vectors z_i and z_j (over channels),
    i.e. the cosine of the token vectors after each is centred over its channels; EPS floors the std."""
    return mean_pairs(cosines(z - z.mean(dim=-1, keepdim=True)).pow(2))


def entropy(z, *, tau, **_):
    """-mean_i H_i, H_i = -sum_{j!=i} p_ij log p_ij (nats), p_i = softmax_{j!=i}(-||z_i - z_j||^2 / tau).
    As published it does not disperse (BREAKS below): with a fixed bandwidth, equal distances maximise each
    token's neighbour entropy, and identical tokens have equal distances. The authors' code takes log2 of
    p + 0.01, a constant factor and a small constant inside the log; we keep nats and no offset."""
    return -entropy_rows(squared_distances(z) / -tau).mean(-1)


VARIANTS = {  # the registry: a new loss is one function above and one line here
    "angular": angular,
    "cosine": cosine,
    "l2_repel": l2_repel,
    "orthogonal": orthogonal,
    "decorrelation": decorrelation,
    "entropy": entropy,
}

# Invariances beyond permuting the tokens (which every loss must have), declared so the tests check them
# rather than assume them; a variant not listed is held to none. The transforms are defined in
# tests/test_dispersion.py: rotation (z @ Q, Q orthogonal), token_scale (each token times its own positive
# factor), translation (one vector added to every token), channel_shift (one number added to all channels of a
# token), channel_permutation.
INVARIANT_TO = {
    "angular": ("rotation", "token_scale"),
    "cosine": ("rotation", "token_scale"),
    "l2_repel": ("rotation",),
    "orthogonal": ("rotation", "token_scale"),
    "decorrelation": ("token_scale", "channel_shift", "channel_permutation"),
    "entropy": ("rotation", "translation"),
}

# Clauses of the loss contract (tests/test_dispersion.py) a variant is known to break, with the reason. The
# tests check that it really does break them, so a note here cannot outlive the flaw it describes.
BREAKS = {
    "entropy": {"spread_beats_condensed": "as published, nearly identical tokens score lower than spread "
                                          "ones (-2.71 against -0.31 for Gaussian tokens, (4, 16, 32), tau = "
                                          "1): with a fixed bandwidth, equal distances maximise the "
                                          "neighbour entropy"},
}

# name -> the speed path of the built-in formula of that name (condense/dispersion_fused.py). Used only while
# it still agrees with the formula in VARIANTS as written (uses_speed_path below): edit a formula and the edit
# is what trains.
FAST_PATHS = {
    "angular": fused.angular,
    "cosine": fused.cosine,
    "l2_repel": fused.l2_repel,
    "orthogonal": fused.orthogonal,
    "decorrelation": fused.decorrelation,
    "entropy": fused.entropy,
}


# -----------------------------------------------------------------------------


def check_settings(variant, **settings):
    """Raise ValueError naming the first meaningless argument of dispersion_loss (tau, clamp, margin,
    norm_weight, max_tokens), held to the range settings.RULES gives train.py's setting of the same name
    (dispersion_tau, ..., dispersion_tokens): one definition of what each may be, for a notebook's call
    too."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown dispersion variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    for name, value in settings.items():
        test, what = RULES["dispersion_tokens" if name == "max_tokens" else f"dispersion_{name}"]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and test(value)):
            raise ValueError(f"{name} must be {what}, got {value!r}")


AGREES = {}  # (variant, formula, settings) -> whether its speed path equals the formula; filled on first use


def uses_speed_path(variant, *, tau=1.0, clamp=0.1, margin=0.5, norm_weight=0.1):
    """True when variant has a speed path and it gives the value and gradient of the formula in VARIANTS as
    written now, at these settings. Checked once per variant and settings, in float64 on two small inputs:
    random tokens, and condensed ones whose cosines reach the clamp. A formula edited here, or a building
    block it uses, then fails the check and trains as written. Under torch.compile only the answer is read
    (train.py asks before compiling); unasked, the formula runs."""
    key = (variant, VARIANTS.get(variant), tau, clamp, margin, norm_weight)  # a replaced formula: asked anew
    if key not in AGREES and variant in FAST_PATHS and not torch.compiler.is_compiling():
        settings = dict(tau=tau, clamp=clamp, margin=margin, norm_weight=norm_weight)
        g = torch.Generator().manual_seed(0)
        spread = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
        condensed = 1 + 1e-3 * torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
        AGREES[key] = True
        for z in (spread, condensed):
            a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
            fast, formula = FAST_PATHS[variant](a, **settings), VARIANTS[variant](b, **settings)
            weights = torch.arange(1.0, 3.0, dtype=torch.float64)  # another upstream gradient per sequence
            (fast * weights).sum().backward()
            (formula * weights).sum().backward()
            AGREES[key] &= (formula.shape == fast.shape
                            and torch.allclose(fast, formula, rtol=1e-9, atol=1e-12)
                            and torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-9))
    return AGREES.get(key, False)


def per_sequence(z, variant, *, tau=1.0, clamp=0.1, margin=0.5, norm_weight=0.1):
    """The loss of each sequence of z (B, T, C), shape (B,): through the variant's speed path while it agrees
    with the formula (uses_speed_path), else the formula as VARIANTS holds it; in fp32 with autocast disabled,
    whatever the input dtype (fp64 stays fp64)."""
    settings = dict(tau=tau, clamp=clamp, margin=margin, norm_weight=norm_weight)
    loss = FAST_PATHS[variant] if uses_speed_path(variant, **settings) else VARIANTS[variant]
    z = z.to(torch.promote_types(z.dtype, torch.float32))  # (B, T, C)
    with torch.autocast(device_type=z.device.type, enabled=False):
        return loss(z, **settings)


def dispersion_loss(z, variant="angular", *, tau=1.0, clamp=0.1, margin=0.5, norm_weight=0.1,
                    max_tokens=256, generator=None):
    """Mean over the batch of the per-sequence dispersion loss of z (B, T, C); pairs never cross sequences.

    Subsampling: if 0 < max_tokens < T, one random set of max_tokens positions (torch.randperm,
    drawn from `generator`, else the global RNG) is kept, shared by every sequence of the batch: one draw and
    one gather per call. max_tokens=0, as the setting dispersion_tokens=0, keeps every token: the result is
    exact. Averaged over draws, the pair means (orthogonal, decorrelation) are unbiased, angular and cosine
    nearly so (log of a mean), while l2_repel and entropy depend on the number of neighbours m - 1 and shift
    with max_tokens. Under torch.compile(fullgraph=True) pass generator=None: the positions then come from the
    global RNG (the compiled draw differs from eager's unless torch._inductor.config.fallback_random is set).

    Precision: computed in fp32 with autocast disabled, whatever the input dtype (fp64 input stays fp64).
    Extra activation memory of a built-in variant, with m = max_tokens or T if smaller:
    4 * B * (a * m * C + k * m^2) bytes kept for backward, a copies of (B, m, C) and k pairwise (B, m, m)
    matrices: a = k = 1 (the unit or centred vectors and one gradient matrix), except l2_repel, a = 2 (its
    norm term keeps z); scripts/bench.py measures a and k. Bounded by max_tokens whatever T is.
    """
    check_settings(variant, tau=tau, clamp=clamp, margin=margin, norm_weight=norm_weight,
                   max_tokens=max_tokens)
    if z.dim() != 3:
        raise ValueError("dispersion_loss expects hidden states of shape (B, T, C), got shape "
                         f"{tuple(z.shape)}")
    if z.size(1) < 2:
        raise ValueError("dispersion_loss needs at least 2 tokens per sequence to form pairs, got T = "
                         f"{z.size(1)}")
    if generator is not None and torch.compiler.is_compiling():
        raise ValueError("a torch.Generator cannot be traced by torch.compile; pass generator=None (global "
                         "RNG)")

    T = z.size(1)
    if 0 < max_tokens < T:
        device = generator.device if generator is not None else z.device
        keep = torch.randperm(T, generator=generator, device=device)[:max_tokens].to(z.device)  # (m,)
        z = z[:, keep]  # (B, m, C)
    return per_sequence(z, variant, tau=tau, clamp=clamp, margin=margin, norm_weight=norm_weight).mean()


def select_layers(spec, n_layer):
    """Hidden-state entries 1..n_layer the loss reads (entry 0, the raw embedding, is never used):
    "all", "last", "early_half" (1..n_layer//2), "late_half" (n_layer//2+1..n_layer), or an explicit list
    given as a list/tuple of ints or as a string "1,3,5". Returns a sorted list of ints."""
    named = {
        "all": range(1, n_layer + 1),
        "last": range(n_layer, n_layer + 1),
        "early_half": range(1, n_layer // 2 + 1),
        "late_half": range(n_layer // 2 + 1, n_layer + 1),
    }
    valid = f"valid layers are 1..{n_layer}; or use one of {', '.join(named)}"
    if isinstance(spec, str) and spec in named:
        layers = list(named[spec])
    elif isinstance(spec, str):
        try:
            layers = [int(s) for s in spec.strip("[]() ").split(",") if s.strip()]
        except ValueError:
            msg = f"cannot read dispersion layers {spec!r}: give comma-separated ints like '1,3,5'; {valid}"
            raise ValueError(msg) from None
    elif (isinstance(spec, (list, tuple))
          and all(isinstance(s, int) and not isinstance(s, bool) for s in spec)):
        layers = list(spec)
    else:
        raise ValueError("dispersion layers must be a name, a list of ints or a string like '1,3,5', got "
                         f"{spec!r}")
    if not layers:
        raise ValueError(f"dispersion layers {spec!r} select no layer for n_layer = {n_layer}; {valid}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"dispersion layers {spec!r} repeat a layer; list each layer once")
    bad = [l for l in layers if not 1 <= l <= n_layer]
    if bad:
        raise ValueError(f"dispersion layers {bad} are out of range; {valid}")
    return sorted(layers)
