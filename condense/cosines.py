"""
Speed path of condensation.layer_sums: the statistics of one hidden state's cosine matrix at a few percent
of the forward pass that produced it. Each function computes what its formula says, to float32 rounding (the
effective rank in float64); tests/test_measure.py holds each one to a float64 reference. Figures:
docs/performance.md, "The measurement".

u is always a batch of unit token vectors (B, T, C) (a zero row for a token of norm 0), G = u u^T its cosine
matrix per sequence.
"""

import math

import torch

COPIES = 16  # copies of the histogram's slots that consecutive pairs count into (PairCounts)


def split(T, leaf=32):
    """(levels, b) with T = b * 2**levels: T halved while it is even and the half holds at least `leaf`."""
    levels = 0
    while T % 2 == 0 and T // 2 >= leaf:
        T, levels = T // 2, levels + 1
    return levels, T


class PairCounts:
    """Histogram counts of cos_ij = u_i . u_j over the ordered pairs i != j of each sequence, on `bins` equal
    bins of [-1, 1], summed over the batch: the counts torch.histc gives on the matrix with its diagonal left
    out, to the last count. For one shape (B, T, C): write the unit vectors into .u, then call it; every
    buffer and view is made once, so the hidden states of every batch of that shape reuse them (measure()
    keeps one per thread) and a call is a dozen operations.

    Returns (counts, mean_sum). counts, raw, (2 * COPIES * (bins + 2),) int64, COPIES copies of two halves: in
    the first half, slot k < bins counts the pairs in bin k, slot bins those at exactly +1 (bin bins - 1, as
    in histc), slot bins + 1 those left out; the second half counts the same for pairs that each stand for two
    (i, j and j, i). histogram() turns a sum of them into the bins. mean_sum, (1,): the sum over the batch of
    each sequence's mean cos_ij, read off the same products: one weighted sum of them, each pair weighted by
    how many it stands for (2, 1, and 0 on the diagonal) over n (n - 1). Given lengths (right padding), a pair
    with a padding token weighs 0, and its u must be NaN, which leaves it out of the counts.

    Why it is fast: G is symmetric, so only its lower triangle is computed, in a few large matrix products.
    Split the T tokens in two halves: the block (second half) x (first half) holds one of each pair across
    the halves; split each half again, all blocks of one level in one batched product, down to blocks of
    `leaf` tokens, whose small diagonal blocks are computed whole: for T = 512, 53% of the products of the
    whole matrix. The bins come from one pass, k = int((cos + 1) * bins / 2) (histc's formula; halving
    commutes with rounding), then one count of every pair's slot: on a CPU by torch.bincount, 3-4x faster
    than histc; on a GPU (or with index_add=True) by index_add_, because bincount reads the largest value
    back to the host, which would stop the forward pass at every hidden state until the device caught up.
    Consecutive pairs count into COPIES separate copies of the slots, summed by histogram(): in a condensed
    layer most pairs fall in a few bins, and one count after another into the same slot waits for the one
    before it (one bin for every pair: 66 us for 29,000 pairs against 16 us spread over 16 copies, one
    thread). The copies and the halves are one precomputed offset per pair.
    """

    def __init__(self, B, T, C, bins, device, index_add=None):
        self.shape, self.bins = (B, T, C), bins
        levels, b = split(T)
        blocks = [T >> (k + 1) for k in range(levels)]  # level k: 2**k pairs of sibling blocks of m tokens
        self.across = sum(B * (T // (2 * m)) * m * m for m in blocks)  # pairs that stand for two
        self.u = torch.empty(B, T, C, device=device)
        self.out = torch.empty(self.across + B * T * b, device=device)  # (cos + 1) * bins / 2, pair by pair
        self.products, start = [], 0  # (where, left, right): where += bins / 2 * left @ right
        for m in blocks:
            first, second = self.u.view(-1, 2, m, C).unbind(1)  # (B * 2**k, m, C) each: a block's halves
            self.products.append((self.out[start:start + first.shape[0] * m * m].view(-1, m, m), second,
                                  first.mT))
            start += first.shape[0] * m * m
        leaves = self.u.view(-1, b, C)  # (B * T / b, b, C)
        diagonal = self.out[self.across:].view(-1, b, b)
        self.products.append((diagonal, leaves, leaves.mT))
        self.self_pairs = diagonal.diagonal(dim1=1, dim2=2)  # i = j: left out
        self.on_cpu = torch.device(device).type == "cpu"
        self.index_add = not self.on_cpu if index_add is None else index_add
        index = torch.long if self.index_add else torch.int32  # index_add_'s, or bincount's
        self.slots = torch.empty(self.out.shape, dtype=index, device=device)
        # pair p counts into copy p % COPIES of its half's slots (the second half: pairs that stand for two)
        copy = torch.arange(COPIES, dtype=index, device=device) * (bins + 2)
        self.offsets = copy.repeat(-(-self.out.numel() // COPIES))[:self.out.numel()]
        self.offsets[:self.across] += COPIES * (bins + 2)
        self.ones = torch.ones((), dtype=index, device=device).expand(self.out.shape)  # index_add_'s
        # full windows' weights, (cos + 1) * bins / 2 -> mean + 1: the pairs each stands for (2, 1, or 0 on
        # the diagonal) / (bins / 2 * T (T - 1))
        self.full_weights = torch.full(self.out.shape, 1 / (bins / 2 * T * (T - 1)), device=device)
        self.full_weights[:self.across] *= 2
        self.full_weights[self.across:].view(-1, b, b).diagonal(dim1=1, dim2=2).fill_(0)
        self.weights, self.lengths, self.later = self.full_weights, None, None
        self.row, self.minus_batch = self.out.view(1, -1), torch.full((1,), -float(B), device=device)

    def weigh(self, lengths):
        """Each pair's weight in mean_sum for sequences of these lengths (once per batch, kept for the next
        hidden states): as full_weights', over n (n - 1) instead of T (T - 1); 0 for a pair with a padding
        token."""
        if lengths == self.lengths:
            return
        B, T, _ = self.shape
        device = self.out.device
        if self.later is None:  # for each pair: its sequence and the later of its two tokens, in out's order
            token, later, sequence = torch.arange(T, device=device), [], []
            levels, b = split(T)
            halves = [token.view(-1, 2, T >> (k + 1)) for k in range(levels)]  # (blocks, first | second, m)
            for blocks in halves + [token.view(-1, 1, b).expand(-1, 2, b)]:  # then the leaves, whole
                pair = torch.maximum(blocks[:, 1, :, None], blocks[:, 0, None, :]).flatten()  # one sequence's
                later.append(pair.repeat(B))
                sequence.append(torch.arange(B, device=device).repeat_interleave(pair.numel()))
            self.later, self.sequence = torch.cat(later), torch.cat(sequence)
        n = torch.tensor(lengths, device=device)
        self.weights = self.full_weights * (self.later < n[self.sequence]) * (T * (T - 1) / (n * (n - 1)))[
            self.sequence]
        self.lengths = lengths

    def fits(self, u, bins):
        return u.shape == self.shape and bins == self.bins and u.device == self.u.device

    def __call__(self, lengths=None):
        bins, size = self.bins, 2 * COPIES * (self.bins + 2)
        padded = lengths is not None
        self.out.fill_(bins / 2)
        for where, left, right in self.products:
            where.baddbmm_(left, right, alpha=bins / 2)
        self.self_pairs.fill_(bins + 1)
        if padded or not self.on_cpu:  # NaN: left out. (On a GPU a NaN from the model itself would be an
            self.out.nan_to_num_(bins + 1)  # index out of range, which ends the process's CUDA context.)
        if padded:
            self.weigh(lengths)
        mean_sum = torch.addmv(self.minus_batch, self.row, self.weights if padded else self.full_weights)
        self.slots.copy_(self.out)  # int((cos + 1) * bins / 2), rounded toward 0 as histc does
        self.slots += self.offsets
        if self.index_add:
            counts = self.slots.new_zeros(size).index_add_(0, self.slots, self.ones)
        else:
            counts = torch.bincount(self.slots, minlength=size)
        return counts, mean_sum


def histogram(counts):
    """Bin counts (..., bins) from a sum of PairCounts' raw counts (..., 2 * COPIES * (bins + 2))."""
    bins = counts.shape[-1] // (2 * COPIES) - 2
    counts = counts.unflatten(-1, (2, COPIES, bins + 2)).sum(-2)
    counts = counts[..., 0, :] + 2 * counts[..., 1, :]
    counts[..., bins - 1] += counts[..., bins]
    return counts[..., :bins]


def eigenvalues(gram):
    """Eigenvalues (ascending) of a batch of symmetric matrices; on the CPU with one thread. Small
    eigenproblems gain little from threads, and with the cores shared, MKL's threaded solver took 0.5 - 4 s
    for 8 matrices of 512 x 512 where one thread takes 0.08 s (2-core machine)."""
    threads = torch.get_num_threads()
    if gram.device.type != "cpu" or threads == 1:
        return torch.linalg.eigvalsh(gram)
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigvalsh(gram)
    finally:
        torch.set_num_threads(threads)


def effective_rank(u):
    """(effective rank, sigma_1^2), each (B,) float64: exp(-sum_k p_k log p_k), p_k = sigma_k / sum sigma,
    from all the eigenvalues sigma^2 of G (or of u^T u if C < T: the same nonzero ones). In float64: float32's
    rounding, about 1e-7 of sigma_1^2, would swamp the small sigma^2 of a tight cone (seen: 10% off for a
    random GPT-2's last layer)."""
    B, T, C = u.shape
    u = u.double()
    eig = eigenvalues(u @ u.mT if T <= C else u.mT @ u)  # (B, min(T, C)) ascending
    # rounding noise below it (matrix_rank's rule): the zeros of a rank below min(T, C)
    eig = torch.where(eig > eig[:, -1:] * eig.shape[1] * torch.finfo(eig.dtype).eps, eig, 0)
    sigma = eig.sqrt()
    p = sigma / sigma.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.exp(-torch.xlogy(p, p).sum(1)), eig[:, -1]


def top_eigenvalue(u, trace, tol=1e-5, first=5, steps=64):
    """The largest eigenvalue sigma_1^2 of each G = u u^T, (B,) float64, by the Lanczos method: the largest
    eigenvalue of the k x k tridiagonal matrix that G becomes in the basis q_1 .. q_k of the Krylov space
    span(q_1, G q_1, .., G^(k-1) q_1), q_1 the all-ones direction (the mean token's). It is at most sigma_1^2
    and there is an eigenvalue of G within r = beta_k |y_k| of it (y the tridiagonal's top eigenvector); k
    grows, checked from `first` on, until r <= tol * trace(G) in every sequence, so that top_share is within
    tol of its exact value; at k = rank(G), r = 0. Each step is a product with u and u^T, O(T C), where the
    full eigendecomposition costs O(T^3); 5-9 steps on GPT-2's hidden states. Each new q is made orthogonal
    to all earlier ones, twice (full reorthogonalisation), so float32 rounding cannot bring back directions
    already found. Not converged in `steps` (no such case seen), the full eigendecomposition decides."""
    B, T, C = u.shape
    q = u.new_full((B, T, 1), 1 / math.sqrt(T))
    basis, alphas, betas = q, [], []
    last = min(T, C, steps)
    for k in range(1, last + 1):
        w = u @ (u.mT @ q)  # G q
        c = basis.mT @ w  # its components on q_1 .. q_k; the last is alpha_k = q_k . G q_k
        w = torch.baddbmm(w, basis, c, alpha=-1)
        w = torch.baddbmm(w, basis, basis.mT @ w, alpha=-1)  # twice: what rounding left of them
        beta = torch.linalg.vector_norm(w, dim=1)  # (B, 1)
        alphas.append(c[:, -1, 0])
        betas.append(beta[:, 0])
        if k >= first or k == last:
            a, b = torch.stack(alphas, 1).double(), torch.stack(betas, 1).double()  # (B, k)
            tri = torch.diag_embed(a) + torch.diag_embed(b[:, :-1], 1) + torch.diag_embed(b[:, :-1], -1)
            theta, y = torch.linalg.eigh(tri)
            if k == min(T, C) or bool((b[:, -1] * y[:, -1, -1].abs() <= tol * trace).all()):
                return theta[:, -1]
            if k == last:
                return eigenvalues(u @ u.mT if T <= C else u.mT @ u)[:, -1].double()
        # beta_k that small: the Krylov space holds G's whole range, r <= beta_k is met; q = 0 from here on
        q = w / beta[:, :, None].clamp_min(1e-30) * (beta[:, :, None] > tol * trace[:, None, None])
        basis = torch.cat([basis, q], 2)
