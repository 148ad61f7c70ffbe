"""The test log-likelihood behind every results table: chunked evaluation is exact.

``evaluate.log_likelihood`` splits the data into batches and the S samples into chunks
(at most ``max_rows`` decoded at once) and combines them with a running logsumexp. Fed the
same particles, every split must give the same log (1/S) Σ_s w_s, to rounding.
"""

import math

import pytest
import torch

from ucvae_lite.models.vae import VAE
from ucvae_lite.training.evaluate import evaluate, iwae_log_likelihood


class _Pool:
    """q_φ(z | x) whose ``sample(n)`` hands out the next n of a fixed pool, in order, so that
    every way of chunking the S samples sees the same particles."""

    def __init__(self, q, pool):
        self.q, self.pool, self.used = q, pool, 0

    def sample(self, n, generator=None):
        z = self.pool[:, self.used : self.used + n]
        self.used += n
        return z

    def log_prob(self, z):
        return self.q.log_prob(z)


def _model_with_pool(S: int, n: int, monkeypatch):
    """A VAE whose encoder hands every data point the same S particles, however x is batched."""
    torch.manual_seed(0)
    model = VAE(10, (8,), 3).double()
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    encode = model.encode
    pool = encode(x).sample(S, torch.Generator().manual_seed(2)).detach()  # [n, S, D]
    row = {tuple(r.tolist()): i for i, r in enumerate(x)}

    def pooled(xb):
        index = torch.tensor([row[tuple(r.tolist())] for r in xb])
        return _Pool(encode(xb), pool[index])

    monkeypatch.setattr(model, "encode", pooled)
    return model, x, encode, pool


@pytest.mark.parametrize("batch_size,max_rows", [(7, 7 * 1000), (7, 7 * 13), (3, 5), (1, 1)])
def test_chunked_evaluation_equals_one_logsumexp(batch_size, max_rows, monkeypatch):
    S, n = 50, 7
    model, x, encode, z = _model_with_pool(S, n, monkeypatch)
    got = iwae_log_likelihood(model, x, S, batch_size=batch_size, max_rows=max_rows)
    log_w = model.log_joint(x, z) - encode(x).log_prob(z)  # all particles in one piece
    exact = torch.logsumexp(log_w, -1) - math.log(S)
    torch.testing.assert_close(got, exact.detach(), rtol=0, atol=1e-10)


def test_evaluate_reports_mean_and_standard_error():
    torch.manual_seed(0)
    model = VAE(10, (8,), 3)
    x = (torch.rand(40, 10, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    res = evaluate(model, x, 20, seed=3)
    again = evaluate(model, x, 20, seed=3)
    assert res == again  # seeded
    ll = iwae_log_likelihood(model, x, 20, generator=torch.Generator().manual_seed(3))
    assert res["ll"] == pytest.approx(ll.mean().item())
    assert res["se"] == pytest.approx(ll.std().item() / math.sqrt(40))
    assert res["n"] == 40 and res["num_samples"] == 20
