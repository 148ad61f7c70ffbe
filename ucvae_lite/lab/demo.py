"""The demo: coupled-chain vs IWAE estimates of a posterior mean, against the exact answer."""

from __future__ import annotations

import torch

from ucvae_lite.core.coupled import coupled_estimate
from ucvae_lite.core.iwae import iwae_estimate
from ucvae_lite.models.linear_gaussian import LinearGaussian


def demo(
    num_samples: int = 5,
    replicates: int = 4000,
    k: int = 0,
    m: int = 0,
    shift: float = 0.5,
    scale: float = 1.5,
    seed: int = 0,
) -> dict:
    """Estimate E[z | x] on the linear-Gaussian model ``replicates`` times with each estimator.

    The proposal is the exact posterior shifted by ``shift`` and ``scale`` times wider.
    Returns a dict with the exact mean, both estimators' means and standard errors (over
    replicates), z-scores, and meeting-time statistics; ``print_demo`` formats it.
    """
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussian.example()
    x = model.sample_data(1, g)
    exact, _ = model.posterior(x)
    target = model.target(x.expand(replicates, -1), shift=shift, scale=scale)
    out = {"S": num_samples, "k": k, "m": m, "replicates": replicates, "exact": exact[0]}
    for name, est in [
        ("coupled", coupled_estimate(target, num_samples, k, m, generator=g)),
        ("iwae", iwae_estimate(target, num_samples, generator=g)),
    ]:
        mu = est.mean()
        se = mu.std(0) / replicates**0.5
        out[name] = {
            "mean": mu.mean(0),
            "se": se,
            "z": (mu.mean(0) - exact[0]) / se,
            "evals": est.num_evals.double().mean().item(),
            "tau": est.tau,
        }
    return out


def print_demo(res: dict) -> None:
    c, i = res["coupled"], res["iwae"]
    tau = c["tau"].double()
    print(
        f"Linear-Gaussian model, S={res['S']}, (k, m)=({res['k']}, {res['m']}), "
        f"{res['replicates']} replicates; proposal shifted and wider than the posterior.\n"
    )
    print(f"{'':>10} {'exact':>9} {'coupled ± SE':>20} {'z':>6} {'IWAE ± SE':>20} {'z':>7}")
    for d in range(len(res["exact"])):
        print(
            f"{'E[z_' + str(d + 1) + '|x]':>10} {res['exact'][d]:9.4f} "
            f"{c['mean'][d]:10.4f} ± {c['se'][d]:.4f} {c['z'][d]:6.1f} "
            f"{i['mean'][d]:10.4f} ± {i['se'][d]:.4f} {i['z'][d]:7.1f}"
        )
    print(
        f"\nmeeting time τ: mean {tau.mean():.2f}, median {tau.median():.0f}, "
        f"99th percentile {tau.quantile(0.99):.0f}, max {tau.max():.0f}"
    )
    print(
        f"log-weight evaluations per estimate: coupled {c['evals']:.1f}, IWAE {i['evals']:.0f} "
        f"({c['evals'] / i['evals']:.2f}x)"
    )
    ok = bool((c["z"].abs() < 4).all())
    print(
        "coupled estimate within 4 SE of exact: "
        + ("yes" if ok else "NO")
        + f"; IWAE max |z| = {i['z'].abs().max():.1f} (its bias does not average away)"
    )
