"""
Dispersion losses: push the tokens of one sequence apart so hidden states do not condense into a cone.

Specification: shared/reference/condensation-and-dispersion.md, section 3 (the losses and the choice of layers).
Used by train.py as

    loss = cross_entropy + dispersion_weight * mean over the chosen layers l of dispersion_loss(hidden[l])

On a GPU, train.py stacks the L chosen layers into one batch of L*B sequences,
dispersion_loss(torch.stack([hidden[l] for l in layers]).flatten(0, 1)): the mean over that batch is the mean over
layers of the per-layer means, and every layer goes through one call (one batched matmul per variant). On a CPU it
calls the loss once per layer, which is faster there (the smaller matrices stay in cache; bench.py measures both).

Adding a loss: write `def my_loss(z, *, tau, **_):` returning one value per sequence, shape (B,), from fp32
z of shape (B, T, C), and add `"my_loss": my_loss` to VARIANTS. Settings a variant does not use arrive in `**_`.
Plain torch ops are enough: autograd supplies the gradient. The built-in variants go faster with hand-written
gradients (CosinePairs, DistancePairs; bench.py measures them), but each names the plain formula it equals, built
from the building blocks below, and the tests hold them to it.
"""

import math

import torch
import torch.nn.functional as F

EPS = 1e-6  # floor on norms: u_i = z_i / max(||z_i||, EPS); keeps zero vectors finite in value and gradient
UNDERFLOW = 80.0  # exp terms below e^-80 (1.8e-35) of the largest are raised to it: they change no fp32 sum, and
# exp of an argument that underflows takes a slow path (6-12x slower on a CPU); l2_repel meets it on most pairs


# -----------------------------------------------------------------------------
# pairwise building blocks, all (B, T, T) over the tokens of each sequence: the plain forms of the variants (the
# tests hold the hand-written gradients below to autograd through them) and the parts to build a new loss from

def cosines(z):
    """c_ij = u_i . u_j with u_i = z_i / max(||z_i||, eps)."""
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
    (distances do not change; it avoids cancellation when all tokens share a large offset)."""
    z = z - z.mean(dim=1, keepdim=True)  # (B, T, C)
    sq = z.pow(2).sum(-1)  # (B, T)
    d = torch.baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), z, z.transpose(1, 2), alpha=-2)  # (B, T, T)
    return d.clamp_min(0)  # rounding can leave tiny negatives


def off_diagonal(T, device):
    return ~torch.eye(T, dtype=torch.bool, device=device)  # (T, T), True for i != j


def exp_pairs_(x):
    """In place on x (B, T, T): e_ij = exp(x_ij - x_max) for i != j and 0 on the diagonal, with x_max (B,) the
    largest off-diagonal entry (so no term overflows) and arguments below -UNDERFLOW raised to it.
    Returns e, its sum per sequence (B,), and log mean_{i!=j} exp(x_ij) (B,)."""
    T = x.size(-1)
    x.diagonal(dim1=1, dim2=2).fill_(float("-inf"))  # i == j is not a pair
    x_max = x.flatten(1).amax(1)  # (B,)
    e = x.sub_(x_max[:, None, None]).clamp_min_(-UNDERFLOW).exp_()  # (B, T, T)
    e.diagonal(dim1=1, dim2=2).zero_()
    total = e.sum((1, 2))
    return e, total, x_max + total.log() - math.log(T * (T - 1))


def log_mean_exp(x):
    """log mean_{i!=j} exp(x_ij) = logsumexp over the T(T-1) off-diagonal entries - log(T(T-1))."""
    T = x.size(-1)
    x = x.masked_fill(~off_diagonal(T, x.device), float("-inf"))  # (B, T, T)
    return torch.logsumexp(x.flatten(1), dim=1) - math.log(T * (T - 1))  # (B,)


def entropy_rows(x):
    """H_i = -sum_{j!=i} p_ij log p_ij with p_i = softmax_{j!=i}(x_i): the entropy of each row, (B, T) in nats."""
    keep = off_diagonal(x.size(-1), x.device)  # (T, T)
    logp = F.log_softmax(x.masked_fill(~keep, float("-inf")), dim=-1)  # (B, T, T)
    return -(logp.exp() * logp.masked_fill(~keep, 0.0)).sum(-1)  # masking avoids 0 * -inf on i == j


def mean_pairs(x):
    """mean_{i!=j} x_ij over the T(T-1) off-diagonal entries."""
    T = x.size(-1)
    return x.masked_fill(~off_diagonal(T, x.device), 0.0).sum((1, 2)) / (T * (T - 1))  # (B,)


# -----------------------------------------------------------------------------
# the variants (reference section 3 table); each maps z (B, T, C), fp32 or fp64, to the per-sequence loss (B,)

def angular(z, *, tau, clamp, **_):
    """angular spread: log mean_{i!=j} exp(-a_ij / tau). Orthogonal tokens give -0.5 (tau = 1).
    Value and gradient of log_mean_exp(angles(z, clamp) / -tau), computed by CosinePairs."""
    return cosine_pairs(z, "angular", tau=tau, clamp=clamp)


def cosine(z, *, tau, **_):
    """InfoNCE on cosine (Wang & He 2025): log mean_{i!=j} exp(c_ij / tau).
    Value and gradient of log_mean_exp(cosines(z) / tau), computed by CosinePairs."""
    return cosine_pairs(z, "cosine", tau=tau)


def l2_repel(z, *, tau, norm_weight, **_):
    """log mean_{i!=j} exp(-||z_i - z_j||^2 / tau) + norm_weight * mean(z^2) over tokens and channels.
    Value and gradient of log_mean_exp(squared_distances(z) / -tau) + ..., computed by DistancePairs."""
    return distance_pairs(z, "l2_repel", tau=tau) + norm_weight * z.pow(2).mean((1, 2))


def orthogonal(z, *, margin, clamp, **_):
    """hinge: mean_{i!=j} max(0, margin - a_ij)^2; margin 0.5 = 90 degrees.
    Value and gradient of mean_pairs(F.relu(margin - angles(z, clamp)).pow(2)), computed by CosinePairs."""
    return cosine_pairs(z, "orthogonal", clamp=clamp, margin=margin)


def decorrelation(z, **_):
    """mean_{i!=j} r_ij^2, r_ij = Pearson correlation of the feature vectors z_i and z_j (over channels),
    i.e. the cosine of the token vectors after each is centred over its channels; eps floors the std.
    Value and gradient of mean_pairs(cosines(z - z.mean(dim=-1, keepdim=True)).pow(2)), computed by CosinePairs."""
    return cosine_pairs(z - z.mean(dim=-1, keepdim=True), "decorrelation")


def entropy(z, *, tau, **_):
    """-mean_i H_i, H_i = -sum_{j!=i} p_ij log p_ij (nats), p_i = softmax_{j!=i}(-||z_i - z_j||^2 / tau).
    Value and gradient of -entropy_rows(squared_distances(z) / -tau).mean(-1), computed by DistancePairs."""
    return distance_pairs(z, "entropy", tau=tau)


# -----------------------------------------------------------------------------
# the variants' computation: forward and a hand-written backward, in a few large kernels instead of many small

def first_derivative_only():
    """The hand-written backwards are not differentiable themselves; autograd would take their derivative as 0."""
    if torch.is_grad_enabled():  # inside a backward only under create_graph=True
        raise RuntimeError("the dispersion losses have first derivatives only: backward(create_graph=True), as in "
                           "gradient penalties or double backward, is not supported")


class CosinePairs(torch.autograd.Function):
    """The four variants that are functions of the pairwise cosines c_ij of z (B, T, C), per sequence:
        angular        log mean_{i!=j} exp(-a_ij / tau),  a_ij = arccos(c*_ij) / pi, c* the clamped cosine
        cosine         log mean_{i!=j} exp(c_ij / tau)
        orthogonal     mean_{i!=j} relu(margin - a_ij)^2
        decorrelation  mean_{i!=j} c_ij^2                 (of z centred over its channels, done by the caller)
    Written out (angles, cosines, log_mean_exp, mean_pairs), autograd runs ~40 small elementwise kernels per
    call; here the forward computes the loss and W_ij = d loss / d c_ij in ~12, and one backward serves all four
    in ~5, keeping one (B, T, T) matrix instead of three: the term is about 2x faster on a CPU (bench.py). The tests
    check value and gradient against autograd through the written-out formulas, and against a float64 loop.

    Backward, per sequence, from W (symmetric, 0 on the diagonal):
        d loss / d u_i = 2 sum_j W_ij u_j                     c_ij = u_i . u_j counts for i and for j
        d loss / d z_i = (g_i - u_i (u_i . g_i)) / ||z_i||     g_i = d loss / d u_i; g_i / eps where ||z_i|| < eps
    W for log mean exp(x_ij): p_ij dx_ij/dc_ij, p the softmax over the pairs; for a mean: dx_ij/dc_ij / (T(T-1)).
    da_ij/dc_ij = -1 / (pi sqrt(1 - c*^2)): the straight-through clamp uses the slope at c*, which is the band's
    edge for pairs beyond it.
    """

    @staticmethod
    def forward(ctx, z, kind, tau, clamp, margin):
        T = z.size(1)
        norm2 = torch.linalg.vecdot(z, z).unsqueeze(-1)  # (B, T, 1)
        tiny = norm2 < EPS * EPS  # tokens whose norm is floored at EPS
        inv_norm = norm2.clamp_min(EPS * EPS).rsqrt()  # (B, T, 1)
        u = z * inv_norm  # (B, T, C) unit vectors
        c = torch.bmm(u, u.transpose(1, 2))  # (B, T, T) cosines
        if kind in ("angular", "orthogonal"):
            edge = 1 - max(clamp, 1e-6)  # as in angles(): delta = 0 is floored so the slope at +-1 stays finite
            c = c.clamp_(-edge, edge)
            a = torch.arccos(c).mul_(1 / math.pi)  # (B, T, T) angles in [0, 1]
            da_dc = c.mul_(c).neg_().add_(1).rsqrt_().mul_(-1 / math.pi)  # -1 / (pi sqrt(1 - c*^2)), in place of c
        if kind == "angular":
            e, total, loss = exp_pairs_(a.mul_(-1 / tau))  # exp(-a_ij / tau - max), 0 on the diagonal
            W = e.mul_(da_dc).mul_((-1 / tau) / total[:, None, None])
        elif kind == "cosine":
            e, total, loss = exp_pairs_(c.mul_(1 / tau))
            W = e.mul_((1 / tau) / total[:, None, None])
        else:  # a mean over the pairs of h_ij^2: h = relu(margin - a) (orthogonal) or h = c (decorrelation)
            h = a.neg_().add_(margin).clamp_min_(0) if kind == "orthogonal" else c
            h.diagonal(dim1=1, dim2=2).zero_()  # i == j is not a pair
            loss = h.pow(2).sum((1, 2)) / (T * (T - 1))
            W = h.mul_(2 / (T * (T - 1)))  # d(h^2)/dh, over the pair count
            if kind == "orthogonal":
                W = W.mul_(da_dc).neg_()  # dh/dc = -da/dc where the hinge is active, and 0 where h = 0
        ctx.save_for_backward(u, inv_norm, tiny, W)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        first_derivative_only()
        u, inv_norm, tiny, W = ctx.saved_tensors
        with torch.autocast(device_type=u.device.type, enabled=False):  # fp32 like the forward
            d_u = torch.bmm(W * (2 * grad_loss)[:, None, None], u)  # (B, T, C); 2x: c_ij and c_ji
            radial = torch.linalg.vecdot(u, d_u).unsqueeze(-1).masked_fill_(tiny, 0)  # (B, T, 1)
            d_z = torch.addcmul(d_u, u, radial, value=-1).mul_(inv_norm)  # (B, T, C)
        return d_z, None, None, None, None


class DistancePairs(torch.autograd.Function):
    """The two variants built on squared distances d_ij = ||z_i - z_j||^2 of z (B, T, C), per sequence, x = -d / tau:
        l2_repel   log mean_{i!=j} exp(x_ij)                          (the caller adds its norm term)
        entropy    -mean_i H_i, H_i = -sum_{j!=i} p_ij log p_ij,  p_i = softmax_{j!=i}(x_i)
    As CosinePairs: the forward computes the loss and W_ij = d loss / d d_ij, and the backward, with S = W + W^T,
        d loss / d z_i = 2 sum_j S_ij (z_i - z_j) = 2 (rowsum(S)_i z_i - (S z)_i).
    W for l2_repel: -p_ij / tau, p the softmax over all pairs. For entropy, d H_i / d x_ij = -p_ij (log p_ij + H_i),
    so W_ij = -p_ij (log p_ij + H_i) / (T tau). z is centred over the sequence first (as in squared_distances);
    the centring passes the gradient through unchanged, as the rows of a symmetric S sum to what its columns do.
    """

    @staticmethod
    def forward(ctx, z, kind, tau):
        T = z.size(1)
        z = z - z.mean(dim=1, keepdim=True)  # (B, T, C)
        sq = torch.linalg.vecdot(z, z)  # (B, T)
        d = torch.baddbmm(sq[:, :, None] + sq[:, None, :], z, z.transpose(1, 2), alpha=-2)  # (B, T, T)
        x = d.clamp_min_(0).mul_(-1 / tau)  # rounding can leave tiny negative distances
        if kind == "l2_repel":
            e, total, loss = exp_pairs_(x)
            S = e.mul_((-2 / tau) / total[:, None, None])  # W + W^T = 2W: W is symmetric
        else:  # entropy: a softmax over j != i in each row i
            x.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
            x = x.sub_(x.amax(-1, keepdim=True)).clamp_min_(-UNDERFLOW)  # (B, T, T); the floor as in exp_pairs_
            p = x.exp()
            p.diagonal(dim1=1, dim2=2).zero_()
            total = p.sum(-1, keepdim=True)  # (B, T, 1)
            p /= total
            logp = x.sub_(total.log())  # (B, T, T); finite on the diagonal, where p is 0
            H = -torch.linalg.vecdot(p, logp)  # (B, T)
            loss = -H.mean(-1)
            W = logp.add_(H[:, :, None]).mul_(p).mul_(-1 / (T * tau))  # (B, T, T)
            S = W + W.transpose(1, 2)
        ctx.save_for_backward(z, S)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        first_derivative_only()
        z, S = ctx.saved_tensors
        with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 like the forward
            S = S * (2 * grad_loss)[:, None, None]  # (B, T, T)
            d_z = torch.baddbmm(S.sum(-1, keepdim=True) * z, S, z, alpha=-1)  # (B, T, C)
        return d_z, None, None


def cosine_pairs(z, kind, *, tau=1.0, clamp=0.0, margin=0.0):
    return CosinePairs.apply(z, kind, tau, clamp, margin)  # autograd.Function.apply takes no keywords


def distance_pairs(z, kind, *, tau=1.0):
    return DistancePairs.apply(z, kind, tau)


VARIANTS = {
    "angular": angular,
    "cosine": cosine,
    "l2_repel": l2_repel,
    "orthogonal": orthogonal,
    "decorrelation": decorrelation,
    "entropy": entropy,
}


# -----------------------------------------------------------------------------

def check_settings(variant, *, tau, clamp, margin, norm_weight, max_tokens):
    """Raise ValueError naming the problem if a setting is meaningless; train.py calls it before training."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown dispersion variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not 0 <= clamp < 1:
        raise ValueError(f"clamp must be in [0, 1), got {clamp}")
    if margin < 0 or norm_weight < 0:
        raise ValueError(f"margin and norm_weight must be >= 0, got margin={margin}, norm_weight={norm_weight}")
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be None or >= 2, got {max_tokens}")


def dispersion_loss(z, variant="angular", *, tau=1.0, clamp=0.1, margin=0.5, norm_weight=0.1,
                    max_tokens=256, generator=None):
    """Mean over the batch of the per-sequence dispersion loss of z (B, T, C); pairs never cross sequences.

    Subsampling: if max_tokens is not None and < T, one random set of max_tokens positions (torch.randperm,
    drawn from `generator`, else the global RNG) is kept, shared by every sequence of the batch: one draw and
    one gather per call. max_tokens=None or >= T keeps every token and the result is exact. Averaged over draws,
    the pair means (orthogonal, decorrelation) are unbiased, angular and cosine nearly so (log of a mean), while
    l2_repel and entropy depend on the number of neighbours m - 1 and shift with max_tokens.
    Under torch.compile(fullgraph=True) pass generator=None: the positions then come from the global RNG
    (the compiled draw differs from eager's unless torch._inductor.config.fallback_random is set).

    Precision: computed in fp32 with autocast disabled, whatever the input dtype (fp64 input stays fp64).
    Extra activation memory, with m = min(T, max_tokens): 4 * B * (a * m * C + k * m^2) bytes kept for backward,
    a copies of (B, m, C) and k pairwise (B, m, m) matrices: a = k = 1 (the unit or centred vectors and one
    gradient matrix), except l2_repel, a = 2 (its norm term keeps z); bench.py measures a and k.
    Bounded by max_tokens whatever T is.
    """
    check_settings(variant, tau=tau, clamp=clamp, margin=margin, norm_weight=norm_weight, max_tokens=max_tokens)
    if z.dim() != 3:
        raise ValueError(f"dispersion_loss expects hidden states of shape (B, T, C), got shape {tuple(z.shape)}")
    if z.size(1) < 2:
        raise ValueError(f"dispersion_loss needs at least 2 tokens per sequence to form pairs, got T = {z.size(1)}")
    if generator is not None and torch.compiler.is_compiling():
        raise ValueError("a torch.Generator cannot be traced by torch.compile; pass generator=None (global RNG)")

    T = z.size(1)
    if max_tokens is not None and max_tokens < T:
        device = generator.device if generator is not None else z.device
        keep = torch.randperm(T, generator=generator, device=device)[:max_tokens].to(z.device)  # (m,)
        z = z[:, keep]  # (B, m, C)
    z = z.to(torch.promote_types(z.dtype, torch.float32))  # (B, m, C) fp32, or fp64 if given fp64
    with torch.autocast(device_type=z.device.type, enabled=False):
        return VARIANTS[variant](z, tau=tau, clamp=clamp, margin=margin, norm_weight=norm_weight).mean()


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
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, int) and not isinstance(s, bool) for s in spec):
        layers = list(spec)
    else:
        raise ValueError(f"dispersion layers must be a name, a list of ints or a string like '1,3,5', got {spec!r}")
    if not layers:
        raise ValueError(f"dispersion layers {spec!r} select no layer for n_layer = {n_layer}; {valid}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"dispersion layers {spec!r} repeat a layer; list each layer once")
    bad = [l for l in layers if not 1 <= l <= n_layer]
    if bad:
        raise ValueError(f"dispersion layers {bad} are out of range; {valid}")
    return sorted(layers)
