"""Meeting times and cost of the coupled estimator on the linear-Gaussian model.

For S in {2, 5, 10, 20, 50} and four proposals built from the exact posterior N(μ, Σ):
  exact      q = p(z | x)                      (weights constant)
  wide       N(μ + 0.5, (1.5)² Σ)              (bounded weights)
  narrow     N(μ + 0.5, (0.6)² Σ)              (unbounded weights: heavy-tailed τ)
  defensive  0.9 · narrow + 0.1 · p(z)         (weights bounded by max p(x|z) / 0.1)
prints mean / median / 99th-percentile / max τ, log-weight evaluations per estimate (and per
S), and the wall time of ``coupled_estimate`` over that of ``iwae_estimate`` at the same S,
both measured in this run on the same batch of chains.

    python benchmarks/meeting.py [--chains 2000] [--max-steps 100000] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

import ucvae_lite as u

PROPOSALS = {
    "exact": dict(shift=0.0, scale=1.0),
    "wide": dict(shift=0.5, scale=1.5),
    "narrow": dict(shift=0.5, scale=0.6),
    "defensive": dict(shift=0.5, scale=0.6, defensive=0.1),
}


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Minimum wall time of ``fn()`` over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--chains", type=int, default=2000, help="chains (one data point, replicated)")
    ap.add_argument("--max-steps", type=int, default=100_000, help="cap; unmet chains reported")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (minimum is kept)")
    ap.add_argument("--quick", action="store_true", help="fewer chains and S values")
    args = ap.parse_args()
    sizes = [2, 10, 50] if args.quick else [2, 5, 10, 20, 50]
    chains = 500 if args.quick else args.chains
    torch.set_num_threads(1)

    model = u.LinearGaussian.example()
    x = model.sample_data(1, torch.Generator().manual_seed(0)).expand(chains, -1)
    print(f"linear-Gaussian model d={model.latent_dim}, p={model.obs_dim}; {chains} chains; k=m=0")
    header = (
        f"{'proposal':>9} {'S':>3} {'mean τ':>7} {'med':>4} {'p99':>6} {'max':>7} "
        f"{'evals':>8} {'evals/S':>8} {'unmet':>5} {'t(coupled)/t(iwae)':>19}"
    )
    print(header)
    print("-" * len(header))
    for name, kw in PROPOSALS.items():
        target = model.target(x, **kw)
        for S in sizes:
            g = torch.Generator().manual_seed(S)

            def run_iwae(target=target, S=S, g=g):
                return u.iwae_estimate(target, S, generator=g)

            def run_coupled(target=target, S=S, g=g):
                return u.coupled_estimate(
                    target, S, max_steps=args.max_steps, generator=g, on_timeout="truncate"
                )

            t_iw, _ = best_time(run_iwae, args.repeats)
            t_c, est = best_time(run_coupled, args.repeats)
            tau = est.tau[~est.truncated].double()
            ev = est.num_evals.double().mean().item()
            print(
                f"{name:>9} {S:>3} {tau.mean():7.2f} {tau.median():4.0f} "
                f"{tau.quantile(0.99):6.0f} {tau.max():7.0f} {ev:8.1f} {ev / S:8.2f} "
                f"{int(est.truncated.sum()):>5} {t_c / t_iw:19.1f}"
            )


if __name__ == "__main__":
    main()
