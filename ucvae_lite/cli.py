"""Command line: ``python -m ucvae_lite COMMAND``; ``--help`` on each command lists its flags.

The training flags of ``train`` and ``reproduce`` are generated from the fields of
``training.config.TrainConfig`` (name, default, help, choices); the flags are checked once,
when their ``TrainConfig`` is made, and the errors name the flags (``--m 2 (the default)``).

Exit status 2 with one line on stderr, ``error: <what is wrong and what to change>``: bad
input (``ConfigError``: a flag value out of range, a file that is not a checkpoint;
``FileNotFoundError``: a missing dataset), found before any data is loaded or any training
starts where it can be. Exit status 1 with one line: a run that failed
(``TrainingFailedError``: a diverged loss or NaN weights during training, with what to do
next; refused degenerate weights; chains that did not meet). ``--debug`` shows the full
traceback instead.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from ucvae_lite.lab import notebooks
from ucvae_lite.training.config import (
    GROUPS,
    ConfigError,
    Setting,
    Spelling,
    TrainConfig,
    settings,
)


def _require(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def _at_least(value: int | None, low: int, flag: str, what: str) -> None:
    """``value`` (None = the default) must be an integer >= ``low``."""
    _require(
        value is None or value >= low,
        f"{flag} must be at least {low} ({what}), got {value}; pass {flag} {low} or more",
    )


def _validate_device(device: str) -> None:
    """The torch device must exist here (a cheap allocation, before any data is loaded)."""
    import torch

    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"--device {device!r} is not usable here ({reason}); pass --device cpu"
        ) from e


def _validate_data_dir(data_dir: str | None, dataset: str | None = None) -> None:
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


def _validate_demo(args: argparse.Namespace) -> None:
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


def _validate_training(args: argparse.Namespace) -> None:
    """``train`` and ``reproduce``: the flags' ``TrainConfig`` (``args.config``, checked once as
    it is made), then what only this machine can tell; nothing is loaded or trained yet."""
    args.config = _train_config(args, getattr(args, "objective", "ucvae"))
    _at_least(args.eval_samples, 1, "--eval-samples", "S of the test bound")
    out = Path(args.config.out)
    _require(
        not out.exists() or out.is_dir(),
        f"--out {out} is a file; pass a directory for checkpoint.pt",
    )
    _validate_data_dir(args.data_dir, args.dataset)
    _validate_device(args.device)


def _validate_reproduce(args: argparse.Namespace) -> None:
    """Flag values of ``reproduce``."""
    _validate_training(args)
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


def _validate_evaluate(args: argparse.Namespace) -> None:
    """Flag values of ``evaluate`` (the checkpoint itself is checked by ``load_model``)."""
    _at_least(args.eval_samples, 1, "--eval-samples", "S of the test bound")
    _validate_data_dir(args.data_dir)
    _fast(args)  # a bad UCVAE_FAST is reported now
    _validate_device(args.device)


def _fast(args: argparse.Namespace) -> bool:
    """``--fast`` or the environment's fast mode (``runtime.fast_mode``)."""
    from ucvae_lite.training.runtime import fast_mode

    return args.fast or fast_mode()


def _demo(args: argparse.Namespace) -> None:
    from ucvae_lite.lab.demo import demo, print_demo

    print_demo(
        demo(args.num_samples, args.replicates, args.k, args.m, args.shift, args.scale, args.seed)
    )


def flag(setting: str) -> str:
    """The flag of a ``TrainConfig`` setting: ``max_steps`` → ``--max-steps``."""
    return "--" + setting.replace("_", "-")


_DEFAULTS = {f.name: f.default for f, _ in settings(TrainConfig)}  # the one default of each


class _Flags(Spelling):
    """Error messages name the settings as flags: ``--k``, ``--m 2 (the default)``."""

    def name(self, setting: str) -> str:
        return flag(setting)

    def value(self, setting: str, value: Any) -> str:
        default = " (the default)" if value == _DEFAULTS.get(setting) else ""
        return f"{flag(setting)} {_shown(value)}{default}"


def _train_config(args: argparse.Namespace, objective: str) -> TrainConfig:
    """The ``TrainConfig`` of the training flags, checked as it is made; fast mode and the
    dataset pick the values of the flags left unset in ``_FAST``."""
    fast = _fast(args)
    values = {f.name: getattr(args, f.name) for f, _ in settings(TrainConfig) if f.name in args}
    values["objective"] = objective
    if args.epochs is None:
        values["epochs"] = _FAST["epochs"] if fast else _EPOCHS[args.dataset]
    if args.val_samples is None:
        values["val_samples"] = _FAST["val_samples"] if fast else _DEFAULTS["val_samples"]
    if args.subset is None and fast and args.dataset != "digits":
        values["subset"] = _FAST["subset"]
    if args.command == "reproduce" and args.out == _DEFAULTS["out"]:
        values["out"] = f"runs/reproduce_{args.dataset}"
    try:
        return TrainConfig(**values)
    except ConfigError as e:
        raise ConfigError(e.spelled(_Flags())) from e


def _iwae_decoder_evals(cfg: TrainConfig) -> float:
    """Decoder evaluations IWAE-S spends in ``cfg.epochs`` epochs: epochs × the training
    images actually loaded (``--subset`` may ask for more than there are) × S."""
    from ucvae_lite.training.data import load_for_config

    data = load_for_config(cfg.dataset, cfg.data_dir, cfg.binarization, 0, cfg.subset)
    return float(cfg.epochs * len(data.train) * cfg.num_samples)


def _eval_samples(args: argparse.Namespace) -> int:
    from ucvae_lite.training.evaluate import EVAL_SAMPLES, FAST_EVAL_SAMPLES

    if args.eval_samples is not None:
        return args.eval_samples
    return FAST_EVAL_SAMPLES if _fast(args) else EVAL_SAMPLES


def _train(args: argparse.Namespace) -> None:
    from ucvae_lite.training.data import load_for_config
    from ucvae_lite.training.evaluate import evaluate
    from ucvae_lite.training.train import train

    cfg = args.config
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
    base = args.config
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


_EPOCHS = {"digits": 300, "mnist": 50, "fashion-mnist": 50}  # the command line's epochs
# Flags left unset (None) that the command line fills in when it runs: fast mode's values
# (subset: on mnist and fashion-mnist only); else epochs by dataset (``_EPOCHS``), and the
# field's default for the others.
_FAST = {"epochs": 3, "val_samples": 20, "subset": [2000, 500, 500]}


def _shown(value: Any) -> str:
    """A value as it is typed on the command line: ``[2000, 500, 500]`` → ``2000 500 500``."""
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _flag_help(name: str, spec: Setting, default: Any) -> str:
    """The field's help line, its default and fast mode's value."""
    if name == "epochs":
        default = ", ".join(f"{dataset} {n}" for dataset, n in _EPOCHS.items())
    notes = [] if default is None else [f"default {_shown(default)}"]
    if name in _FAST:
        where = " on mnist, fashion-mnist" if name == "subset" else ""
        notes.append(f"fast mode {_shown(_FAST[name])}{where}")
    return f"{spec.help} ({'; '.join(notes)})" if notes else spec.help


def _add_training_flags(
    p: argparse.ArgumentParser, skip: tuple[str, ...] = (), shown: dict | None = None
) -> None:
    """A flag per ``TrainConfig`` field but those in ``skip``, in the fields' groups, then the
    run flags. ``shown`` replaces the default that the help of a flag shows."""
    from ucvae_lite.training.evaluate import EVAL_SAMPLES, FAST_EVAL_SAMPLES

    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for f, spec in settings(TrainConfig):
        if f.name in skip:
            continue
        options = dict(spec.flag)
        names = [flag(f.name), *options.pop("aliases", [])]
        groups[spec.group].add_argument(
            *names,
            type=spec.type or type(f.default),
            default=None if f.name in _FAST else f.default,
            choices=spec.rule.choices if spec.rule else None,
            help=_flag_help(f.name, spec, (shown or {}).get(f.name, f.default)),
            **options,
        )
    run = groups["run"]
    run.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help=f"S of the IWAE bound for the test log-likelihood (default {EVAL_SAMPLES}; "
        f"fast mode {FAST_EVAL_SAMPLES})",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (loses at most one epoch)",
    )
    run.add_argument(
        "--fast",
        action="store_true",
        help="quick run for CI (also set by the environment variable UCVAE_FAST=1)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


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
    p.set_defaults(func=_demo, check=_validate_demo)

    p = sub.add_parser(
        "train",
        help="train one VAE with one objective: elbo, iwae, ucvae, sumo or msc",
        description="Train an MLP VAE (Gaussian encoder, Bernoulli decoder) with one objective "
        "(elbo, iwae, ucvae, sumo or msc), validating every epoch and checkpointing to "
        "OUT/checkpoint.pt, then report the test log-likelihood (IWAE bound).",
    )
    _add_training_flags(p)
    _add_debug(p)
    p.set_defaults(func=_train, check=_validate_training)

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
    p.set_defaults(func=_evaluate, check=_validate_evaluate)

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
    _add_training_flags(p, skip=("objective",), shown={"out": "runs/reproduce_DATASET"})
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
    p.set_defaults(func=_reproduce, check=_validate_reproduce)
    _add_debug(notebooks.add_command(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status: 0; 2 after an ``error:`` line for bad input
    (``ConfigError``, ``FileNotFoundError``); 1 after one for a run that failed
    (``TrainingFailedError``, ``MeetingTimeoutError``). ``--debug`` raises instead."""
    args = build_parser().parse_args(argv)
    args.argv = argv
    from ucvae_lite.core.coupled import MeetingTimeoutError
    from ucvae_lite.training.train import TrainingFailedError

    try:
        args.check(args)
        args.func(args)
    except (ConfigError, FileNotFoundError) as e:
        return _fail(e, 2, args.debug)
    except (TrainingFailedError, MeetingTimeoutError) as e:
        return _fail(e, 1, args.debug)  # a run that failed, not bad input
    return 0


def _fail(error: Exception, status: int, debug: bool) -> int:
    """One ``error:`` line on stderr and the exit status (the traceback with --debug)."""
    if debug:
        raise error
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return status
