"""Every tensor is created on its inputs' device, checked without a GPU.

Inside ``with torch.device("meta")`` every factory call that does not name a device (``torch.
zeros(n)``, ``torch.arange(n)``, ``torch.tensor(...)``, ``torch.eye(d)``) makes a *meta* tensor:
no data. The inputs here live on the CPU, so such a tensor meets a CPU tensor and torch
raises "Tensor on device cpu is not on the expected device meta" (or fails on ``.item()``).
Code that creates its tensors on its inputs' device runs unchanged. On a GPU the same bug is
a crash ("expected all tensors to be on the same device").
"""

import math

import pytest
import torch
from conftest import NoSelect

import ucvae_lite as u
from ucvae_lite.core import diagnostics as D
from ucvae_lite.core.surrogate import per_row_gradients
from ucvae_lite.lab import teaching as T
from ucvae_lite.models.vae import VAE
from ucvae_lite.peers.msc import MSCMemory
from ucvae_lite.peers.sumo import sumo_log_marginal
from ucvae_lite.studies import practical as P
from ucvae_lite.training import evaluate as E
from ucvae_lite.training import objectives as O


@pytest.fixture
def meta_default():
    """Factories without a device make meta tensors while the test body runs."""
    with torch.device("meta"):
        yield


def test_the_check_catches_a_tensor_made_on_the_default_device(meta_default):
    cpu = torch.ones(3, device="cpu")
    with pytest.raises((RuntimeError, NotImplementedError)):
        (cpu + torch.arange(3)).sum().item()  # the bug this file looks for
    assert (cpu + torch.arange(3, device=cpu.device)).sum().item() == 6.0


@pytest.fixture(scope="module")
def lg():
    model = u.LinearGaussian.example(latent_dim=2, obs_dim=4, sigma=0.7, seed=0)
    return model, model.sample_data(3, torch.Generator().manual_seed(1))


def test_linear_gaussian_and_estimators(lg, meta_default):
    model, x = lg
    g = torch.Generator().manual_seed(0)
    model.log_marginal(x).sum().item()
    model.posterior_moments(x)
    target = model.target(x.repeat_interleave(20, 0), shift=0.5, scale=1.5, defensive=0.1)
    for tgt in (target, NoSelect(target)):
        z0 = target.sample(3, g)
        est = u.coupled_estimate(
            tgt, 3, 1, 2, generator=g, move=u.RandomWalkMH(0.3), initial=(z0, target.log_weight(z0))
        )
        assert est.tau.device.type == "cpu"
        est.mean().sum().item()
        est.second_moment()
        est.initial_ess.sum().item()
    est = u.coupled_estimate(target, 2, max_steps=2, on_timeout="truncate", generator=g)
    assert est.particles.device.type == "cpu"
    u.iwae_estimate(target, 4, g).mean().sum().item()
    sumo_log_marginal(target, g, cutoff=5).sum().item()
    u.sample_extended_target(
        target, 3, lambda gen: model.posterior(x.repeat_interleave(20, 0))[0], g
    )
    D.tau_summary(est.tau)
    D.survival(est.tau)


def test_teaching(lg, meta_default):
    model, x = lg
    g = torch.Generator().manual_seed(0)
    run = T.lag_coupled_chains(model.target(x, shift=0.5, scale=1.5), 3, 2, generator=g)
    T.h_km_terms(run, 1, 2).total.sum().item()
    T.run_cis_chain(model.target(x), 3, 4, generator=g).sum().item()
    T.exact_gradient(model, x[:1])
    z = T.posterior_draws(model, x[:1], 10, g)
    T.joint_gradients(model, x[:1], z).sum().item()
    T.variance_comparison(model, x, 3, 0, 0, 0.5, 1.5, 20, 40, g)
    T.iwae_bound_samples(model.target(x), 3, 5, g)
    from ucvae_lite.studies import landscape as L

    q = model.proposal(x[:1].expand(8, -1))
    samples = [L.gradient_samples(L.Method(k, k, 3, age=2), model, x[:1], q, 8, g) for k in
               ("iwae", "ucvae", "sumo", "msc")]  # fmt: skip
    L.minibatch_error_budget(
        "b", samples[:1] * 2, torch.stack([T.exact_gradient(model, x[:1])] * 2)
    )


def _vae(**kw) -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(12, (8,), 3, **kw)
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    return model, x


@pytest.fixture(
    params=[{}, {"covariance": "full"}, {"flow_layers": 2}], ids=["diag", "full", "flow"]
)
def vae(request):
    return _vae(**request.param)  # made on the CPU, before the meta default is set


def test_vae_objectives_and_evaluation(vae, meta_default):
    model, x = vae
    g = torch.Generator().manual_seed(0)
    for name in ("elbo", "iwae", "ucvae", "sumo"):
        O.objective(name)(model, x, O.ObjectiveConfig(num_samples=3), g).loss.backward()
    cfg = O.ObjectiveConfig(num_samples=3, encoder="inclusive", eps=0.1, correction_prob=0.5)
    O.ucvae(model, x, cfg, g).loss.backward()
    memory = MSCMemory.empty(x.shape[0], model.latent_dim, "toy", device=x.device)
    context = O.StepContext(torch.arange(x.shape[0], device=x.device), memory)
    O.msc(model, x, cfg, g, context).loss.backward()
    res = E.evaluate(model, x, 7, batch_size=4, max_rows=10)
    assert math.isfinite(res["ll"])
    model.encoder_scale(x).sum().item()


@pytest.fixture(scope="module")
def tiny_digits():
    from ucvae_lite.training.data import load_dataset

    return load_dataset("digits").subset(60, 20, 20)


def test_training_loop(tiny_digits, tmp_path, meta_default):
    from ucvae_lite.training.train import TrainConfig, train

    cfg = TrainConfig(epochs=2, batch_size=30, val_samples=4, hidden=[8], out=str(tmp_path))
    train(cfg, progress=False, data=tiny_digits)
    _, hist = train(cfg.__class__(**{**cfg.__dict__, "epochs": 3}), True, False, tiny_digits)
    assert hist["epoch"] == [1, 2, 3]


def test_practical_and_per_row_gradients(vae, meta_default):
    model, x = vae
    g = torch.Generator().manual_seed(0)
    est = u.coupled_estimate(model.target(x), 3, 1, 2, generator=g)
    per_row_gradients(model, x, est, budget=8, piece=3).sum().item()
    P.weight_diagnostics(model, x, 4, num_sets=3, num_khat=20, generator=g)
    P.compare(model, x[0], 3, 1, 2, replicates=4, generator=g, rejuvenate=0.5)


def test_lab_helpers(lg, meta_default):
    """Notebooks 00-04's helpers: budget, exact moments, recorded chains, block gradients."""
    from ucvae_lite.studies.budget import crossover_budget, error_budget

    model, x = lg
    g = torch.Generator().manual_seed(0)
    x1 = x[:1]
    assert math.isfinite(T.weight_moment(model, x1, 2, 0.5, 1.5))
    T.iwae_curve(model, x1, [1, 3], 20, 0.5, 1.5, g, groups=4)
    target = model.target(x1.expand(20, -1), shift=0.5, scale=1.5)
    d = T.extended_target_checks(model, x1, target, 3, g)
    d["wbar"].sum().item()
    state = T.stationary_cis_state(model, x1, target, 3, g)
    T.record_cis_chain(target, 3, 2, g, initial=state)
    T.move_probability(target, state, 2, g)
    run = T.lag_coupled_chains(model.target(x, shift=0.5, scale=1.5), 3, 3, generator=g)
    T.selected_slots(run, 1)[0].sum().item()
    T.single_start_average(run, 1, 3).sum().item()
    est = u.coupled_estimate(target, 3, generator=g)
    eb = error_budget(est.mean(), model.posterior(x1)[0][0], est.num_evals)
    iw = u.iwae_estimate(target, 3, g)
    crossover_budget(eb, error_budget(iw.mean(), model.posterior(x1)[0][0] + 1.0, 3))
    T.group_mean_gradients(model, x1, iw, groups=4).sum().item()


def test_grid_and_bias_noise_at_equal_compute(meta_default):
    """Notebook 06's measurements: the grid posterior, the exact gradient, estimator samples."""
    from ucvae_lite.models.vae import posterior_grid

    with torch.device("cpu"):  # the inputs live on the CPU; the library must follow them
        torch.manual_seed(0)
        model = VAE(12, (8,), 2)
        x = (torch.rand(2, 12, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    g = torch.Generator().manual_seed(0)
    posterior_grid(model, x, 4.0, 11).log_marginal.sum().item()
    exact = P.exact_output_bias_gradient(model, x, 11)
    budgets, checks = P.output_bias_budgets(model, x, exact, (2,), 3, replicates=4, generator=g)
    budgets[0].crossover(budgets[1])
    P.uncovered_mass(model, x, n=11)
    assert math.isfinite(budgets[0].variance) and checks["tau"].device.type == "cpu"
