"""
Optional speed path, equal to the formulas in dispersion.py, tested against them (tests/test_dispersion.py).

Nothing here is needed to understand, use or extend the losses: read dispersion.py. Written out there, a
built-in loss is some 40 small elementwise kernels per call through autograd, and on a CPU launching them is
most of the term's time. Here each variant computes its value and W = d loss / d (its pair matrix) in about a
dozen kernels, in place on one (B, T, T) buffer where that saves allocating another, and one shared backward
per family turns W into d loss / d z in about five: the term is about 2x faster on a CPU and keeps one pair
matrix for backward instead of three (scripts/bench.py measures both). dispersion.dispersion_loss picks these
for the built-in variants.

Each function takes what its formula takes, z (B, T, C) in fp32 or fp64, and returns the same (B,). It
computes on z.detach() and attaches the gradient with CosineGrad or DistanceGrad, whose backward is:

  cosine family (angular, cosine, orthogonal, decorrelation), c_ij = u_i . u_j, u_i = z_i / max(||z_i||, EPS):
      g_i = d loss / d u_i = 2 sum_j W_ij u_j                c_ij = u_i . u_j counts for i and for j
      d loss / d z_i = (g_i - u_i (u_i . g_i)) / ||z_i||     g_i / EPS where ||z_i|| < EPS
                                                             (the floor is constant)
  distance family (l2_repel, entropy), d_ij = ||z_i - z_j||^2, with S = W + W^T:
      d loss / d z_i = 2 sum_j S_ij (z_i - z_j) = 2 (rowsum(S)_i z_i - (S z)_i)
      z is centred over the sequence first (as in dispersion.squared_distances); the centring passes this
      gradient through unchanged, since the rows of a symmetric S sum to what its columns do.

W for a log mean exp over pairs of x_ij: p_ij dx_ij/dc_ij, p the softmax over the pairs; for a mean over pairs
of h_ij: dh_ij/dc_ij / (T(T-1)). da_ij/dc_ij = -1 / (pi sqrt(1 - c*^2)) at the clamped cosine c*: the
straight-through clamp of dispersion.angles gives pairs beyond the band the slope at its edge.
"""

import math

import torch

EPS = 1e-6  # the norm floor of dispersion.cosines (dispersion.EPS; a test holds the two equal)
# exp terms below e^-80 (1.8e-35) of the largest are raised to it: they change no fp32 sum, and exp of an
# argument that underflows takes a slow path (6-12x slower on a CPU); l2_repel meets it on most pairs
UNDERFLOW = 80.0


def first_derivative_only():
    """The backwards below are not differentiable themselves; autograd would take their derivative as 0."""
    if torch.is_grad_enabled():  # inside a backward only under create_graph=True
        raise RuntimeError("the dispersion losses have first derivatives only: backward(create_graph=True), "
                           "as in gradient penalties or double backward, is not supported")


class CosineGrad(torch.autograd.Function):
    """loss (B,), computed from the cosines of z, gets its gradient from W = d loss / d c (B, T, T), symmetric
    and 0 on the diagonal; u are the unit vectors (B, T, C), inv_norm = 1 / max(||z||, EPS) and
    tiny (B, T, 1)."""

    @staticmethod
    def forward(ctx, z, loss, u, inv_norm, tiny, W):
        ctx.save_for_backward(u, inv_norm, tiny, W)
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss):
        first_derivative_only()
        u, inv_norm, tiny, W = ctx.saved_tensors
        with torch.autocast(device_type=u.device.type, enabled=False):  # fp32 like the forward
            g = torch.bmm(W * (2 * grad_loss)[:, None, None], u)  # (B, T, C); 2x: c_ij and c_ji
            radial = torch.linalg.vecdot(u, g).unsqueeze(-1).masked_fill_(tiny, 0)  # (B, T, 1)
            d_z = torch.addcmul(g, u, radial, value=-1).mul_(inv_norm)  # (B, T, C)
        return d_z, None, None, None, None, None


class DistanceGrad(torch.autograd.Function):
    """loss (B,), computed from the squared distances of z, gets its gradient from S = W + W^T (B, T, T),
    W = d loss / d d_ij; zc is z centred over the sequence (B, T, C)."""

    @staticmethod
    def forward(ctx, z, loss, zc, S):
        ctx.save_for_backward(zc, S)
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss):
        first_derivative_only()
        zc, S = ctx.saved_tensors
        with torch.autocast(device_type=zc.device.type, enabled=False):  # fp32 like the forward
            S = S * (2 * grad_loss)[:, None, None]  # (B, T, T)
            d_z = torch.baddbmm(S.sum(-1, keepdim=True) * zc, S, zc, alpha=-1)  # (B, T, C)
        return d_z, None, None, None


# -----------------------------------------------------------------------------
# shared steps


def unit_cosines(z):
    """u = z / max(||z||, EPS) (B, T, C), inv_norm = 1 / max(||z||, EPS) and tiny = (||z|| < EPS) (B, T, 1),
    and the cosines c = u u^T (B, T, T)."""
    norm2 = torch.linalg.vecdot(z, z).unsqueeze(-1)  # (B, T, 1)
    inv_norm = norm2.clamp_min(EPS * EPS).rsqrt()  # (B, T, 1)
    u = z * inv_norm  # (B, T, C)
    return u, inv_norm, norm2 < EPS * EPS, torch.bmm(u, u.transpose(1, 2))


def angles_and_slope_(c, clamp):
    """a = arccos(c*) / pi and da/dc = -1 / (pi sqrt(1 - c*^2)) at c* = clamp(c, -1 + delta, 1 - delta), both
    (B, T, T); the slope is written into c's buffer."""
    edge = 1 - max(clamp, 1e-6)  # as dispersion.angles: delta = 0 is floored so the slope at +-1 stays finite
    c = c.clamp_(-edge, edge)
    a = torch.arccos(c).mul_(1 / math.pi)  # (B, T, T)
    return a, c.mul_(c).neg_().add_(1).rsqrt_().mul_(-1 / math.pi)


def exp_pairs_(x, diagonal=False):
    """In place on x (B, T, T): e_ij = exp(x_ij - x_max), with x_max (B,) the largest entry (so no term
    overflows) and arguments below -UNDERFLOW raised to it; over the pairs i != j (e is 0 on the diagonal), or
    over all T^2 entries with diagonal=True. Returns e, its sum per sequence (B,), and log mean exp(x) over
    those entries (B,)."""
    T = x.size(-1)
    if not diagonal:
        x.diagonal(dim1=1, dim2=2).fill_(float("-inf"))  # i == j is not a pair
    x_max = x.flatten(1).amax(1)  # (B,)
    e = x.sub_(x_max[:, None, None]).clamp_min_(-UNDERFLOW).exp_()  # (B, T, T)
    if not diagonal:
        e.diagonal(dim1=1, dim2=2).zero_()
    total = e.sum((1, 2))  # (B,)
    return e, total, x_max + total.log() - math.log(T * T if diagonal else T * (T - 1))


def centred_distances(z, tau):
    """zc = z centred over the sequence (B, T, C) and x = -||zc_i - zc_j||^2 / tau (B, T, T), its diagonal the
    exact 0 as in dispersion.squared_distances."""
    zc = z - z.mean(dim=1, keepdim=True)  # (B, T, C)
    sq = torch.linalg.vecdot(zc, zc)  # (B, T)
    d = torch.baddbmm(sq[:, :, None] + sq[:, None, :], zc, zc.transpose(1, 2), alpha=-2)  # (B, T, T)
    d.diagonal(dim1=1, dim2=2).zero_()
    return zc, d.clamp_min_(0).mul_(-1 / tau)  # rounding can leave tiny negative distances


# -----------------------------------------------------------------------------
# the variants, in the order and with the signatures of dispersion.VARIANTS


def angular(z, *, tau, clamp, **_):
    """log mean_{i!=j} exp(-a_ij / tau); W = p_ij (-1 / tau) da_ij/dc_ij."""
    u, inv_norm, tiny, c = unit_cosines(z.detach())
    a, da_dc = angles_and_slope_(c, clamp)
    e, total, loss = exp_pairs_(a.mul_(-1 / tau))  # exp(-a_ij / tau - max), in a's buffer
    W = e.mul_(da_dc).mul_((-1 / tau) / total[:, None, None])  # (B, T, T), in e's buffer
    return CosineGrad.apply(z, loss, u, inv_norm, tiny, W)


def cosine(z, *, tau, **_):
    """log mean_{i!=j} exp(c_ij / tau); W = p_ij / tau."""
    u, inv_norm, tiny, c = unit_cosines(z.detach())
    e, total, loss = exp_pairs_(c.mul_(1 / tau))
    W = e.mul_((1 / tau) / total[:, None, None])  # (B, T, T)
    return CosineGrad.apply(z, loss, u, inv_norm, tiny, W)


def l2_repel(z, *, tau, norm_weight, **_):
    """log mean_{i,j} exp(-d_ij / tau) over all T^2 pairs + norm_weight * mean(z^2); S = 2W = -2 p_ij / tau (W
    is symmetric; the diagonal terms, d_ii = 0, contribute S_ii (z_i - z_i) = 0). Autograd differentiates the
    norm term."""
    zc, x = centred_distances(z.detach(), tau)
    e, total, loss = exp_pairs_(x, diagonal=True)
    S = e.mul_((-2 / tau) / total[:, None, None])  # (B, T, T)
    return DistanceGrad.apply(z, loss, zc, S) + norm_weight * z.pow(2).mean((1, 2))


def orthogonal(z, *, margin, clamp, **_):
    """mean_{i!=j} h_ij^2, h = relu(margin - a); W = -2 h_ij da_ij/dc_ij / (T(T-1)), 0 where the hinge is
    off."""
    T = z.size(1)
    u, inv_norm, tiny, c = unit_cosines(z.detach())
    a, da_dc = angles_and_slope_(c, clamp)
    h = a.neg_().add_(margin).clamp_min_(0)  # (B, T, T), in a's buffer
    h.diagonal(dim1=1, dim2=2).zero_()  # i == j is not a pair
    loss = h.pow(2).sum((1, 2)) / (T * (T - 1))
    W = h.mul_(da_dc).mul_(-2 / (T * (T - 1)))  # (B, T, T)
    return CosineGrad.apply(z, loss, u, inv_norm, tiny, W)


def decorrelation(z, **_):
    """mean_{i!=j} c_ij^2 of z centred over its channels; W = 2 c_ij / (T(T-1)). Autograd differentiates the
    centring."""
    T = z.size(1)
    z = z - z.mean(dim=-1, keepdim=True)  # (B, T, C)
    u, inv_norm, tiny, c = unit_cosines(z.detach())
    c.diagonal(dim1=1, dim2=2).zero_()  # i == j is not a pair
    loss = c.pow(2).sum((1, 2)) / (T * (T - 1))
    W = c.mul_(2 / (T * (T - 1)))  # (B, T, T)
    return CosineGrad.apply(z, loss, u, inv_norm, tiny, W)


def entropy(z, *, tau, **_):
    """-mean_i H_i, p_i = softmax_{j!=i}(x_i), x = -d / tau. dH_i/dx_ij = -p_ij (log p_ij + H_i), so
    W_ij = -p_ij (log p_ij + H_i) / (T tau) and S = W + W^T."""
    T = z.size(1)
    zc, x = centred_distances(z.detach(), tau)
    x.diagonal(dim1=1, dim2=2).fill_(float("-inf"))  # a softmax over j != i in each row i
    x = x.sub_(x.amax(-1, keepdim=True)).clamp_min_(-UNDERFLOW)  # (B, T, T); the floor as in exp_pairs_
    p = x.exp()
    p.diagonal(dim1=1, dim2=2).zero_()
    total = p.sum(-1, keepdim=True)  # (B, T, 1)
    p /= total
    logp = x.sub_(total.log())  # (B, T, T), in x's buffer; finite on the diagonal, where p is 0
    H = -torch.linalg.vecdot(p, logp)  # (B, T)
    W = logp.add_(H[:, :, None]).mul_(p).mul_(-1 / (T * tau))  # (B, T, T), in logp's buffer
    return DistanceGrad.apply(z, -H.mean(-1), zc, W + W.transpose(1, 2))
