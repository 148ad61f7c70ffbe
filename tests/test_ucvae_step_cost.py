"""What a ucvae step spends: its ``decoder_evals`` diagnostic is what the decoder really saw,
each particle is decoded once when every graph is kept, and a data point the thinned
correction skipped costs only X_0's pass."""

import pytest
import torch

import ucvae_lite.core.machinery as machinery
import ucvae_lite.training.objectives as obj
from ucvae_lite.models.vae import VAE


def _setup() -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(40, 12, dtype=torch.float64) < 0.5).double()
    return model, x


@pytest.mark.parametrize("k,m", [(0, 0), (0, 2), (1, 2)])
@pytest.mark.parametrize("p", [1.0, 0.4])
@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
def test_decoder_evals_counts_the_decoder_rows_actually_evaluated(k, m, p, encoder):
    """``decoder_evals`` (per data point) equals the rows a forward hook on the decoder saw;
    ``particles`` counts the estimate's nonzero coefficients."""
    model, x = _setup()
    seen = []
    hook = model.decoder.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0].numel() // inp[0].shape[-1])
    )
    cfg = obj.ObjectiveConfig(num_samples=5, k=k, m=m, correction_prob=p, encoder=encoder)
    step = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(3))
    hook.remove()
    assert step.diagnostics["decoder_evals"] * x.shape[0] == pytest.approx(sum(seen))
    assert step.diagnostics["particles"] == int((step.estimate.flat_coef != 0).sum())


@pytest.mark.parametrize("k,m", [(0, 0), (1, 2), (2, 5)])
@pytest.mark.parametrize("p", [1.0, 0.4])
@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
@pytest.mark.parametrize("rejuvenate", [None, 0.5])
def test_each_particle_is_decoded_once(monkeypatch, k, m, p, encoder, rejuvenate):
    """With every graph kept, the decoder sees each log-weight evaluation exactly once: X_0's
    pass (shared by θ and φ with encoder='iwae') plus the chains' new particles, nothing
    evaluated again; so backward needs no second forward pass. The one exception is k = m = 0
    with encoder='iwae', where θ reads X_0 through the IWAE bound and the correction decodes
    again only the particle each corrected chain took from X_0 as its reference."""
    monkeypatch.setattr(machinery, "GRAPH_MIN_WORK", 0)
    model, x = _setup()
    B, S = x.shape[0], 5
    seen = []
    hook = model.decoder.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0].numel() // inp[0].shape[-1])
    )
    cfg = obj.ObjectiveConfig(
        num_samples=S, k=k, m=m, correction_prob=p, encoder=encoder, rejuvenate=rejuvenate
    )
    step = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(3))
    hook.remove()
    est = step.estimate
    extra = 0
    if encoder == "iwae" and k == m == 0:
        extra = int((est.correction().flat_coef[: B * S] != 0).sum())
        assert 0 < extra <= int(est.corrected.sum())
    assert bool(est.flat_has_graph[B * S :].all())
    assert sum(seen) == int(est.num_evals.sum()) + extra
    assert step.diagnostics["decoder_evals"] * B == pytest.approx(sum(seen))


@pytest.mark.parametrize("k,m", [(0, 0), (0, 2), (1, 2), (2, 5)])
def test_skipped_rows_cost_only_x0s_pass(monkeypatch, k, m):
    """A data point the thinned correction skipped is never evaluated again by the surrogate
    (X_0 kept θ's graph): it costs S decoder evaluations, as IWAE."""
    model, x = _setup()
    B, S = x.shape[0], 5
    rows_seen = []
    original = obj.particle_log_joint

    def spy(model_, x_):
        log_joint = original(model_, x_)

        def counting(rows, z):
            rows_seen.append(rows.clone())
            return log_joint(rows, z)

        return counting

    monkeypatch.setattr(obj, "particle_log_joint", spy)
    cfg = obj.ObjectiveConfig(num_samples=S, k=k, m=m, correction_prob=0.4)
    est = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(1)).estimate
    assert 0 < int(est.corrected.sum()) < B
    assert bool((est.num_evals[~est.corrected] == S).all())
    evaluated = torch.cat(rows_seen) if rows_seen else torch.zeros(0, dtype=torch.long)
    assert not bool((~est.corrected[evaluated]).any())
