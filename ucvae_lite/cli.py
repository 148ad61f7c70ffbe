"""Command line: ``python -m ucvae_lite COMMAND``; ``--help`` on each command lists its flags.

Bad input (a flag value out of range, a missing dataset or checkpoint, a file that is not a
checkpoint) is answered with one line on stderr, ``error: <what is wrong and what to change>``,
and exit status 2, before any data is loaded or any training starts. ``--debug`` shows the
full traceback instead.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import NoReturn


class UsageError(ValueError):
    """A command-line value the commands refuse; ``main`` prints it as one ``error:`` line."""


def _require(ok: bool, message: str) -> None:
    """Raise ``UsageError(message)`` unless ``ok``."""
    if not ok:
        raise UsageError(message)


def _at_least(value: int | None, low: int, flag: str, what: str) -> None:
    """``value`` (None = the default) must be an integer >= ``low``."""
    _require(
        value is None or value >= low,
        f"{flag} must be at least {low} ({what}), got {value}; pass {flag} {low} or more",
    )


def _check_device(device: str) -> None:
    """The torch device must exist here (a cheap allocation, before any data is loaded)."""
    import torch

    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--device {device!r} is not usable here ({reason}); pass --device cpu"
        ) from e


def _check_data_dir(data_dir: str | None, dataset: str | None = None) -> None:
    """``--data-dir`` must be a directory, and only mnist / fashion-mnist read one."""
    if data_dir is None:
        return
    _require(
        dataset != "digits",
        "--data-dir is only read by --dataset mnist or fashion-mnist (digits comes with "
        "scikit-learn); drop --data-dir or name one of those datasets",
    )
    _require(
        Path(data_dir).is_dir(),
        f"--data-dir {data_dir} is not a directory; pass the directory that holds the IDX "
        "files train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]",
    )


def _check_demo(args: argparse.Namespace) -> None:
    """Flag values of ``demo``."""
    _at_least(args.num_samples, 2, "--num-samples", "S particles per set")
    _at_least(args.replicates, 2, "--replicates", "standard errors need two estimates")
    _at_least(args.k, 0, "--k", "the first chain step averaged")
    _require(
        args.m >= args.k,
        f"--m {args.m} is below --k {args.k}: H_k:m averages chain steps k..m; "
        f"pass --m {args.k} or more",
    )
    _require(math.isfinite(args.shift), f"--shift must be a finite number, got {args.shift}")
    _require(
        math.isfinite(args.scale) and args.scale > 0,
        f"--scale must be a positive width ratio, got {args.scale}; pass e.g. --scale 1.5",
    )


def _check_training(args: argparse.Namespace) -> None:
    """Flag values shared by ``train`` and ``reproduce``; nothing is loaded or trained yet."""
    from ucvae_lite.training.objectives import UCVAE_DEFAULTS as D

    _at_least(args.num_samples, 2, "--num-samples", "S samples per data point")
    _at_least(args.k, 0, "--k", "the first chain step averaged")
    _at_least(args.m, 0, "--m", "the last chain step averaged")
    k = D.k if args.k is None else args.k
    m = D.m if args.m is None else args.m
    m_flag = f"--m {m}" + (" (the default)" if args.m is None else "")
    k_flag = f"--k {k}" + (" (the default)" if args.k is None else "")
    _require(
        k <= m,
        f"{k_flag} is larger than {m_flag}: H_k:m averages chain steps k..m; "
        f"pass --m {k} or more, or a smaller --k",
    )
    _require(
        args.eps is None or 0.0 <= args.eps < 1.0,
        f"--eps must be in [0, 1) (the weight of N(0, I) in the proposal), got {args.eps}; "
        "pass e.g. --eps 0.1, or 0 for the plain encoder",
    )
    _at_least(args.max_steps, 1, "--max-steps", "the chain step cap")
    _require(
        args.max_steps is None or args.max_steps >= m,
        f"--max-steps {args.max_steps} is below {m_flag}: the chains must run m steps; "
        f"pass --max-steps {m} or more",
    )
    _require(
        args.correction_prob is None or 0.0 < args.correction_prob <= 1.0,
        f"--correction-prob must be in (0, 1] (the probability of computing a data point's "
        f"bias correction), got {args.correction_prob}; pass e.g. --correction-prob 0.25",
    )
    _at_least(args.sumo_cutoff, 1, "--sumo-cutoff", "where the roulette's tail turns geometric")
    _at_least(args.sumo_min_terms, 1, "--sumo-min-terms", "the IWAE bound kept whole")
    _require(
        args.rejuvenate is None or (math.isfinite(args.rejuvenate) and args.rejuvenate > 0),
        f"--rejuvenate must be a positive scale (a multiple of the encoder's sigma), got "
        f"{args.rejuvenate}; pass e.g. --rejuvenate 1.0, or leave it out for no MH move",
    )
    _at_least(args.latent_dim, 1, "--latent-dim", "the latent size")
    _require(
        args.subset is None or min(args.subset) >= 1,
        f"--subset sizes must be at least 1, got {args.subset}; pass e.g. --subset 10000 2000 2000",
    )
    bad_hidden = [h for h in args.hidden or [] if h < 1]
    _require(
        not bad_hidden,
        f"--hidden sizes must be at least 1, got {' '.join(map(str, args.hidden or []))}; "
        "pass e.g. --hidden 64 64",
    )
    _at_least(args.flow_layers, 0, "--flow-layers", "0 = no flow")
    _require(
        args.flow_layers == 0 or args.covariance == "diag",
        "--flow-layers > 0 builds the flow on a diagonal Gaussian; drop --covariance full "
        "or pass --flow-layers 0",
    )
    _at_least(args.epochs, 1, "--epochs", "training epochs")
    _at_least(args.batch_size, 1, "--batch-size", "images per minibatch")
    _require(
        math.isfinite(args.lr) and args.lr > 0,
        f"--lr must be a positive learning rate, got {args.lr}; pass e.g. --lr 1e-3",
    )
    _at_least(args.val_samples, 1, "--val-samples", "S of the validation bound")
    _at_least(args.patience, 1, "--patience", "epochs without improvement")
    _require(
        args.time_limit is None or args.time_limit > 0,
        f"--time-limit must be a positive number of seconds, got {args.time_limit}",
    )
    _require(
        args.decoder_limit is None
        or (args.decoder_limit > 0 and math.isfinite(args.decoder_limit)),
        f"--decoder-limit must be a positive number of decoder evaluations, "
        f"got {args.decoder_limit}",
    )
    _at_least(args.eval_samples, 1, "--eval-samples", "S of the test bound")
    _at_least(args.threads, 1, "--threads", "torch CPU threads")
    _require(
        not Path(args.out).exists() or Path(args.out).is_dir(),
        f"--out {args.out} is a file; pass a directory for checkpoint.pt",
    )
    _check_data_dir(args.data_dir, args.dataset)
    _fast(args)  # a bad UCVAE_FAST is reported now, not after training
    _check_device(args.device)


def _check_reproduce(args: argparse.Namespace) -> None:
    """Flag values of ``reproduce``."""
    _check_training(args)
    seeds = args.seeds or []
    _require(
        len(set(seeds)) == len(seeds),
        f"--seeds repeats a seed ({' '.join(map(str, seeds))}); pass distinct seeds",
    )
    _require(
        not Path(args.figures).exists() or Path(args.figures).is_dir(),
        f"--figures {args.figures} is a file; pass a directory for the tables and figures",
    )
    from ucvae_lite.studies.reproduce import VARIANTS

    unknown = [o for o in args.objectives or [] if o not in VARIANTS]
    _require(
        not unknown,
        f"--objectives: unknown {' '.join(unknown)}; choose from {' '.join(VARIANTS)}",
    )
    _require(
        args.time_budget > 0 and math.isfinite(args.time_budget),
        f"--time-budget must be a positive number of seconds, got {args.time_budget}",
    )
    _require(
        args.decoder_budget is None
        or (args.decoder_budget > 0 and math.isfinite(args.decoder_budget)),
        f"--decoder-budget must be a positive number of decoder evaluations, "
        f"got {args.decoder_budget}",
    )
    _at_least(args.jobs, 1, "--jobs", "runs at once")


def _check_evaluate(args: argparse.Namespace) -> None:
    """Flag values of ``evaluate`` (the checkpoint itself is checked by ``load_model``)."""
    _at_least(args.eval_samples, 1, "--eval-samples", "S of the test bound")
    _check_data_dir(args.data_dir)
    _fast(args)  # a bad UCVAE_FAST is reported now
    _check_device(args.device)


def _fast(args: argparse.Namespace) -> bool:
    """``--fast`` or the environment's fast mode (``runtime.fast_mode``)."""
    from ucvae_lite.training.runtime import fast_mode

    return args.fast or fast_mode()


def _demo(args: argparse.Namespace) -> None:
    from ucvae_lite.lab.demo import demo, print_demo

    print_demo(
        demo(args.num_samples, args.replicates, args.k, args.m, args.shift, args.scale, args.seed)
    )


def _train_config(args: argparse.Namespace, objective: str):
    """A TrainConfig from the shared training flags; fast mode shortens the run."""
    from ucvae_lite.training.train import TrainConfig

    fast = _fast(args)
    epochs = args.epochs if args.epochs is not None else (3 if fast else _EPOCHS[args.dataset])
    subset = args.subset
    if subset is None and fast and args.dataset != "digits":
        subset = [2000, 500, 500]
    return TrainConfig(
        dataset=args.dataset,
        objective=objective,
        num_samples=args.num_samples,
        k=args.k,
        m=args.m,
        eps=args.eps,
        encoder=args.encoder,
        max_steps=args.max_steps,
        rejuvenate=args.rejuvenate,
        correction_prob=args.correction_prob,
        sumo_cutoff=args.sumo_cutoff,
        sumo_min_terms=args.sumo_min_terms,
        clock=args.clock,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        covariance=args.covariance,
        flow_layers=args.flow_layers,
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_samples=20 if fast else args.val_samples,
        patience=args.patience,
        time_limit=args.time_limit,
        decoder_limit=args.decoder_limit,
        binarization=args.binarization,
        data_dir=args.data_dir,
        subset=subset,
        device=args.device,
        threads=args.threads,
        out=args.out,
    )


def _iwae_decoder_evals(cfg) -> float:
    """Decoder evaluations IWAE-S spends in ``cfg.epochs`` epochs: epochs × the training
    images actually loaded (``--subset`` may ask for more than there are) × S."""
    from ucvae_lite.training.data import load_for_config

    data = load_for_config(cfg.dataset, cfg.data_dir, cfg.binarization, 0, cfg.subset)
    return float(cfg.epochs * len(data.train) * cfg.objective_config().num_samples)


def _eval_samples(args: argparse.Namespace) -> int:
    from ucvae_lite.training.evaluate import EVAL_SAMPLES, FAST_EVAL_SAMPLES

    if args.eval_samples is not None:
        return args.eval_samples
    return FAST_EVAL_SAMPLES if _fast(args) else EVAL_SAMPLES


def _train(args: argparse.Namespace) -> None:
    from ucvae_lite.training.data import load_for_config
    from ucvae_lite.training.evaluate import evaluate
    from ucvae_lite.training.train import train

    cfg = _train_config(args, args.objective)
    data = load_for_config(cfg.dataset, cfg.data_dir, cfg.binarization, cfg.seed, cfg.subset)
    model, hist = train(cfg, resume=args.resume, progress=not args.quiet, data=data)
    n = _eval_samples(args)
    res = evaluate(model, data.test.to(cfg.device), n, seed=cfg.seed)
    print(
        f"{cfg.objective} on {cfg.dataset}: {hist['epoch'][-1]} epochs, "
        f"{hist['time'][-1]:.1f}s; test log-likelihood (IWAE-{n}) "
        f"{res['ll']:.3f} ± {res['se']:.3f}; checkpoint {cfg.out}/checkpoint.pt"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from ucvae_lite.training.data import load_for_config
    from ucvae_lite.training.evaluate import CHECKPOINT_KEYS, evaluate, load_model

    model, ckpt = load_model(args.checkpoint, args.device, not args.last, CHECKPOINT_KEYS)
    c = ckpt["config"]
    data_dir = args.data_dir or c.get("data_dir")
    data = load_for_config(c["dataset"], data_dir, c["binarization"], c["seed"], c.get("subset"))
    x = (data.test if args.split == "test" else data.valid).to(args.device)
    n = _eval_samples(args)
    res = evaluate(model, x, n, seed=args.seed)
    which = "last" if args.last else f"best (epoch {ckpt.get('best_epoch', '?')})"
    print(
        f"{c['objective']} on {c['dataset']} ({which} weights): {args.split} log-likelihood "
        f"(IWAE-{n}, {res['n']} images) {res['ll']:.3f} ± {res['se']:.3f}"
    )


def _reproduce(args: argparse.Namespace) -> None:
    from ucvae_lite.studies.reproduce import Budget, reproduce

    fast = _fast(args)
    seeds = args.seeds if args.seeds is not None else ([0] if fast else list(range(10)))
    if args.out == DEFAULT_OUT:
        args.out = f"runs/reproduce_{args.dataset}"
    base = _train_config(args, "ucvae")
    command = "python -m ucvae_lite " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    values = {"steps": base.epochs, "time": args.time_budget, "decoder": args.decoder_budget}
    if "decoder" in args.budgets and args.decoder_budget is None:
        values["decoder"] = _iwae_decoder_evals(base)  # what IWAE-S spends in --epochs
    budgets = [Budget(kind, values[kind]) for kind in args.budgets]
    md = reproduce(
        base,
        seeds,
        _eval_samples(args),
        command,
        args.figures,
        args.resume,
        not args.quiet,
        variants=args.objectives,
        budgets=budgets,
        jobs=args.jobs,
    )
    print(md.read_text())
    print(
        f"wrote {md}, results_{args.dataset}.csv, learning_curves_{args.dataset}.png and "
        f"meeting_times_{args.dataset}.png under {args.figures}/"
    )


DEFAULT_OUT = "runs/train"
_EPOCHS = {"digits": 300, "mnist": 50, "fashion-mnist": 50}


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    from ucvae_lite.models.vae import DEFAULT_ARCH
    from ucvae_lite.training.data import DATASETS
    from ucvae_lite.training.objectives import ENCODER_OBJECTIVES
    from ucvae_lite.training.objectives import UCVAE_DEFAULTS as D

    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits (scikit-learn, 8x8, offline), mnist or fashion-mnist (default: digits)",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="directory with IDX files (train-images-idx3-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz]) for mnist / fashion-mnist",
    )
    g.add_argument(
        "--subset",
        type=int,
        nargs=3,
        default=None,
        metavar=("TRAIN", "VALID", "TEST"),
        help="use only the first TRAIN / VALID / TEST images of the splits (shorter runs; "
        "default: all, or 2000 500 500 in fast mode on mnist / fashion-mnist)",
    )
    g.add_argument(
        "--binarization",
        choices=["dynamic", "static"],
        default="dynamic",
        help="dynamic: redraw binary training images every epoch (IWAE paper); "
        "static: draw them once (default: dynamic)",
    )
    g = p.add_argument_group("objective")
    g.add_argument(
        "--num-samples",
        "-S",
        type=int,
        default=None,
        help=f"samples per data point S, for every objective (default {D.num_samples})",
    )
    g.add_argument(
        "--k",
        type=int,
        default=None,
        help=f"ucvae: first chain step averaged in H_k:m (default {D.k})",
    )
    g.add_argument(
        "--m",
        type=int,
        default=None,
        help=f"ucvae: last chain step averaged in H_k:m, >= k (default {D.m})",
    )
    g.add_argument(
        "--eps",
        type=float,
        default=None,
        help="ucvae: defensive weight e of the proposal (1-e) q + e N(0,I), "
        f"0 = plain q (default {D.eps})",
    )
    g.add_argument(
        "--encoder",
        choices=ENCODER_OBJECTIVES,
        default=None,
        help="ucvae: encoder objective, the IWAE bound or the inclusive KL "
        f"estimated by the chains (default {D.encoder})",
    )
    g.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="ucvae: chain step cap; chains that have not met are truncated and "
        f"reported (default {D.max_steps})",
    )
    g.add_argument(
        "--correction-prob",
        type=float,
        default=None,
        metavar="P",
        help="ucvae: compute each data point's bias correction with probability P and weight "
        "it 1/P (still unbiased, cheaper, noisier; default 1: always)",
    )
    g.add_argument(
        "--sumo-cutoff",
        type=int,
        default=None,
        help="sumo: P(K >= j) = 1/j up to this j, then a geometric tail (default 80)",
    )
    g.add_argument(
        "--sumo-min-terms",
        type=int,
        default=None,
        help="sumo: the IWAE bound L_m kept whole before the roulette (default 1)",
    )
    g.add_argument(
        "--rejuvenate",
        type=float,
        default=None,
        metavar="C",
        help="ucvae: after every index selection, move the chains' references by a coupled "
        "random-walk Metropolis-Hastings step of scale C x the encoder's sigma (still "
        "unbiased; costs about 2 more evaluations per chain step; default: off)",
    )
    g = p.add_argument_group("model and optimiser")
    g.add_argument(
        "--latent-dim",
        type=int,
        default=None,
        help=f"latent size d (default {DEFAULT_ARCH['digits']['latent_dim']} on digits, "
        "50 on mnist)",
    )
    g.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        help="hidden layer sizes (default 64 64 on digits, 200 200 on mnist)",
    )
    g.add_argument(
        "--covariance",
        choices=["diag", "full"],
        default="diag",
        help="encoder family: diagonal or full-covariance Gaussian (default diag)",
    )
    g.add_argument(
        "--flow-layers",
        type=int,
        default=0,
        help="encoder family: K > 0 adds K conditional affine coupling layers on top of the "
        "diagonal Gaussian (a normalising flow; default 0)",
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: digits 300, mnist 50; fast mode 3)",
    )
    g.add_argument("--batch-size", type=int, default=100, help="minibatch size (default 100)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of initialisation, sampling and batches (default 0)",
    )
    g.add_argument(
        "--val-samples",
        type=int,
        default=100,
        help="S of the IWAE bound on the validation set each epoch (default 100)",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping: stop after this many epochs without validation "
        "improvement (default: off)",
    )
    g.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop after the epoch in which the time spent in optimisation steps passes "
        "this many seconds (see --clock)",
    )
    g.add_argument(
        "--decoder-limit",
        type=float,
        default=None,
        help="stop after the epoch in which the decoder evaluations (particles through the "
        "decoder, summed over all steps) pass this number",
    )
    g.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="how training time is measured: wall-clock seconds, or this process's CPU "
        "seconds (robust to other programs on the machine; default wall)",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="S of the IWAE bound for the test log-likelihood (default 5000; fast mode 200)",
    )
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on digits, torch's choice otherwise)",
    )
    g.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="directory for checkpoint.pt (default runs/train; reproduce: runs/reproduce_DATASET)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (loses at most one epoch)",
    )
    g.add_argument(
        "--fast",
        action="store_true",
        help="quick run for CI (also set by the environment variable UCVAE_FAST=1)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``error: <message> (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


DEBUG_HELP = "show the full traceback of an error instead of one line"


def _add_debug(p: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too; SUPPRESS keeps a top-level --debug from being reset."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m ucvae_lite",
        description="Unbiased VAE gradients from coupled Markov chains (Ruiz et al., UAI 2021).",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo",
        help="coupled vs IWAE estimates of a posterior mean against the exact answer",
        description="Estimate E[z|x] on the linear-Gaussian model with coupled chains and "
        "with IWAE, many times, and compare both with the closed form.",
    )
    p.add_argument("--num-samples", "-S", type=int, default=5, help="particles per set S (>= 2)")
    p.add_argument("--replicates", type=int, default=4000, help="independent estimates")
    p.add_argument("--k", type=int, default=0, help="first step averaged in H_{k:m}")
    p.add_argument("--m", type=int, default=0, help="last step averaged in H_{k:m} (>= k)")
    p.add_argument("--shift", type=float, default=0.5, help="proposal mean minus posterior mean")
    p.add_argument("--scale", type=float, default=1.5, help="proposal width / posterior width")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _add_debug(p)
    p.set_defaults(func=_demo, check=_check_demo)

    p = sub.add_parser(
        "train",
        help="train one VAE with the elbo, iwae or ucvae objective",
        description="Train an MLP VAE (Gaussian encoder, Bernoulli decoder) with one objective, "
        "validating every epoch and checkpointing to OUT/checkpoint.pt, then report the test "
        "log-likelihood (IWAE bound).",
    )
    p.add_argument(
        "--objective",
        choices=["elbo", "iwae", "ucvae", "sumo", "msc"],
        default="ucvae",
        help="elbo: S-sample VAE bound; iwae: IWAE-S bound; ucvae: unbiased coupled-chain "
        "decoder gradient; sumo: unbiased log p(x) by Russian roulette; msc: Markovian score "
        "climbing, one persistent CIS chain per example (biased) (default ucvae)",
    )
    _add_training_flags(p)
    _add_debug(p)
    p.set_defaults(func=_train, check=_check_training)

    p = sub.add_parser(
        "evaluate",
        help="test log-likelihood of a checkpoint",
        description="Estimate the log-likelihood of a trained checkpoint on the test (or "
        "validation) set by the IWAE bound with many samples, with its standard error.",
    )
    p.add_argument("checkpoint", help="path to a checkpoint.pt written by train / reproduce")
    p.add_argument(
        "--split",
        choices=["test", "valid"],
        default="test",
        help="which split to score (default test)",
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="S of the IWAE bound (default 5000; fast mode 200)",
    )
    p.add_argument(
        "--last",
        action="store_true",
        help="use the last epoch's weights instead of the best validation epoch's",
    )
    p.add_argument("--data-dir", default=None, help="IDX directory, if the run used one")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation samples")
    p.add_argument("--fast", action="store_true", help="fewer samples (also UCVAE_FAST=1)")
    _add_debug(p)
    p.set_defaults(func=_evaluate, check=_check_evaluate)

    p = sub.add_parser(
        "reproduce",
        help="train every objective with matched settings over seeds; write the results table",
        description="For each seed, train the objectives (elbo, iwae, ucvae, ucvae with a "
        "thinned correction, sumo, msc) from the same initialisation with the same S, model "
        "and batches, at equal epochs and/or equal seconds of optimisation steps, score each "
        "on the test set, and write results_DATASET.md/.csv (paired differences against IWAE "
        "with standard errors and win counts), learning_curves_DATASET.png and "
        "meeting_times_DATASET.png under FIGURES.",
    )
    _add_training_flags(p)
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds to repeat over (default 0..9; fast mode 0)",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        default=None,
        help="which to train, of elbo iwae ucvae ucvae-thin sumo msc (default all; "
        "ucvae-thin uses --correction-prob, or 0.25)",
    )
    p.add_argument(
        "--budgets",
        nargs="+",
        choices=["steps", "decoder", "time"],
        default=["steps"],
        help="steps: the same --epochs for every objective; decoder: the same "
        "--decoder-budget decoder evaluations (particles through the decoder, all steps); "
        "time: the same --time-budget seconds of optimisation steps, on this process's CPU "
        "clock (default steps)",
    )
    p.add_argument(
        "--decoder-budget",
        type=float,
        default=None,
        help="decoder evaluations per run for --budgets decoder (default: what IWAE-S "
        "spends in --epochs epochs, epochs x training images x S)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds of optimisation steps per run for --budgets time (default 60)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, one thread each (default 1; the time budget is CPU time, so "
        "parallel runs stay comparable)",
    )
    p.add_argument(
        "--figures",
        default="figures",
        help="directory for the tables and figures (default figures)",
    )
    _add_debug(p)
    p.set_defaults(func=_reproduce, check=_check_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (0, or 2 after an ``error:`` line on stderr).

    Flag values are checked before anything is loaded. Bad input found later by the library
    (``ValueError``, including ``CheckpointError``; ``FileNotFoundError``, including
    ``DatasetNotFoundError``) is also reported as one line, unless ``--debug`` is given. A run
    that fails (a diverged loss, refused degenerate weights, chains that did not meet) is
    reported the same way with exit status 1.
    """
    args = build_parser().parse_args(argv)
    args.argv = argv
    from ucvae_lite.core.coupled import (
        MeetingTimeoutError,  # here, so that --help needs no torch import
    )
    from ucvae_lite.training.train import DegenerateWeightsError, TrainingDivergedError

    try:
        args.check(args)
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        return _fail(e, 2, args.debug)
    except (TrainingDivergedError, DegenerateWeightsError, MeetingTimeoutError) as e:
        return _fail(e, 1, args.debug)  # a run that failed, not bad input
    return 0


def _fail(error: Exception, status: int, debug: bool) -> int:
    """One ``error:`` line on stderr and the exit status (the traceback with --debug)."""
    if debug:
        raise error
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return status
