"""Objectives on a VAE whose log p(x) is exact by quadrature (1-D latent).

ucvae's decoder gradient (and its inclusive-KL encoder gradient) must match the exact
gradients within the z-threshold for that many coordinates (``stats.z_threshold``: a correct
estimator fails with probability below 6e-5 however many coordinates there are); IWAE's
decoder gradient must not (it is biased). Standard errors come from G independent batches
(each batch gradient is a mean over B independent replicates of the same data point).
"""

import math

import pytest
import torch

import ucvae_lite.training.objectives as objectives
from ucvae_lite.core.iwae import iwae_bound
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.models.vae import VAE
from ucvae_lite.peers.msc import MSCMemory
from ucvae_lite.peers.sumo import sumo_from_log_weights
from ucvae_lite.studies.stats import z_score, z_threshold
from ucvae_lite.training.config import OBJECTIVES
from ucvae_lite.training.objectives import DEFAULT_CONFIG, StepContext, ucvae
from ucvae_lite.training.objectives import objective as objective_fn

G, B = 40, 100  # batches x replicates per batch


def _model() -> tuple[VAE, torch.Tensor]:
    """A 6-pixel, 1-latent VAE with a sharp posterior and an encoder N(0.3, 0.8²) wider than it."""
    torch.manual_seed(0)
    model = VAE(data_dim=6, hidden=(8,), latent_dim=1).double()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
        last = model.encoder[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.3, math.log(0.8)], dtype=torch.float64))
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    return model, x


def _quadrature(model: VAE, x: torch.Tensor):
    """log p(x) = log ∫ N(z; 0, 1) p(x|z) dz on a fine grid, and posterior weights on it."""
    z = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    log_joint = model.log_joint(x, z[None, :, None])[0]
    log_px = torch.logsumexp(log_joint, 0) + math.log(float(z[1] - z[0]))
    return log_px, z, (log_joint - log_px).exp() * float(z[1] - z[0])


def _exact_decoder_gradient(model, x) -> torch.Tensor:
    log_px, _, _ = _quadrature(model, x)
    grads = torch.autograd.grad(log_px, list(model.decoder.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def _decoder_gradient(model, x, name, cfg, generator) -> torch.Tensor:
    """One draw of the flattened θ (decoder) gradient of ``name``'s loss on x: its expectation
    is −∇_θ (1/B) Σ_b log p_θ(x_b) for ucvae and sumo, the bound's gradient for elbo, iwae."""
    step = objective_fn(name)(model, x, cfg, generator)
    return _grads(step.loss, list(model.decoder.parameters()))


def _batch_grads(model, x, name, cfg, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xb = x.expand(B, -1)
    return torch.stack([-_decoder_gradient(model, xb, name, cfg, g) for _ in range(G)])


def _max_z(samples: torch.Tensor, exact: torch.Tensor) -> float:
    return z_score(samples, exact).abs().max().item()


def test_ucvae_decoder_gradient_unbiased_iwae_biased():
    model, x = _model()
    exact = _exact_decoder_gradient(model, x)
    cfg = DEFAULT_CONFIG.with_(num_samples=3, k=0, m=0)
    limit = z_threshold(exact.numel())
    assert _max_z(_batch_grads(model, x, "ucvae", cfg, 1), exact) < limit
    assert _max_z(_batch_grads(model, x, "iwae", cfg, 2), exact) > limit


@pytest.mark.parametrize(
    "eps,k,m,rejuvenate", [(0.0, 1, 2, None), (0.2, 0, 0, None), (0.0, 0, 1, 0.5)]
)
def test_ucvae_unbiased_with_defensive_proposal_k_m_and_mh_move(eps, k, m, rejuvenate):
    model, x = _model()
    exact = _exact_decoder_gradient(model, x)
    cfg = DEFAULT_CONFIG.with_(num_samples=3, k=k, m=m, eps=eps, rejuvenate=rejuvenate)
    assert _max_z(_batch_grads(model, x, "ucvae", cfg, 3), exact) < z_threshold(exact.numel())


def test_inclusive_encoder_gradient_unbiased():
    """φ-gradient of the inclusive KL: −E_p[∇_φ log q_φ(z|x)], exact by quadrature."""
    model, x = _model()
    _, z, post = _quadrature(model, x)
    q = model.encode(x)
    log_q = q.log_prob(z[None, :, None])[0]
    params = list(model.encoder[-1].parameters())  # earlier layers get zero: last is zero
    exact = torch.autograd.grad(-(post.detach() * log_q).sum(), params)
    exact = torch.cat([e.reshape(-1) for e in exact])
    cfg = DEFAULT_CONFIG.with_(num_samples=3, k=0, m=0, encoder="inclusive")
    g = torch.Generator().manual_seed(4)
    samples = []
    for _ in range(G):
        step = ucvae(model, x.expand(B, -1), cfg, g)
        grads = torch.autograd.grad(step.loss, params)
        samples.append(torch.cat([e.reshape(-1) for e in grads]))
    assert _max_z(torch.stack(samples), exact) < z_threshold(exact.numel())


def _grads(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])


@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
@pytest.mark.parametrize("p", [1.0, 0.4])
@pytest.mark.parametrize("extra", [{}, {"k": 0, "m": 2, "rejuvenate": 0.5}])
def test_training_step_theta_gradient_is_the_surrogates(encoder, p, extra):
    """The ucvae loss's θ-gradient is exactly −(1/B) ∇_θ of the surrogate on the step's own
    estimate (evaluated afresh, no reuse). With encoder='iwae' X_0's one decoder pass also
    feeds the encoder's IWAE loss: none of that may reach θ."""
    model, x = _model()
    xb = x.expand(7, -1)
    cfg = DEFAULT_CONFIG.with_(num_samples=4, encoder=encoder, correction_prob=p, **extra)
    step = ucvae(model, xb, cfg, torch.Generator().manual_seed(0))
    if p < 1:
        assert 0 < int(step.estimate.corrected.sum()) < 7
    theta = list(model.decoder.parameters())
    surrogate = log_likelihood_surrogate(step.estimate, particle_log_joint(model, xb), "mean")
    torch.testing.assert_close(_grads(step.loss, theta), -_grads(surrogate, theta))


def test_ucvae_encoder_iwae_trains_phi_on_the_iwae_bound_only():
    """With encoder='iwae', φ's gradient is that of −IWAE bound on X_0 (θ held fixed)."""
    model, x = _model()
    xb, S = x.expand(5, -1), 4
    step = ucvae(model, xb, DEFAULT_CONFIG.with_(num_samples=S), torch.Generator().manual_seed(0))
    c = step.chains
    assert c.tau_mean >= 2 and c.tau_max >= 2 and c.truncated == 0
    assert step.log_weight_evals >= 2 * S and 0 < step.ess <= 1
    # The same reparameterised draw as the step's first q.sample(S, generator):
    q = model.proposal(xb)
    z = q.sample(S, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.detach(), step.estimate.flat_particles[: 5 * S].view(5, S, 1))
    iwae_loss = -iwae_bound(model.log_joint(xb, z) - q.log_prob(z)).mean()
    assert step.log_p == pytest.approx(-iwae_loss.item())  # X_0 is the encoder's sample set
    phi = list(model.encoder.parameters())
    torch.testing.assert_close(_grads(step.loss, phi), _grads(iwae_loss, phi))


def test_timeouts_are_reported_not_silent():
    model, x = _model()
    cfg = DEFAULT_CONFIG.with_(num_samples=2, k=0, m=0, max_steps=2)
    with pytest.warns(RuntimeWarning, match="truncated"):
        step = ucvae(model, x.expand(200, -1), cfg, torch.Generator().manual_seed(0))
    assert step.chains.truncated > 0


def test_sumo_decoder_gradient_unbiased():
    """θ climbs SUMO: its gradient averages to the exact ∇_θ log p(x) (quadrature)."""
    model, x = _model()
    exact = _exact_decoder_gradient(model, x)
    cfg = DEFAULT_CONFIG.with_(num_samples=3)
    assert _max_z(_batch_grads(model, x, "sumo", cfg, 5), exact) < z_threshold(exact.numel())


def test_sumo_encoder_minimises_the_second_moment(monkeypatch):
    """φ's gradient is that of (1/B) Σ SUMO² with θ held fixed: θ gets only −∇ SUMO."""
    model, x = _model()
    xb = x.expand(6, -1)
    seen = []  # (log-weights, SUMO) for θ's pass, then φ's

    def spy(log_w, k, roulette):
        seen.append((log_w, sumo_from_log_weights(log_w, k, roulette)))
        return seen[-1][1]

    monkeypatch.setattr(objectives, "sumo_from_log_weights", spy)
    step = objective_fn("sumo")(model, xb, DEFAULT_CONFIG, torch.Generator().manual_seed(0))
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    assert _grads(step.loss, phi).abs().sum() > 0 and _grads(step.loss, theta).abs().sum() > 0
    assert step.log_weight_evals >= 2 and step.details.k_mean >= 1
    (lw_theta, sumo_theta), (lw_phi, sumo_phi) = seen
    torch.testing.assert_close(lw_theta.detach(), lw_phi.detach())  # the same draws
    unused = lambda out, params: all(  # noqa: E731
        g is None for g in torch.autograd.grad(out, params, allow_unused=True, retain_graph=True)
    )
    assert unused(lw_theta.sum(), phi) and unused(lw_phi.sum(), theta)  # graphs kept apart
    expected = -sumo_theta.mean() + sumo_phi.pow(2).mean()
    torch.testing.assert_close(_grads(step.loss, theta + phi), _grads(expected, theta + phi))


def test_msc_first_visit_is_iwae_then_the_chains_move():
    """A chain's first visit is an IWAE step (same draws, same θ-gradient); later visits
    re-weight the stored references."""
    model, x = _model()
    B, S = 8, 4
    xb = x.expand(B, -1)
    cfg = DEFAULT_CONFIG.with_(num_samples=S)
    memory = MSCMemory.empty(B, 1, "toy")
    memory.reference = memory.reference.double()
    context = StepContext(torch.arange(B), memory)
    theta = list(model.decoder.parameters())
    msc_step = objective_fn("msc")(model, xb, cfg, torch.Generator().manual_seed(0), context)
    iwae_step = objective_fn("iwae")(model, xb, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(_grads(msc_step.loss, theta), _grads(iwae_step.loss, theta))
    assert bool((memory.visits == 1).all())
    before = memory.reference.clone()
    objective_fn("msc")(model, xb, cfg, torch.Generator().manual_seed(1), context)
    assert bool((memory.visits == 2).all()) and not torch.equal(before, memory.reference)
    with pytest.raises(ValueError, match="StepContext"):
        objective_fn("msc")(model, xb, cfg, torch.Generator())


def _msc_setup(B: int, S: int, encoder: str = "iwae"):
    model, x = _model()
    memory = MSCMemory.empty(B, 1, "toy")
    memory.reference = memory.reference.double()
    cfg = DEFAULT_CONFIG.with_(num_samples=S, encoder=encoder)
    return model, x.expand(B, -1), memory, StepContext(torch.arange(B), memory), cfg


def test_msc_selects_the_new_reference_from_the_reweighted_set():
    """A visit keeps the old reference or takes one of the S − 1 fresh draws (never the unused
    fresh slot 0), with P(keep) = w̄_0 of the set re-weighted under the current θ."""
    B, S = 2000, 3
    model, xb, memory, context, cfg = _msc_setup(B, S)
    memory.reference[:] = torch.linspace(-1.5, 1.5, B, dtype=torch.float64)[:, None]
    memory.visits[:] = 1
    old = memory.reference.clone()
    objective_fn("msc")(model, xb, cfg, torch.Generator().manual_seed(0), context)
    q = model.proposal(xb)
    fresh = q.sample(S, torch.Generator().manual_seed(0)).detach()  # the step's own draws
    visited = torch.cat([old[:, None], fresh[:, 1:]], 1)  # X = (r, z_2..z_S)
    match = (visited == memory.reference[:, None]).all(-1)
    assert bool(match.any(1).all())
    with torch.no_grad():
        w0 = torch.softmax(model.log_joint(xb, visited) - q.log_prob(visited), -1)[:, 0]
    kept = match[:, 0].double()
    se = (w0 * (1 - w0)).sum().sqrt().item() / B
    assert abs(kept.mean().item() - w0.mean().item()) < 4 * se
    assert 0.05 < kept.mean().item() < 0.95  # both outcomes occur


def test_msc_inclusive_encoder_follows_the_weighted_log_q():
    """encoder='inclusive': φ's gradient is that of −(1/B) Σ_b Σ_j w̄_j log q_φ(z_j | x_b)."""
    B, S = 8, 4
    model, xb, memory, context, cfg = _msc_setup(B, S, "inclusive")
    step = objective_fn("msc")(model, xb, cfg, torch.Generator().manual_seed(0), context)
    q = model.proposal(xb)
    z = q.sample(S, torch.Generator().manual_seed(0)).detach()  # first visit: X = the draws
    w = torch.softmax(model.log_joint(xb, z) - q.log_prob(z), -1).detach()
    expected = -(w * q.log_prob(z)).sum(-1).mean()
    phi = list(model.encoder.parameters())
    torch.testing.assert_close(_grads(step.loss, phi), _grads(expected, phi))


def test_ucvae_diagnostics_with_a_thinned_correction():
    """τ's mean is over the pairs that ran (thinned-out ones have τ = 0); the other numbers
    are read off the step's estimate."""
    model, x = _model()
    B, S = 200, 3
    cfg = DEFAULT_CONFIG.with_(num_samples=S, k=0, m=0, correction_prob=0.3)
    step = ucvae(model, x.expand(B, -1), cfg, torch.Generator().manual_seed(0))
    est, c = step.estimate, step.chains
    ran = est.corrected
    assert 0 < int(ran.sum()) < B
    assert c.tau_mean == pytest.approx(est.tau[ran].double().mean().item())
    assert c.tau_mean >= 2 and c.tau_max == int(est.tau.max())
    assert c.corrected == pytest.approx(ran.double().mean().item())
    assert step.log_weight_evals == pytest.approx(est.num_evals.double().mean().item())
    d = step.diagnostics  # the flat view that scripts and tables read: the same numbers
    assert d["evals"] == step.log_weight_evals and d["tau_mean"] == c.tau_mean
    assert d["decoder_evals"] == step.decoder_evals and d["truncated"] == c.truncated


@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
def test_msc_later_visit_one_pass_matches_the_two_pass_step(encoder):
    """On a later visit (reference ≠ fresh slot 0) the one-pass step is the two-pass one:
    θ follows −Σ_j w̄_j log p_θ(x, z_j) on X = (r, fresh_2..S), φ (encoder='iwae') the IWAE
    bound on fresh_1..S with θ held fixed; the decoder sees S + 1 rows per data point (S with
    the inclusive encoder), as ``decoder_evals`` says."""
    B, S = 6, 4
    model, xb, memory, context, cfg = _msc_setup(B, S, encoder)
    memory.reference[:] = torch.linspace(-1.5, 1.5, B, dtype=torch.float64)[:, None]
    memory.visits[:] = 1
    old = memory.reference.clone()
    seen = []
    hook = model.decoder.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0].numel() // inp[0].shape[-1])
    )
    step = objective_fn("msc")(model, xb, cfg, torch.Generator().manual_seed(0), context)
    hook.remove()
    per_point = S + 1 if encoder == "iwae" else S
    assert sum(seen) == per_point * B and step.decoder_evals == per_point
    q = model.proposal(xb, cfg.eps)
    fresh = q.sample(S, torch.Generator().manual_seed(0))  # the step's own draws
    X = torch.cat([old[:, None], fresh[:, 1:].detach()], 1)
    log_w = model.log_joint(xb, X) - q.detach().log_prob(X)
    w = torch.softmax(log_w.detach(), -1)
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    expected_theta = -(w * log_w).sum(-1).mean()
    torch.testing.assert_close(_grads(step.loss, theta), _grads(expected_theta, theta))
    if encoder == "iwae":
        log_w_phi = model.log_joint(xb, fresh, detach_decoder=True) - q.log_prob(fresh)
        expected_phi = -iwae_bound(log_w_phi).mean()
        torch.testing.assert_close(_grads(step.loss, phi), _grads(expected_phi, phi))


def test_sumo_step_gradients_match_the_two_pass_formulation():
    """The one-pass SUMO step against SUMO written out with two passes over the same draws
    (m + 1 per row, then K_b − 1 more, in the step's order): θ's gradient is that of
    −(1/B) Σ SUMO (z and q fixed), φ's that of (1/B) Σ SUMO² (θ fixed, z reparameterised)."""
    model, x = _model()
    B = 12
    xb = x.expand(B, -1)
    cfg = DEFAULT_CONFIG.with_(num_samples=3)
    step = objective_fn("sumo")(model, xb, cfg, torch.Generator().manual_seed(0))
    roulette = cfg.roulette()
    m = roulette.min_terms
    g = torch.Generator().manual_seed(0)
    q = model.proposal(xb, cfg.eps)
    z0 = q.sample(m + 1, g)
    k = roulette.sample(B, g, xb.device)
    rows = torch.repeat_interleave(torch.arange(B), k - 1)
    assert rows.numel() > 0 and int(k.max()) >= 3  # some rows need extra draws, unequally
    z1 = q.select(rows).sample(1, g)

    def views(xr, qr, z):  # θ's and φ's log-weights, from separate passes
        with_theta = model.log_joint(xr, z.detach()) - qr.detach().log_prob(z.detach())
        return with_theta, model.log_joint(xr, z, detach_decoder=True) - qr.log_prob(z)

    def per_row(first, extra):  # [B, m + max K]: row b's m + K_b draws, then zeros
        n = m + int(k.max())
        out = []
        for b in range(B):
            r = torch.cat([first[b], extra[rows == b, 0]])
            out.append(torch.cat([r, r.new_zeros(n - r.shape[0])]))
        return torch.stack(out)

    (t0, p0), (t1, p1) = views(xb, q, z0), views(xb[rows], q.select(rows), z1)
    lw_theta, lw_phi = per_row(t0, t1), per_row(p0, p1)
    expected = -sumo_from_log_weights(lw_theta, k, roulette).mean()
    expected = expected + sumo_from_log_weights(lw_phi, k, roulette).pow(2).mean()
    assert step.log_p == pytest.approx(sumo_from_log_weights(lw_theta, k, roulette).mean().item())
    assert step.decoder_evals == pytest.approx((m + k).double().mean().item())
    theta, phi = list(model.decoder.parameters()), list(model.encoder.parameters())
    torch.testing.assert_close(_grads(step.loss, theta), _grads(expected, theta))
    torch.testing.assert_close(_grads(step.loss, phi), _grads(expected, phi))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_only_objectives_that_run_coupled_chains_report_them(name):
    """The trainer asks ``Objective.coupled_chains`` and ``Step.chains``, never the name: the
    two must agree for every objective, and every step reports its cost."""
    model, x = _model()
    xb = x.expand(4, -1)
    obj = objective_fn(name)
    obj.init_state(model, 4, "toy")  # msc: its chains, one per example
    if name == "msc":
        obj.memory.reference = obj.memory.reference.double()
    cfg = DEFAULT_CONFIG.with_(num_samples=3)
    step = obj.train_step(model, xb, torch.arange(4), cfg, torch.Generator().manual_seed(0))
    assert obj.name == name and (step.chains is not None) == obj.coupled_chains
    assert step.log_weight_evals >= 2 and step.decoder_evals >= 2  # sumo: m + K ≥ 2
    assert (obj.state_dict() is not None) == (name == "msc")
