"""The weights of the unbiased estimator H_{k:m}, as a pure function of the step t.

Lag-1 coupled chains: X_0, Y_0 ~ q^S, X_1 ~ K(X_0), then (X_{t+1}, Y_t) ~ K̄((X_t, Y_{t−1})),
and the meeting time τ = inf{t ≥ 1 : X_t = Y_{t−1}}. For integers 0 ≤ k ≤ m (Jacob, O'Leary &
Atchadé 2020):

    H_{k:m} = 1/(m−k+1) Σ_{t=k}^{m} h(X_t)
              + Σ_{t=k+1}^{τ−1} min(1, (t−k)/(m−k+1)) · ( h(X_t) − h(Y_{t−1}) ).

Where the correction weights come from: for one k, H_k = h(X_k) + Σ_{t=k+1}^{τ−1} (h(X_t) −
h(Y_{t−1})). Since Y_{t−1} has the law of X_{t−1}, the sum telescopes in expectation:
E H_k = E h(X_k) + Σ_{t>k} (E h(X_t) − E h(X_{t−1})) = lim_t E h(X_t) = E_π[h] (when τ has a
light enough tail to swap sum and expectation). H_{k:m} is the average of H_k, H_{k+1}, …, H_m;
the difference h(X_t) − h(Y_{t−1}) appears in H_l for every l from k to min(m, t−1), that is in
min(m−k+1, t−k) of the m−k+1 estimators: its weight in the average is min(1, (t−k)/(m−k+1)).

Grouped by step, H_{k:m} = Σ_t a_t h(X_t) + b_t h(Y_{t−1}) with the coefficients returned by
``hkm_weights``. The estimator credits them step by step while the chains run.
"""

from __future__ import annotations

import torch
from torch import Tensor


def validate_lags(k: int, m: int) -> None:
    """ValueError unless k and m are integers with 0 ≤ k ≤ m (H_{k:m} averages h(X_t) over
    t = k..m)."""
    if not isinstance(k, int) or not isinstance(m, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0 and m an integer, got k={k!r}, m={m!r}")
    if k > m:
        raise ValueError(f"need 0 <= k <= m (average h(X_t) over t = k..m), got k={k}, m={m}")


def correction_weight(t: int, k: int, m: int) -> float:
    """min(1, (t−k)/(m−k+1)) for t ≥ k+1, else 0: the weight of h(X_t) − h(Y_{t−1})."""
    return min(1.0, (t - k) / (m - k + 1)) if t >= k + 1 else 0.0


def hkm_weights(
    t: int, k: int, m: int, unmet: Tensor, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Coefficients (a_t, b_t) [B] of h(X_t) and h(Y_{t−1}) in H_{k:m} at step t.

    ``unmet`` [B] is True where the chains have not met by step t (τ > t): only there does the
    correction term of step t enter the sum. a_t = 1/(m−k+1)·[k ≤ t ≤ m] + c_t and b_t = −c_t,
    with c_t = min(1, (t−k)/(m−k+1))·[t ≥ k+1]·[τ > t]. ``dtype``: of the result (default:
    torch's default float type).
    """
    validate_lags(k, m)
    average = 1.0 / (m - k + 1) if k <= t <= m else 0.0
    c = unmet.to(dtype or torch.get_default_dtype()) * correction_weight(t, k, m)
    return average + c, -c
