"""What a ucvae step spends: its ``decoder_evals`` diagnostic is what the decoder really saw,
and a data point the thinned correction skipped costs only the shared IWAE pass."""

import pytest
import torch

import ucvae_lite.objectives as obj
from ucvae_lite.vae import VAE


def _setup() -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(data_dim=12, hidden=(16,), latent_dim=3).double()
    x = (torch.rand(40, 12, dtype=torch.float64) < 0.5).double()
    return model, x


@pytest.mark.parametrize("k,m", [(0, 0), (0, 2), (1, 2)])
@pytest.mark.parametrize("p", [1.0, 0.4])
@pytest.mark.parametrize("encoder", ["iwae", "inclusive"])
def test_decoder_evals_counts_the_decoder_rows_actually_evaluated(k, m, p, encoder):
    """``decoder_evals`` equals the rows a forward hook on the decoder saw; ``particles``
    counts the estimate's nonzero coefficients."""
    model, x = _setup()
    seen = []
    hook = model.decoder.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0].numel() // inp[0].shape[-1])
    )
    cfg = obj.ObjectiveConfig(num_samples=5, k=k, m=m, correction_prob=p, encoder=encoder)
    step = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(3))
    hook.remove()
    assert step.diagnostics["decoder_evals"] == sum(seen)
    assert step.diagnostics["particles"] == int((step.estimate.flat_coef != 0).sum())


@pytest.mark.parametrize("k,m", [(0, 0), (0, 1), (0, 2), (1, 2), (2, 5)])
def test_skipped_rows_cost_only_the_shared_pass(monkeypatch, k, m):
    """With encoder='iwae' a skipped data point's correction is exactly zero for every (k, m)
    (not a rounding residual), so the surrogate never evaluates its particles again."""
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
    corr = est.correction()
    skipped = ~est.corrected[corr.rows]
    assert bool((corr.flat_coef[skipped] == 0).all())
    evaluated = torch.cat(rows_seen) if rows_seen else torch.zeros(0, dtype=torch.long)
    assert not bool((~est.corrected[evaluated]).any())


def test_correction_does_not_reuse_a_stale_padded_view():
    """``correction()`` builds its own padded view, whatever the estimate had cached."""
    model, x = _setup()
    S = 4
    cfg = obj.ObjectiveConfig(num_samples=S, correction_prob=0.5)
    est = obj.ucvae(model, x, cfg, torch.Generator().manual_seed(2)).estimate
    _ = est.coef  # builds the estimate's padded cache
    corr = est.correction()
    f = lambda z: z[..., 0]  # noqa: E731
    w0 = torch.softmax(est.initial_log_weights, -1)
    h0 = (w0 * est.flat_particles[: x.shape[0] * S, 0].view(-1, S)).sum(-1)
    torch.testing.assert_close(corr.expectation(f), est.expectation(f) - h0)
