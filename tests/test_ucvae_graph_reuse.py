"""The ucvae step's graph reuse is an optimisation only: same gradients either way."""

import pytest
import torch

import ucvae_lite.machinery as machinery
import ucvae_lite.objectives as obj
from ucvae_lite.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.vae import VAE


@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
def test_gradients_do_not_depend_on_graph_reuse(monkeypatch, encoder):
    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(20, 12, dtype=torch.float64) < 0.5).double()
    cfg = obj.ObjectiveConfig(num_samples=6, k=1, m=2, encoder=encoder)
    grads, reused = [], []
    for threshold in (0, 60, 10**9):  # every graph kept / large ones only / none
        monkeypatch.setattr(machinery, "GRAPH_MIN_PARTICLES", threshold)
        model.zero_grad()
        step = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(3))
        step.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        reused.append(int(step.estimate.flat_has_graph.sum()))
    assert reused[0] > reused[1] > reused[2]
    # X_0 keeps θ's graph only where the surrogate needs it for h(X_0): with encoder='iwae'
    # the encoder's IWAE pass supplies that term, and X_0 is evaluated again only if corrected
    assert (reused[2] > 0) == (encoder == "inclusive")
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0])


def test_reuse_evaluates_only_the_particles_without_a_graph(monkeypatch):
    """With reuse, log p_θ is evaluated again only where no graph was kept; each reused
    log-weight is its own particle's: the surrogate's value moves by exactly Σ c_n log q(z_n)
    over the reused particles of each data point (log w = log p − log q), a constant in θ."""
    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(20, 12, dtype=torch.float64) < 0.5).double()
    monkeypatch.setattr(machinery, "GRAPH_MIN_PARTICLES", 60)
    cfg = obj.ObjectiveConfig(num_samples=6, k=1, m=2)
    est = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(3)).estimate
    evaluated = []
    log_joint = particle_log_joint(model, x)

    def counting(rows, z):
        evaluated.append(len(rows))
        return log_joint(rows, z)

    reused = log_likelihood_surrogate(est, counting, "none", reuse_log_weights=True)
    live = est.flat_coef != 0
    assert sum(evaluated) == int((live & ~est.flat_has_graph).sum()) > 0
    assert sum(evaluated) < int(live.sum())
    fresh = log_likelihood_surrogate(est, log_joint, "none")
    q = model.proposal(x)
    rows, z = est.rows[live], est.flat_particles[live]
    log_q = q.select(rows).log_prob(z[:, None])[:, 0]
    keep = est.flat_has_graph[live]
    shift_reused = torch.zeros(20, dtype=torch.float64).index_add(
        0, rows[keep], (est.flat_coef[live] * log_q)[keep]
    )
    torch.testing.assert_close(fresh - reused, shift_reused)
