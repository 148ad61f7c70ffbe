"""Objectives on a VAE whose log p(x) is exact by quadrature (1-D latent).

ucvae's decoder gradient (and its inclusive-KL encoder gradient) must match the exact
gradients within 4 standard errors; IWAE's decoder gradient must not (it is biased).
Standard errors come from G independent batches (each batch gradient is a mean over
B independent replicates of the same data point).
"""

import math

import pytest
import torch

from ucvae_lite.objectives import UCVAE_DEFAULTS, decoder_gradient, iwae, ucvae
from ucvae_lite.vae import VAE

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


def _batch_grads(model, x, name, cfg, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xb = x.expand(B, -1)
    return torch.stack([-decoder_gradient(model, xb, name, cfg, g) for _ in range(G)])


def _z(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (samples.mean(0) - exact) / (samples.std(0) / samples.shape[0] ** 0.5)


def test_ucvae_decoder_gradient_unbiased_iwae_biased():
    model, x = _model()
    exact = _exact_decoder_gradient(model, x)
    cfg = UCVAE_DEFAULTS.with_(num_samples=3, k=0, m=0)
    z_u = _z(_batch_grads(model, x, "ucvae", cfg, 1), exact)
    assert z_u.abs().max() < 4, z_u
    z_i = _z(_batch_grads(model, x, "iwae", cfg, 2), exact)
    assert z_i.abs().max() > 4, z_i


@pytest.mark.parametrize("eps,k,m", [(0.0, 1, 2), (0.2, 0, 0)])
def test_ucvae_unbiased_with_defensive_proposal_and_k_m(eps, k, m):
    model, x = _model()
    exact = _exact_decoder_gradient(model, x)
    cfg = UCVAE_DEFAULTS.with_(num_samples=3, k=k, m=m, eps=eps)
    assert _z(_batch_grads(model, x, "ucvae", cfg, 3), exact).abs().max() < 4


def test_inclusive_encoder_gradient_unbiased():
    """φ-gradient of the inclusive KL: −E_p[∇_φ log q_φ(z|x)], exact by quadrature."""
    model, x = _model()
    _, z, post = _quadrature(model, x)
    q = model.encode(x)
    log_q = q.log_prob(z[None, :, None])[0]
    params = list(model.encoder[-1].parameters())  # earlier layers get zero: last is zero
    exact = torch.autograd.grad(-(post.detach() * log_q).sum(), params)
    exact = torch.cat([e.reshape(-1) for e in exact])
    cfg = UCVAE_DEFAULTS.with_(num_samples=3, k=0, m=0, encoder="inclusive")
    g = torch.Generator().manual_seed(4)
    samples = []
    for _ in range(G):
        step = ucvae(model, x.expand(B, -1), cfg, g)
        grads = torch.autograd.grad(step.loss, params)
        samples.append(torch.cat([e.reshape(-1) for e in grads]))
    assert _z(torch.stack(samples), exact).abs().max() < 4


def test_ucvae_encoder_iwae_leaves_decoder_to_the_chains():
    """With encoder='iwae', φ's loss is IWAE's but θ gets only the chain surrogate."""
    model, x = _model()
    cfg = UCVAE_DEFAULTS.with_(num_samples=4)
    step = ucvae(model, x.expand(5, -1), cfg, torch.Generator().manual_seed(0))
    d = step.diagnostics
    assert d["tau_mean"] >= 2 and d["tau_max"] >= 2 and d["truncated"] == 0
    assert d["evals"] >= 2 * 4 and 0 < d["ess"] <= 1
    ref = iwae(model, x.expand(5, -1), cfg, torch.Generator().manual_seed(0))
    assert step.bound == pytest.approx(ref.bound)  # X_0 is the IWAE forward pass's sample set
    step.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_timeouts_are_reported_not_silent():
    model, x = _model()
    cfg = UCVAE_DEFAULTS.with_(num_samples=2, k=0, m=0, max_steps=2)
    with pytest.warns(RuntimeWarning, match="truncated"):
        step = ucvae(model, x.expand(200, -1), cfg, torch.Generator().manual_seed(0))
    assert step.diagnostics["truncated"] > 0
