"""Command line: ``python -m ucvae_lite COMMAND``; ``--help`` on each command lists its flags."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> None:
    from .demo import demo, print_demo

    print_demo(
        demo(args.num_samples, args.replicates, args.k, args.m, args.shift, args.scale, args.seed)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ucvae_lite",
        description="Unbiased VAE gradients from coupled Markov chains (Ruiz et al., UAI 2021).",
    )
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
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
