"""The ucvae step's graph reuse is an optimisation only: same gradients either way."""

import pytest
import torch

import ucvae_lite.core.machinery as machinery
import ucvae_lite.training.objectives as obj
from ucvae_lite.core.surrogate import log_likelihood_surrogate, particle_log_joint
from ucvae_lite.models.vae import VAE


@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
@pytest.mark.parametrize("k,m,p,middle", [(1, 2, 1.0, 60), (0, 2, 0.7, 50)])
def test_gradients_do_not_depend_on_graph_reuse(monkeypatch, encoder, k, m, p, middle):
    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(20, 12, dtype=torch.float64) < 0.5).double()
    cfg = obj.ObjectiveConfig(num_samples=6, k=k, m=m, encoder=encoder, correction_prob=p)
    grads, reused = [], []
    work = machinery.decoder_work(model)
    for particles in (0, middle, 10**9):  # every graph kept / large evaluations only / none
        monkeypatch.setattr(machinery, "GRAPH_MIN_WORK", particles * work)
        model.zero_grad()
        step = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(3))
        step.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        reused.append(int(step.estimate.flat_has_graph.sum()))
    assert reused[0] > reused[1] > reused[2]
    # with no chain graph kept, X_0's (its one decoder pass) are the only ones
    assert reused[2] == 20 * 6
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0])


def test_reuse_evaluates_only_the_particles_without_a_graph(monkeypatch):
    """With reuse, log p_θ is evaluated again only where no graph was kept; each reused
    log-weight is its own particle's: the surrogate's value moves by exactly Σ c_n log q(z_n)
    over the reused particles of each data point (log w = log p − log q), a constant in θ."""
    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(20, 12, dtype=torch.float64) < 0.5).double()
    monkeypatch.setattr(machinery, "GRAPH_MIN_WORK", 60 * machinery.decoder_work(model))
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


def test_graph_rule_keeps_a_graph_exactly_from_min_work_on():
    """An evaluation keeps θ's graph iff particles × work per particle ≥ min_work; ``select``
    keeps the rule."""
    from ucvae_lite.core.targets import ImportanceTarget

    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(5, 12, dtype=torch.float64) < 0.5).double()
    target = ImportanceTarget(model, x, model.proposal(x, detach=True))
    work = machinery.decoder_work(model)
    assert work == sum(p.numel() for p in model.decoder.parameters())
    z = target.sample(3, torch.Generator().manual_seed(0))  # 15 particles
    for min_work, kept in [(15 * work, True), (15 * work + 1, False)]:
        rule = machinery.GraphWhereWorthIt(target, work, min_work)
        assert rule.log_weight(z).requires_grad == kept
        assert rule.select(torch.arange(5)).log_weight(z).requires_grad == kept
