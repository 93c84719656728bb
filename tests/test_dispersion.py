"""
Tests for dispersion.py and condense/dispersion_fused.py, in two parts.

The loss contract: every function in VARIANTS, one you add included, is collected for the clauses below (one
value per sequence; finite value and gradient on condensed, zero and two-token inputs, in fp32 and bf16
autocast; invariant to the order of the tokens; bounded below as the hidden states grow; lower for spread
tokens than for condensed ones; gradcheck; torch.compile(fullgraph=True)) and for the invariances it declares.
A variant known to break a clause declares it in dispersion.BREAKS, and the test then checks that it still
does.

The built-in variants: each against an independent float64 loop over pairs (the formulas of
docs/condensation.md section 3), the speed path (condense/dispersion_fused.py) against the formulas, anchor
values, subsampling, precision, errors, layer selection and one full torch.compile.

Run: python -m pytest tests/test_dispersion.py -q       (-k my_loss: the contract for one variant)
"""

import math

import numpy as np
import pytest
import torch

from condense import dispersion_fused
import dispersion
from dispersion import FAST_PATHS, VARIANTS, dispersion_loss, select_layers

SETTINGS = dict(tau=0.7, clamp=0.1, margin=0.5, norm_weight=0.1)  # tau != 1 so a misplaced tau shows
BUILT_IN = [name for name in VARIANTS if name in FAST_PATHS]  # the variants with a speed path


# -----------------------------------------------------------------------------
# The loss contract. Every function in VARIANTS, one you add included, is held to these clauses by the
# parametrized tests below without a test of its own. Each clause is a function of a per-sequence loss
# (z (B, T, C) -> (B,)) that raises ContractBroken naming the clause it broke; you can call them on a loss
# directly. A variant that declares a clause in dispersion.BREAKS must break it; its invariances come from
# INVARIANT_TO.


class ContractBroken(AssertionError):
    pass


def broken(clause, detail):
    return ContractBroken(f"contract clause '{clause}' broken: {detail}")


def contract_inputs():
    """Token sets every loss must handle, each (B, T, C). The identical tokens are small integers, so their
    mean and differences are exact and their distances exactly 0."""
    g = torch.Generator().manual_seed(20)
    v = torch.randint(-3, 4, (1, 1, 16), generator=g).float()
    zero_token = torch.randn(3, 8, 16, generator=g)
    zero_token[:, 0] = 0.0  # the first token of each sequence is all zeros
    return {
        "random": torch.randn(3, 8, 16, generator=g),
        "condensed": v + 1e-3 * torch.randn(3, 8, 16, generator=g),  # nearly equal tokens
        "identical": v.expand(3, 8, 16).clone(),
        "zero-token": zero_token,
        "T = 2": torch.randn(4, 2, 16, generator=g),
    }


def check_shape(loss):
    """One value per sequence, shape (B,), and a sequence's value does not depend on the others."""
    z = contract_inputs()["random"]
    out = loss(z)
    if not isinstance(out, torch.Tensor) or out.shape != (3,):
        raise broken("shape", f"expected one value per sequence, shape (3,) for z of shape (3, 8, 16), got "
                              f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if not torch.allclose(out[1:2], loss(z[1:2]), rtol=1e-5, atol=1e-6):
        raise broken("shape", "a sequence's value changed when the other sequences were removed: pairs must "
                              "stay within one sequence")


def check_finite(loss):
    """Finite value and gradient on random, condensed, identical, zero-token and T = 2 inputs, in fp32 and
    with bf16 input under bf16 autocast."""
    for name, z in contract_inputs().items():
        for precision, dtype in (("fp32", torch.float32), ("bf16 autocast", torch.bfloat16)):
            x = z.to(dtype).detach().requires_grad_()  # a leaf of its own dtype
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                value = loss(x)
            if not torch.isfinite(value).all():
                raise broken("finite", f"value {value.tolist()} on {name} tokens ({precision})")
            value.sum().backward()
            if x.grad is None:
                raise broken("finite", f"no gradient reaches the hidden states ({name} tokens, {precision})")
            if not torch.isfinite(x.grad).all():
                raise broken("finite", f"the gradient has NaN or inf entries on {name} tokens ({precision})")


def check_permutation(loss):
    """Invariant to the order of the tokens: pairs have no positions."""
    z = contract_inputs()["random"].double()
    perm = torch.randperm(z.size(1), generator=torch.Generator().manual_seed(21))
    a, b = loss(z), loss(z[:, perm])
    if not torch.allclose(a, b, rtol=1e-7, atol=1e-9):
        raise broken("permutation",
                     f"permuting the tokens changed the loss from {a.tolist()} to {b.tolist()}")


SCALES = (1, 10, 100, 1000, 10000)


def check_bounded(loss):
    """Bounded below as the hidden states grow: z scaled by 1 ... 10^4, the loss must stop falling (its drop
    over the last factor of 10 at most half its drop over the first), and never be NaN or -inf."""
    z = contract_inputs()["random"]
    values = [loss(s * z).mean().item() for s in SCALES]
    shown = ", ".join(f"{v:.4g}" for v in values)
    if any(math.isnan(v) or v == -math.inf for v in values):
        raise broken("bounded", f"the loss is {shown} at z scaled by {SCALES}")
    first_drop, last_drop = values[0] - values[1], values[-2] - values[-1]
    if last_drop > 0.5 * max(first_drop, 0.0) + 1e-4 * (1 + abs(values[-1])):
        raise broken("bounded", f"the loss keeps falling as z is scaled by {SCALES}: {shown}; it can be "
                                "driven to minus infinity by growing the hidden states instead of spreading "
                                "the tokens")


def check_spread_beats_condensed(loss):
    """Spread tokens (independent Gaussians) score lower than nearly identical ones."""
    g = torch.Generator().manual_seed(22)
    spread = torch.randn(4, 16, 32, generator=g)
    condensed = torch.randn(4, 1, 32, generator=g) + 0.01 * torch.randn(4, 16, 32, generator=g)
    a, b = loss(spread).mean().item(), loss(condensed).mean().item()
    if not a < b:
        raise broken("spread_beats_condensed", f"spread tokens score {a:.4g}, nearly identical ones {b:.4g} "
                                               "on a (4, 16, 32) input: the loss must be lower for spread "
                                               "tokens")


def check_gradcheck(loss):
    """The gradient agrees with finite differences in float64."""
    z = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                    requires_grad=True)
    try:
        torch.autograd.gradcheck(loss, (z,), fast_mode=True)  # a random projection of the Jacobian: fast
    except Exception as e:  # GradcheckError, or whatever the loss raises in float64
        raise broken("gradcheck", f"in float64: {str(e).splitlines()[0]}") from e


def check_compiles(loss):
    """torch.compile(fullgraph=True) captures value and gradient in one graph (no graph break) and agrees with
    eager. The 'eager' backend runs what was captured without generating code: graph breaks show at capture,
    and this stays cheap (test_compiles_without_graph_breaks_and_matches_eager compiles one variant fully)."""
    torch._dynamo.reset()  # every variant is compiled afresh, so no cache limit is reached
    z = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(23), requires_grad=True)
    try:
        value = torch.compile(loss, fullgraph=True, backend="eager")(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    except Exception as e:
        raise broken("compiles",
                     f"torch.compile(fullgraph=True): {type(e).__name__}: {str(e).splitlines()[0]}") from e
    expected = loss(z)
    if not torch.allclose(value, expected, rtol=1e-5, atol=1e-6):
        raise broken("compiles", f"compiled value {value.tolist()} differs from eager {expected.tolist()}")
    if not torch.allclose(grad, torch.autograd.grad(expected.sum(), z)[0], rtol=1e-4, atol=1e-6):
        raise broken("compiles", "the compiled gradient differs from eager")


CLAUSES = {"shape": check_shape, "finite": check_finite, "permutation": check_permutation,
           "bounded": check_bounded, "spread_beats_condensed": check_spread_beats_condensed,
           "gradcheck": check_gradcheck, "compiles": check_compiles}


def random_rotation(C, seed):
    q, r = torch.linalg.qr(torch.randn(C, C, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # (C, C) orthogonal


TRANSFORMS = {  # the invariances a variant may declare in dispersion.INVARIANT_TO, applied to z (B, T, C)
    "rotation": lambda z, g: z @ random_rotation(z.size(-1), 4),
    "token_scale": lambda z, g: z * (0.2 + 5 * torch.rand(*z.shape[:2], 1, generator=g, dtype=z.dtype)),
    "translation": lambda z, g: z + torch.randn(z.size(0), 1, z.size(2), generator=g, dtype=z.dtype),
    "channel_shift": lambda z, g: z + torch.randn(*z.shape[:2], 1, generator=g, dtype=z.dtype),
    "channel_permutation": lambda z, g: z[..., torch.randperm(z.size(-1), generator=g)],
}


def check_invariant(loss, invariance):
    if invariance not in TRANSFORMS:
        raise broken("invariances",
                     f"unknown invariance {invariance!r}; declare names from {', '.join(TRANSFORMS)}")
    z = torch.randn(3, 9, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a, b = loss(z), loss(TRANSFORMS[invariance](z, torch.Generator().manual_seed(24)))
    if not torch.allclose(a, b, rtol=1e-9, atol=1e-12):
        raise broken(f"invariant to {invariance}", "declared in INVARIANT_TO, but the loss changed from "
                                                   f"{a.tolist()} to {b.tolist()}")


def registered(variant):
    """The loss of each sequence as training computes it for VARIANTS[variant]: fp32, autocast off, speed
    path."""
    return lambda z: dispersion.per_sequence(z, variant, **SETTINGS)


@pytest.mark.parametrize("clause", list(CLAUSES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_contract(variant, clause):
    reason = dispersion.BREAKS.get(variant, {}).get(clause)
    if reason is None:
        CLAUSES[clause](registered(variant))
        return
    try:
        CLAUSES[clause](registered(variant))
    except ContractBroken:
        return  # it breaks the clause, as declared
    pytest.fail(f"{variant} declares in dispersion.BREAKS that it breaks '{clause}' ({reason}), but it meets "
                "it: remove the declaration")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_declared_invariances(variant):
    for invariance in dispersion.INVARIANT_TO.get(variant, ()):
        check_invariant(registered(variant), invariance)


def test_declarations_name_real_variants_clauses_and_invariances():
    assert set(dispersion.BREAKS) <= set(VARIANTS) and set(dispersion.INVARIANT_TO) <= set(VARIANTS)
    assert all(set(clauses) <= set(CLAUSES) for clauses in dispersion.BREAKS.values())
    assert all(set(names) <= set(TRANSFORMS) for names in dispersion.INVARIANT_TO.values())


def max_cosine(z, *, tau, **_):
    """A loss a student might add (README): mean_i max_{j != i} c_ij, each token's nearest neighbour in
    angle."""
    c = dispersion.cosines(z).masked_fill(~dispersion.off_diagonal(z.size(1), z.device), -1.0)  # (B, T, T)
    return c.max(-1).values.mean(-1)  # (B,)


def test_a_loss_added_to_the_registry_meets_the_contract_through_the_same_tests(monkeypatch):
    """What happens when a student adds max_cosine to VARIANTS: the very tests every variant is collected for
    pass on it (pytest collects them for the new name; here they are called by hand)."""
    monkeypatch.setitem(VARIANTS, "max_cosine", max_cosine)
    monkeypatch.setitem(dispersion.INVARIANT_TO, "max_cosine", ("rotation", "token_scale"))
    for clause in CLAUSES:
        test_contract("max_cosine", clause)
    test_declared_invariances("max_cosine")
    assert dispersion_loss(torch.randn(2, 8, 4), "max_cosine").dim() == 0


def euclidean_spread(z, *, tau, **_):
    """A tempting mistake: the distance instead of its square. d/dd sqrt(d) is infinite at d = 0, so identical
    tokens get a NaN gradient."""
    return dispersion.log_mean_exp(-dispersion.squared_distances(z).sqrt() / tau)


def mean_distance(z, **_):
    """Another: reward the mean squared distance. Scaling z up lowers it without limit."""
    return -dispersion.mean_pairs(dispersion.squared_distances(z))


def test_a_loss_with_nan_gradients_on_condensed_tokens_fails_the_finite_clause():
    with pytest.raises(ContractBroken, match="clause 'finite' broken: the gradient has NaN or inf entries on "
                                             "identical tokens"):
        check_finite(lambda z: euclidean_spread(z, tau=1.0))


def test_a_loss_that_can_be_driven_to_minus_infinity_fails_the_bounded_clause():
    check_finite(mean_distance)  # it is finite everywhere, so the bounded clause is what catches it
    with pytest.raises(ContractBroken, match="clause 'bounded' broken: .* minus infinity"):
        check_bounded(mean_distance)


def test_a_declared_flaw_that_is_gone_fails(monkeypatch):
    monkeypatch.setitem(dispersion.BREAKS, "angular", {"spread_beats_condensed": "a stale note"})
    with pytest.raises(pytest.fail.Exception, match="angular declares .* but it meets it"):
        test_contract("angular", "spread_beats_condensed")


def test_entropy_as_published_prefers_identical_tokens():
    """The finding behind entropy's entry in BREAKS, at its default tau = 1: uniform neighbour probabilities
    (entropy log(T - 1), its maximum) for nearly identical tokens, peaked ones for spread tokens."""
    g = torch.Generator().manual_seed(22)
    spread = torch.randn(4, 16, 32, generator=g)
    condensed = torch.randn(4, 1, 32, generator=g) + 0.01 * torch.randn(4, 16, 32, generator=g)
    assert dispersion_loss(condensed, "entropy").item() == pytest.approx(-math.log(15), abs=0.01)  # -2.71
    assert dispersion_loss(spread, "entropy").item() == pytest.approx(-0.31, abs=0.01)


# -----------------------------------------------------------------------------
# the built-in variants against a reference: one sequence x of shape (T, C) as a float64 numpy array, plain
# loops over ordered pairs i != j (all T^2 for l2_repel)

def ref_unit(v):
    return v / max(np.linalg.norm(v), 1e-6)


def ref_angle(xi, xj, clamp):
    c = float(ref_unit(xi) @ ref_unit(xj))
    return math.acos(min(max(c, -1 + clamp), 1 - clamp)) / math.pi


def ref_pearson(xi, xj):
    if np.ptp(xi) == 0 or np.ptp(xj) == 0:
        return 0.0  # a constant token has no correlation with anything (the module floors the std)
    return float(np.corrcoef(xi, xj)[0, 1])


def ref_sequence(x, variant, tau, clamp, margin, norm_weight):
    T = len(x)
    pairs = [(i, j) for i in range(T) for j in range(T) if i != j]
    if variant == "angular":
        return math.log(np.mean([math.exp(-ref_angle(x[i], x[j], clamp) / tau) for i, j in pairs]))
    if variant == "cosine":
        return math.log(np.mean([math.exp(ref_unit(x[i]) @ ref_unit(x[j]) / tau) for i, j in pairs]))
    if variant == "l2_repel":
        repel = math.log(np.mean([math.exp(-np.sum((x[i] - x[j]) ** 2) / tau)
                                  for i in range(T) for j in range(T)]))
        return repel + norm_weight * np.mean(x ** 2)
    if variant == "orthogonal":
        return np.mean([max(0.0, margin - ref_angle(x[i], x[j], clamp)) ** 2 for i, j in pairs])
    if variant == "decorrelation":
        return np.mean([ref_pearson(x[i], x[j]) ** 2 for i, j in pairs])
    if variant == "entropy":
        H = []
        for i in range(T):
            logits = np.array([-np.sum((x[i] - x[j]) ** 2) / tau for j in range(T) if j != i])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            H.append(-sum(pk * math.log(pk) for pk in p if pk > 0))
        return -np.mean(H)
    raise AssertionError(variant)


# a variant without a loop above is left out
REFERENCED = [name for name in VARIANTS
              if name in ("angular", "cosine", "l2_repel", "orthogonal", "decorrelation", "entropy")]


def ref_loss(z, variant, **settings):
    return np.mean([ref_sequence(x, variant, **settings) for x in z.double().numpy()])


def edge_cases():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, generator=g)
    w = torch.randn(6, generator=g)
    return {
        "random": torch.randn(3, 7, 6, generator=g),
        "zero_vectors": torch.cat([torch.zeros(2, 3, 6), torch.randn(2, 3, 6, generator=g)], dim=1),
        "all_zero": torch.zeros(2, 4, 6),
        "identical": v.expand(2, 5, 6).clone(),
        "antipodal": torch.stack([v, -v, w, -w]).unsqueeze(0),
        "T2": torch.randn(4, 2, 6, generator=g),
    }


@pytest.mark.parametrize("variant", REFERENCED)
@pytest.mark.parametrize("case", list(edge_cases()))
def test_matches_reference_value_and_has_finite_gradient(variant, case):
    z = edge_cases()[case].requires_grad_()
    loss = dispersion_loss(z, variant, max_tokens=0, **SETTINGS)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(ref_loss(z.detach(), variant, **SETTINGS), abs=2e-5)
    assert torch.isfinite(z.grad).all()


def test_anchor_values():
    orthogonal_tokens = torch.eye(8).unsqueeze(0) * torch.tensor([1.0, 3.0]).view(2, 1, 1)  # (2, 8, 8)
    assert dispersion_loss(orthogonal_tokens, max_tokens=0).item() == pytest.approx(-0.5, abs=1e-6)
    condensed = torch.randn(8).expand(3, 10, 8) * torch.rand(3, 10, 1).add(0.5)  # one direction, any length
    for clamp in (0.1, 0.3):
        expected = -math.acos(1 - clamp) / math.pi
        assert dispersion_loss(condensed, clamp=clamp).item() == pytest.approx(expected, abs=1e-6)
    assert -math.acos(0.9) / math.pi == pytest.approx(-0.144, abs=1e-3)


def test_stacked_layers_in_one_call_give_the_mean_over_layers():
    """train.py stacks L layers of B sequences into one batch of L*B: the result is the mean of the per-layer
    losses, and the gradient reaches every layer."""
    g = torch.Generator().manual_seed(2)
    # 4 layers of (B, T, C)
    hidden = [torch.randn(3, 10, 6, generator=g, requires_grad=True) for _ in range(4)]
    layers = [1, 2, 3]
    for variant in VARIANTS:
        stacked = dispersion_loss(torch.stack([hidden[l] for l in layers]).flatten(0, 1), variant,
                                  max_tokens=0)
        per_layer = torch.stack([dispersion_loss(hidden[l], variant, max_tokens=0) for l in layers]).mean()
        assert torch.allclose(stacked, per_layer, rtol=1e-6, atol=1e-7)
    stacked.backward()
    assert hidden[0].grad is None and all(hidden[l].grad.abs().sum() > 0 for l in layers)


@pytest.mark.parametrize("path", ["formula", "speed path"])
def test_l2_repel_is_bounded_below_by_minus_log_T(path):
    """The T diagonal terms exp(0) = 1 keep the mean over all T^2 pairs at least 1/T: the pair term stays at
    or above -log T however far apart the tokens are, and reaches it once they are a few sqrt(tau) apart, so
    only the norm term changes as the hidden states grow. Over the pairs i != j alone, this input scaled by 1,
    10 and 100 gave -6.0, -192 and -18,684: a loss that rewarded blowing up the hidden states."""
    loss = VARIANTS["l2_repel"] if path == "formula" else FAST_PATHS["l2_repel"]
    z = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    scales = (1, 10, 100, 1000)
    pair_term = [loss(s * z, tau=1.0, norm_weight=0.0) for s in scales]  # (B,) each
    assert all((p >= -math.log(16) - 1e-6).all() for p in pair_term)
    assert torch.allclose(pair_term[-1], torch.full((2,), -math.log(16)), atol=1e-6)
    total = [loss(s * z, tau=1.0, norm_weight=0.1).mean().item() for s in scales]
    assert (total == sorted(total)
            and total[-1] == pytest.approx(-math.log(16) + 0.1 * 1e6 * z.pow(2).mean().item()))
    same = z[:, :1].expand(2, 16, 8)  # identical tokens: every pair term is exp(0)
    assert torch.allclose(loss(same, tau=1.0, norm_weight=0.1), 0.1 * same.pow(2).mean((1, 2)), atol=1e-6)


# -----------------------------------------------------------------------------
# gradients

def test_the_gradcheck_input_avoids_the_kinks_of_the_built_ins():
    """check_gradcheck's input: inside the clamp band and away from the hinge's kink, where the built-ins are
    smooth, so finite differences can agree with the gradient."""
    z = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = dispersion.cosines(z)[:, ~torch.eye(5, dtype=torch.bool)]
    assert c.abs().max() < 0.85  # inside the clamp band 0.1, away from its edge
    assert ((torch.arccos(c) / math.pi - SETTINGS["margin"]).abs() > 1e-3).all()  # away from the hinge's kink


@pytest.mark.parametrize("theta", [1.0, 0.3, 0.01])  # cos(1.0) = 0.54 is inside the band; 0.3 and 0.01 beyond
def test_straight_through_gradient_is_the_slope_at_the_band_edge(theta):
    """Two unit tokens at angle theta in 2-D: loss = -a/tau, with a = arccos(c*)/pi and c* = min(cos theta, 1
    - clamp). d loss / d c = 1 / (pi tau sqrt(1 - c*^2)): the slope at c*, which is the band's edge for pairs
    beyond it; d c / d z2 = u1 - c u2 = sin(theta) (sin(theta), -cos(theta)) for ||z2|| = 1, with the
    unclamped c."""
    tau, clamp = 0.7, 0.1
    z = torch.tensor([[[1.0, 0.0], [math.cos(theta), math.sin(theta)]]], dtype=torch.float64,
                     requires_grad=True)
    loss = dispersion_loss(z, "angular", tau=tau, clamp=clamp)
    loss.backward()
    c_star = min(math.cos(theta), 1 - clamp)
    assert loss.item() == pytest.approx(-math.acos(c_star) / math.pi / tau)
    slope = 1 / (math.pi * tau * math.sqrt(1 - c_star ** 2))
    expected = slope * math.sin(theta) * torch.tensor([math.sin(theta), -math.cos(theta)],
                                                      dtype=torch.float64)
    assert torch.allclose(z.grad[0, 1], expected, rtol=1e-9, atol=1e-15)
    assert torch.isfinite(z.grad).all() and z.grad[0, 1].abs().max() > 0
    # d c / d z1 = u2 - c u1 = (0, sin(theta)) for ||z1|| = 1
    assert torch.allclose(z.grad[0, 0],
                          slope * math.sin(theta) * torch.tensor([0.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("variant", BUILT_IN)
@pytest.mark.parametrize("case", list(edge_cases()) + ["below_eps", "far_apart"])
def test_speed_path_equals_the_formula_in_value_and_gradient(variant, case):
    """Each built-in variant runs through condense/dispersion_fused.py; its formula in dispersion.py, through
    autograd, must give the same value and gradient, also for pairs beyond the clamp band (identical,
    antipodal tokens), for zero vectors, for a token of norm 1e-7 (floored at eps = 1e-6), and for tokens so
    far apart that most exp terms underflow (the UNDERFLOW floor must not show)."""
    formula = VARIANTS[variant]
    fast = FAST_PATHS[variant]
    g = torch.Generator().manual_seed(3)
    below_eps = torch.randn(2, 4, 6, generator=g)
    below_eps[:, 0] *= 1e-7 / below_eps[:, 0].norm(dim=-1, keepdim=True)
    special = {"below_eps": below_eps, "far_apart": 30 * torch.randn(2, 8, 6, generator=g)}
    z = (special[case] if case in special else edge_cases()[case]).double().requires_grad_()
    z_ref = z.detach().clone().requires_grad_()
    # a different upstream gradient per sequence
    weights = torch.arange(1.0, z.size(0) + 1, dtype=torch.float64)
    (fast(z, **SETTINGS) * weights).sum().backward()
    (formula(z_ref, **SETTINGS) * weights).sum().backward()
    assert torch.allclose(fast(z.detach(), **SETTINGS), formula(z_ref.detach(), **SETTINGS), rtol=1e-12)
    assert torch.allclose(z.grad, z_ref.grad, rtol=1e-9, atol=1e-12)


def test_speed_path_floors_norms_like_the_formulas():
    assert dispersion_fused.EPS == dispersion.EPS


def test_a_formula_replaced_in_the_registry_runs_as_written(monkeypatch):
    """A formula replaced in VARIANTS no longer matches its speed path, so it runs as written."""
    z = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(2))
    monkeypatch.setitem(VARIANTS, "cosine", lambda z, **_: z.sum((1, 2)))
    assert dispersion_loss(z, "cosine").item() == pytest.approx(z.sum().item() / 2, rel=1e-6)


@pytest.mark.parametrize("variant", BUILT_IN)
def test_speed_path_in_float32_agrees_with_float64(variant):
    """Training runs in fp32: value and gradient there agree with the fp64 result to fp32 accuracy."""
    z = torch.randn(3, 32, 16, generator=torch.Generator().manual_seed(4))
    z32, z64 = z.clone().requires_grad_(), z.double().requires_grad_()
    loss32, loss64 = (dispersion_loss(x, variant, max_tokens=0, **SETTINGS) for x in (z32, z64))
    loss32.backward()
    loss64.backward()
    assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(z32.grad.double(), z64.grad, rtol=1e-3, atol=1e-4 * z64.grad.abs().max().item())


@pytest.mark.parametrize("variant", BUILT_IN)
def test_second_derivatives_of_the_speed_path_raise_instead_of_being_wrong(variant):
    z = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(5), requires_grad=True)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(dispersion_loss(z, variant, **SETTINGS), z, create_graph=True)


# -----------------------------------------------------------------------------
# invariances beyond the declared ones

def test_decorrelation_is_sign_invariant_but_not_rotation_invariant():
    """Pearson correlations are squared, so z -> -z changes nothing; centring over channels singles out the
    all-ones direction, so a rotation of the hidden space changes the loss."""
    z = torch.randn(3, 9, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = registered("decorrelation")
    assert torch.allclose(loss(z), loss(-z), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(loss(z), loss(z @ random_rotation(6, 4)), rtol=1e-3)


# -----------------------------------------------------------------------------
# subsampling

def test_subsampling_is_reproducible_and_shares_positions_across_the_batch():
    z = torch.randn(4, 40, 8, generator=torch.Generator().manual_seed(5))
    a = dispersion_loss(z, max_tokens=12, generator=torch.Generator().manual_seed(7))
    b = dispersion_loss(z, max_tokens=12, generator=torch.Generator().manual_seed(7))
    c = dispersion_loss(z, max_tokens=12, generator=torch.Generator().manual_seed(8))
    assert a.item() == b.item() and a.item() != c.item()
    keep = torch.randperm(40, generator=torch.Generator().manual_seed(7))[:12]
    assert torch.allclose(a, dispersion_loss(z[:, keep], max_tokens=0), rtol=1e-6, atol=1e-7)


def test_max_tokens_at_least_T_is_exact_and_draws_nothing():
    z = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(6))
    exact = dispersion_loss(z, max_tokens=0)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    for m in (20, 21, 1000):
        assert dispersion_loss(z, max_tokens=m, generator=g).item() == exact.item()
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("variant, log_mean_exp", [("orthogonal", False), ("decorrelation", False),
                                                   ("angular", True), ("cosine", True)])
def test_subsampled_loss_averages_to_the_full_loss(variant, log_mean_exp):
    """Pair means (orthogonal, decorrelation) are unbiased under a uniform subset of tokens. log-mean-exp
    (angular, cosine) is the log of an unbiased mean, so it is low by about var/2 (Jensen, delta method),
    which the tolerance allows for. l2_repel and entropy are not tested: their value depends on how many
    neighbours there are (nearest pairs dominate; entropy of a softmax over m-1 tokens)."""
    z = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(9))
    full = dispersion_loss(z, variant, max_tokens=0).item()
    g = torch.Generator().manual_seed(10)
    draws = torch.stack([dispersion_loss(z, variant, max_tokens=16, generator=g) for _ in range(300)])
    stderr = draws.std().item() / math.sqrt(len(draws))
    jensen = draws.var().item() / 2 if log_mean_exp else 0.0
    assert draws.std() > 0
    assert abs(draws.mean().item() - full) < 4 * stderr + jensen


# -----------------------------------------------------------------------------
# precision

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_autocast_input_computes_in_fp32(variant):
    z = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(11))
    z16 = z.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = dispersion_loss(z16, variant, max_tokens=0)
    assert under.dtype == torch.float32
    # autocast is off inside: same as the fp32 computation on the same (bf16-rounded) numbers
    assert torch.allclose(under, dispersion_loss(z16.float(), variant, max_tokens=0), rtol=1e-5, atol=1e-6)
    # and close to the fp32 input: only the input rounding (bf16 has 8 bits of mantissa) differs
    assert torch.allclose(under, dispersion_loss(z, variant, max_tokens=0), rtol=2e-2, atol=2e-3)


# -----------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("kwargs, words", [
    (dict(variant="angle"),
     ["angle", "angular", "cosine", "l2_repel", "orthogonal", "decorrelation", "entropy"]),
    (dict(z=torch.randn(4, 8)), ["(B, T, C)", "(4, 8)"]),
    (dict(z=torch.randn(2, 1, 8)), ["2 tokens", "T = 1"]),
    (dict(tau=0.0), ["tau", "above 0"]),
    (dict(tau=-1.0), ["tau"]),
    (dict(clamp=1.0), ["clamp", "[0, 1)"]),
    (dict(clamp=-0.1), ["clamp", "[0, 1)"]),
    (dict(margin=-0.5), ["margin", "0 or more"]),
    (dict(norm_weight=-1.0), ["norm_weight", "0 or more"]),
    (dict(max_tokens=1), ["max_tokens", "0 (all tokens) or at least 2"]),
    (dict(max_tokens=None), ["max_tokens", "0 (all tokens)", "None"]),
])
def test_bad_inputs_raise_helpful_errors(kwargs, words):
    args = dict(z=torch.randn(2, 8, 4), variant="angular") | kwargs
    with pytest.raises(ValueError) as err:
        dispersion_loss(args.pop("z"), args.pop("variant"), **args)
    for word in words:
        assert word in str(err.value)


# -----------------------------------------------------------------------------
# layer selection

def test_select_layers_named_and_explicit():
    assert select_layers("all", 4) == [1, 2, 3, 4]
    assert select_layers("last", 4) == [4]
    assert select_layers("early_half", 5) == [1, 2]
    assert select_layers("late_half", 5) == [3, 4, 5]
    assert select_layers("early_half", 4) + select_layers("late_half", 4) == select_layers("all", 4)
    assert select_layers("late_half", 1) == [1]
    assert select_layers([3, 1], 4) == [1, 3]
    assert select_layers((2,), 4) == [2]
    assert select_layers("1,3, 4", 4) == [1, 3, 4]
    assert select_layers("[2,3]", 4) == [2, 3]
    assert select_layers("2", 4) == [2]


@pytest.mark.parametrize("spec, n_layer, words", [
    ([0, 1], 4, ["[0]", "1..4"]),
    ("1,5", 4, ["[5]", "1..4"]),
    ([], 4, ["no layer", "1..4"]),
    ("", 4, ["no layer"]),
    ("early_half", 1, ["no layer", "1..1"]),
    ("first", 4, ["first", "1..4", "all", "late_half"]),
    ("1,x", 4, ["1,x", "1,3,5"]),
    ([1, 1], 4, ["repeat"]),
    ([1.0, 2], 4, ["list of ints"]),
    ([True], 4, ["list of ints"]),
    (3, 4, ["list of ints"]),
])
def test_select_layers_rejects_bad_specs(spec, n_layer, words):
    with pytest.raises(ValueError) as err:
        select_layers(spec, n_layer)
    for word in words:
        assert word in str(err.value)


# -----------------------------------------------------------------------------
# compile (the one slow test, ~10-20 s on CPU)

def test_compiles_without_graph_breaks_and_matches_eager():
    """fullgraph=True fails on any graph break. Subsampling is active (max_tokens < T); fallback_random makes
    the compiled randperm draw from the global RNG exactly as eager does, so values and gradients can
    match."""
    z = torch.randn(3, 24, 8, generator=torch.Generator().manual_seed(12), requires_grad=True)
    with torch._inductor.config.patch(fallback_random=True):
        compiled = torch.compile(dispersion_loss, fullgraph=True)
        torch.manual_seed(1)
        loss = compiled(z, "angular", max_tokens=10)
        loss.backward()
    grad, z.grad = z.grad, None
    torch.manual_seed(1)
    expected = dispersion_loss(z, "angular", max_tokens=10)
    expected.backward()
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7)
    assert torch.allclose(grad, z.grad, rtol=1e-5, atol=1e-7)
