"""The ucvae step's graph reuse is an optimisation only: same gradients either way."""

import pytest
import torch

import ucvae_lite.machinery as machinery
import ucvae_lite.objectives as obj
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
    assert reused[0] > reused[1] > reused[2] > 0  # X_0 always keeps its graph
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0])
