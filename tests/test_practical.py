"""When is the estimator practical: per-row gradients, diagnostics, the training-loop warning,
the full-covariance encoder (all small and fast; the notebook-06 widget is tested in
test_widgets_practical.py)."""

import warnings

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from ucvae_lite import coupled_estimate, log_likelihood_surrogate, particle_log_joint
from ucvae_lite.core.surrogate import per_row_gradients  # noqa: E402
from ucvae_lite.models.vae import VAE  # noqa: E402
from ucvae_lite.studies import practical as P
from ucvae_lite.training.data import load_dataset  # noqa: E402
from ucvae_lite.training.train import DegenerateWeightsError, TrainConfig, train  # noqa: E402


def small_vae(latent: int = 2, covariance: str = "diag", seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(16, (8,), latent, covariance=covariance)


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(seed)).round()


def wide_encoder(model: VAE, log_scale: float = 4.0) -> VAE:
    """q = N(0, e^{2·log_scale} I) for every x: far wider than the posterior, so one particle
    takes nearly all the weight (the degenerate regime)."""
    last = model.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[model.latent_dim : 2 * model.latent_dim] = log_scale
    return model


class GaussianDecoderVAE(VAE):
    """A VAE with a Gaussian likelihood N(x; σ(f_θ(z)), 0.3²): per-row gradients must follow
    whatever likelihood the model defines, not assume the Bernoulli one."""

    def log_likelihood(self, x, z, detach_decoder=False):
        mean = torch.sigmoid(self.decoder(z))
        return -0.5 * ((x - mean) / 0.3).pow(2).sum(-1)


@pytest.mark.parametrize("budget,piece", [(1 << 15, 1 << 12), (8, 3), (5, 5)])
@pytest.mark.parametrize("cls", [VAE, GaussianDecoderVAE])
def test_per_row_gradients_match_the_surrogate_row_by_row(budget, piece, cls):
    # Small budgets and pieces split long rows and pad groups: every row must still get
    # exactly the gradient of its own term of the surrogate Σ_{n ∈ row} c_n log p_θ(x_row, z_n).
    torch.manual_seed(0)
    model, x = cls(16, (8,), 2), images(4)
    est = coupled_estimate(model.target(x), 4, 1, 2, generator=torch.Generator().manual_seed(0))
    g = per_row_gradients(model, x, est, budget=budget, piece=piece)
    params = list(model.decoder.parameters())
    terms = log_likelihood_surrogate(est, particle_log_joint(model, x), reduction="none")
    for b in range(4):
        ref = torch.autograd.grad(terms[b], params, retain_graph=True)
        torch.testing.assert_close(
            g[b], torch.cat([v.reshape(-1) for v in ref]), rtol=1e-4, atol=1e-5
        )


def test_gradient_variance_and_compare():
    model, x = small_vae(), images(1)[0]
    g = torch.Generator().manual_seed(0)
    iw = P.gradient_variance(model, x, "iwae", 5, replicates=20, generator=g)
    assert iw.cost == 5 and iw.total > 0 and (iw.tau == 0).all()
    c = P.compare(model, x, 5, 1, 2, replicates=20, generator=g)
    assert (c.ucvae.tau >= 2).all() and c.ucvae.truncated == 0
    assert c.matched_s == max(2, round(c.ucvae.cost)) and c.ucvae.cost >= 2 * 5
    assert c.work_ratio == pytest.approx(c.ucvae.work / c.iwae_same_s.work)
    row = P.summarise([c, c])
    assert row["tau_mean"] == pytest.approx(c.ucvae.tau.double().mean().item())
    with pytest.raises(ValueError, match="method"):
        P.gradient_variance(model, x, "elbo", 5)


def test_degenerate_regime_detected_for_a_far_too_wide_encoder():
    x = images(5)
    good = P.weight_diagnostics(small_vae(), x, 10, num_khat=0)
    bad = P.weight_diagnostics(wide_encoder(small_vae(latent=5)), x, 10, num_khat=200)
    assert good["median_ess"] > 2.0 and P.degenerate_regime(good["median_ess"], 10) is None
    assert bad["median_ess"] < P.DEGENERATE_ESS and bad["median_khat"] > 0.7
    msg = P.degenerate_regime(bad["median_ess"], 10, bad["median_khat"])
    assert msg is not None and "1/t tail" in msg and "k̂" in msg
    assert P.degenerate_regime(5.0, 10, 0.9) is not None  # heavy-tailed weights alone suffice
    assert P.degenerate_regime(5.0, 10, 0.3) is None


def test_full_covariance_encoder():
    model = small_vae(latent=3, covariance="full")
    q = model.encode(images(2))
    assert q.full and q.scale.shape == (2, 3, 3)
    assert torch.equal(q.scale, q.scale.tril()) and (q.scale.diagonal(0, 1, 2) > 0).all()
    z = q.sample(7)
    assert model.target(images(2)).log_weight(z).shape == (2, 7)
    assert model.config()["covariance"] == "full"
    with pytest.raises(ValueError, match="covariance"):
        VAE(16, (8,), 2, covariance="flow")


@pytest.fixture(scope="module")
def tiny_digits():
    return load_dataset("digits").subset(100, 40, 40)


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(objective="ucvae", epochs=1, batch_size=50, val_samples=10, out=str(tmp_path))
    return TrainConfig(**(base | kw))


def test_training_warns_in_the_degenerate_regime(tmp_path, tiny_digits):
    # A threshold above any possible ESS (S = 10) makes every check fire: the loop must warn
    # once and record the check; the default threshold on this healthy model stays quiet.
    cfg = _cfg(tmp_path, degenerate_ess=11.0)
    with pytest.warns(RuntimeWarning, match="degenerate|ESS"):
        _, hist = train(cfg, progress=False, data=tiny_digits)
    assert hist["degenerate"] == [True, True] and len(hist["check_median_ess"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, hist = train(_cfg(tmp_path / "ok"), progress=False, data=tiny_digits)
    assert hist["degenerate"] == [False, False] and min(hist["check_median_ess"]) > 1.5


def test_training_refuses_with_raise_and_ignore_overrides(tmp_path, tiny_digits):
    with pytest.raises(DegenerateWeightsError, match="Refusing"):
        train(_cfg(tmp_path, degenerate_ess=11.0, degenerate="raise"), False, False, tiny_digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cfg = _cfg(tmp_path / "ign", degenerate_ess=11.0, degenerate="ignore")
        _, hist = train(cfg, progress=False, data=tiny_digits)
    assert hist["degenerate"] == []
    with pytest.raises(ValueError, match="degenerate"):
        train(_cfg(tmp_path, degenerate="maybe"), progress=False, data=tiny_digits)
