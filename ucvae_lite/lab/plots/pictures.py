"""Pictures of what a trained VAE learned, and of the measurements that judge the estimator.

Notebooks 05 and 06 draw with these (widgets too), so the notebooks hold the idea, not the
plotting. Like ``viz``, every helper draws on Axes it is given, or returns a new ``Figure``
(``viz.new_figure``: no pyplot state), and labels every axis it draws.

* ``reconstructions``, ``samples``, ``latent_manifold``: images from the decoder's Bernoulli
  means σ(f_θ(z)) (the probability of each pixel being on).
* ``posterior_vs_encoder``: for a 2-D latent, the exact posterior p_θ(z | x) on a grid
  (``vae.posterior_grid``) filled, the encoder's q_φ(z | x) as contour lines.
* ``learning_curves``, ``training_meeting_times``: a training history.
* ``plot_weight_diagnostics``, ``work_bars``: notebook 06's measurements (the diagnostics
  themselves are ``evaluate.weight_diagnostics``; its MSE against compute is
  ``viz.mse_vs_budget``, shared with notebook 07).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from ucvae_lite.lab.plots import viz
from ucvae_lite.models.vae import VAE, LatentGrid
from ucvae_lite.studies.practical import DEGENERATE_KHAT

COLORS = {"elbo": "tab:blue", "iwae": "tab:orange", "ucvae": "tab:green", "iwae_2d": "tab:purple"}


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i}")


def _images(axes, images: Tensor, shape: tuple[int, int], label: str | None = None) -> None:
    """One image per Axes (grey levels 0..1, no ticks); ``label`` on the first one's y axis."""
    for j, (ax, img) in enumerate(zip(axes, images, strict=True)):
        ax.imshow(img.detach().reshape(shape).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0 and label:
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)


@torch.no_grad()
def decoder_means(model: VAE, z: Tensor) -> Tensor:
    """σ(f_θ(z)): each pixel's probability of being on, for latents z [n, D] -> [n, P]."""
    return torch.sigmoid(model.decoder(z))


@torch.no_grad()
def reconstructions(x: Tensor, models: dict[str, VAE], shape: tuple[int, int]) -> Figure:
    """Row 1: the binary images x [n, P]; one row per model: σ(f_θ(μ_φ(x))), the decoder's
    pixel probabilities at the encoder's mean (what the model "sees" in each image)."""
    fig = viz.new_figure(ncols=len(x), nrows=1 + len(models), size=(0.85, 0.9))
    grid = np.array(fig.axes).reshape(1 + len(models), len(x))
    _images(grid[0], x, shape, "data")
    for row, (name, model) in zip(grid[1:], models.items(), strict=True):
        _images(row, decoder_means(model, model.encode(x).loc), shape, name)
    fig.suptitle("test images and their reconstructions σ(f_θ(μ_φ(x)))", fontsize=10)
    return fig


@torch.no_grad()
def samples(
    models: dict[str, VAE], n: int, shape: tuple[int, int], generator: torch.Generator
) -> Figure:
    """One row per model: σ(f_θ(z)) for n draws z ~ N(0, I) (the same draws for every model
    with the same latent size)."""
    fig = viz.new_figure(ncols=n, nrows=len(models), size=(0.85, 0.9))
    grid = np.array(fig.axes).reshape(len(models), n)
    state = generator.get_state()
    for row, (name, model) in zip(grid, models.items(), strict=True):
        generator.set_state(state)
        z = torch.randn(n, model.latent_dim, generator=generator, device=generator.device)
        _images(row, decoder_means(model, z), shape, name)
    fig.suptitle("samples: pixel probabilities σ(f_θ(z)), z ~ N(0, I)", fontsize=10)
    return fig


@torch.no_grad()
def latent_manifold(
    ax: Axes, model: VAE, shape: tuple[int, int], n: int = 12, limit: float = 2.0
) -> Axes:
    """A 2-D latent's decoder means σ(f_θ(z)) tiled on an n × n grid of z over [−limit, limit]²."""
    if model.latent_dim != 2:
        raise ValueError(f"the manifold picture needs a 2-D latent, got {model.latent_dim}")
    h, w = shape
    axis = torch.linspace(-limit, limit, n, device=next(model.parameters()).device)
    canvas = np.zeros((n * h, n * w))
    for i, z2 in enumerate(axis.flip(0)):  # top row: largest z₂
        z = torch.stack([axis, z2.expand(n)], -1)
        imgs = decoder_means(model, z).reshape(n, h, w).cpu().numpy()
        canvas[i * h : (i + 1) * h] = np.concatenate(list(imgs), axis=1)
    ax.imshow(canvas, cmap="gray_r", extent=(-limit, limit, -limit, limit), vmin=0, vmax=1)
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_title("decoder means over the latent plane", fontsize=9)
    return ax


def posterior_vs_encoder(ax: Axes, grid: LatentGrid, q_loc: Tensor, q_scale: Tensor) -> Axes:
    """For one image: the exact posterior p_θ(z | x) on the grid (filled contours) and the
    encoder's density q_φ(z | x) = N(q_loc, diag q_scale²) (black lines holding 50% and 90% of
    its mass), zoomed to where either has its mass. The filled bands hold 99.99%, 99.9%, 99%,
    90%, 75%, 50% and 25% of the posterior's mass, so that a small second mode shows."""
    a1, a2 = (a.detach().cpu().numpy() for a in grid.axes)
    post = grid.posterior_weights[0].detach().reshape(len(a1), len(a2)).T.cpu()  # [z₂, z₁]
    z1, z2 = np.meshgrid(a1, a2)
    loc, scale = q_loc.detach().cpu().double(), q_scale.detach().cpu().double()
    zz = torch.tensor(np.stack([z1, z2], -1), device="cpu")
    log_q = -0.5 * (((zz - loc) / scale) ** 2).sum(-1) - scale.log().sum() - math.log(2 * math.pi)
    q = (log_q.exp() * grid.cell).numpy()
    masses = (0.9999, 0.999, 0.99, 0.9, 0.75, 0.5, 0.25)  # of the posterior, filled
    ax.contourf(z1, z2, post.numpy(), levels=_mass_levels(post.numpy(), masses), cmap="Blues")
    ax.contour(z1, z2, q, levels=_mass_levels(q, (0.9, 0.5))[:-1], colors="k", linewidths=1)
    mean = grid.expectation(lambda z: z)[0].detach().cpu()
    ax.plot(*mean.numpy(), "+", color="tab:blue", ms=10, mew=2, label="posterior mean")
    ax.plot(*loc.numpy(), "x", color="k", ms=7, label="encoder mean μ_φ(x)")
    _zoom(ax, (a1, a2), post.numpy(), q, mass=0.9999)
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def _mass_levels(cells: np.ndarray, masses) -> list[float]:
    """Increasing density levels whose upper sets hold the given masses, topped by the largest
    density (so ``contourf`` fills up to the peak)."""
    flat = np.sort(cells.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    levels = {float(flat[min(np.searchsorted(cum, m), len(flat) - 1)]) for m in masses}
    return sorted(levels | {float(flat[0]) * 1.001})


def _zoom(ax: Axes, axes: tuple[np.ndarray, np.ndarray], *densities: np.ndarray,
          mass: float = 0.999) -> None:  # fmt: skip
    """Limits that hold ``mass`` of each density ([z₂, z₁] cells), with a margin, in the grid."""
    for dim, (axis, setter) in enumerate(zip(axes, (ax.set_xlim, ax.set_ylim), strict=True)):
        lo, hi = [], []
        for d in densities:
            marg = d.sum(dim)  # d is [z₂, z₁]: summing over rows leaves z₁'s marginal
            cum = np.cumsum(marg) / marg.sum()
            lo.append(axis[np.searchsorted(cum, (1 - mass) / 2)])
            hi.append(axis[min(np.searchsorted(cum, 1 - (1 - mass) / 2), len(axis) - 1)])
        a, b = min(lo), max(hi)
        pad = 0.1 * (b - a) + 1e-3
        setter(max(a - pad, axis[0]), min(b + pad, axis[-1]))


def learning_curves(ax: Axes, histories: dict[str, dict], skip: float = 0.1) -> Axes:
    """Validation bound (IWAE-100, per epoch) of each run; the first ``skip`` fraction of
    epochs is left out so the plateau is readable."""
    for i, (name, h) in enumerate(histories.items()):
        v = np.asarray(h["val_ll"], dtype=float)
        start = int(len(v) * skip)
        ax.plot(
            np.arange(start + 1, len(v) + 1), v[start:], lw=1, color=_color(name, i), label=name
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation log-lik. (IWAE-100, nats)")
    ax.legend(fontsize=8)
    return ax


def training_meeting_times(axes, history: dict, num_samples: int) -> None:
    """Two panels for a ucvae history: mean and max τ per epoch (log scale); log-weight
    evaluations per image per step, relative to IWAE-S's S."""
    epoch = np.arange(1, len(history["tau_mean"]) + 1)
    a, b = axes
    a.plot(epoch, np.asarray(history["tau_max"], float), lw=0.6, color="tab:red", label="max τ")
    a.plot(epoch, np.asarray(history["tau_mean"], float), lw=1, color="tab:green", label="mean τ")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_ylabel("meeting time τ (per-epoch mean / max)")
    a.legend(fontsize=8)
    b.plot(epoch, np.asarray(history["evals"], float) / num_samples, lw=1, color="tab:green")
    b.set_xlabel("epoch")
    b.set_ylabel(f"evaluations per image / IWAE-{num_samples}'s")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))


def plot_weight_diagnostics(
    axes, diags: dict[str, tuple[Tensor, Tensor]], num_samples: int, min_ess: float
) -> None:
    """Histograms over images of within-set ESS / S and of PSIS k̂, one colour per proposal,
    with the thresholds of ``practical.degenerate_regime`` dashed."""
    a, b = axes
    all_khat = np.concatenate([np.asarray(k, float) for _, k in diags.values()])
    khat_bins = np.linspace(min(all_khat.min(), 0.0), max(all_khat.max(), 1.0), 25)
    for i, (label, (ess, khat)) in enumerate(diags.items()):
        a.hist(np.asarray(ess, float) / num_samples, bins=12, range=(0, 1), alpha=0.6,
               color=f"C{i}", label=label)  # fmt: skip
        b.hist(np.asarray(khat, float), bins=khat_bins, alpha=0.6, color=f"C{i}", label=label)
    a.axvline(min_ess / num_samples, color="k", ls="--", lw=1)
    a.set(xlabel="within-set ESS / S (per image)", ylabel="images")
    a.set_title("ESS (dashed: degenerate below)", fontsize=9)
    b.axvline(DEGENERATE_KHAT, color="k", ls="--", lw=1)
    b.set(xlabel="PSIS k̂ (per image)", ylabel="images")
    b.set_title(f"k̂ (dashed: {DEGENERATE_KHAT})", fontsize=9)
    a.legend(fontsize=8)


weight_diagnostics = plot_weight_diagnostics  # the old name, in notebook 06's stored .ipynb


def work_bars(ax: Axes, rows: dict[str, float], title: str = "variance × cost") -> Axes:
    """Bars of variance × cost (the variance left per log-weight evaluation; lower is better)."""
    names = list(rows)
    ax.bar(range(len(names)), [rows[n] for n in names], color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("tr Var × evaluations")
    ax.set_title(title, fontsize=9)
    return ax
