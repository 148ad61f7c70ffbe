"""``python -m ucvae_lite.lab.pretrained [--retrain | --check] [--out DIR] [--epochs N] [NAME…]``.

Without a flag: one line per shipped checkpoint. ``--retrain``: train the named models (all by
default) and write their checkpoints (into the package folder, or ``--out DIR``). ``--check``:
retrain into a temporary folder and compare each weights hash with the shipped one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from ucvae_lite.lab.pretrained import EPOCHS, FOLDER, NAMES, load, path, retrain, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ucvae_lite.lab.pretrained", description=__doc__
    )
    parser.add_argument("names", nargs="*", default=list(NAMES), help=f"of {', '.join(NAMES)}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--retrain", action="store_true", help="train and write the checkpoints")
    mode.add_argument("--check", action="store_true", help="retrain and compare the hashes")
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder for --retrain")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="(changes the models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    bad = [n for n in args.names if n not in NAMES]
    if bad:
        print(
            f"error: no pretrained model {bad[0]!r}; choose from {', '.join(NAMES)}",
            file=sys.stderr,
        )
        return 2
    names = tuple(args.names)
    if args.retrain:
        start = time.perf_counter()
        retrain(names, args.out, args.epochs, progress=not args.quiet)
        print("\n".join(summary(args.out, names)))
        print(f"retrained {len(names)} models in {time.perf_counter() - start:.0f} s")
        return 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            retrain(names, Path(tmp), args.epochs, progress=not args.quiet)
            same = True
            for n in names:
                new = load(n, Path(tmp))[1]["weights_sha256"]
                old = load(n)[1]["weights_sha256"] if path(n).exists() else "(missing)"
                same &= new == old
                print(f"{n}: shipped {old[:12]}, retrained {new[:12]}: "
                      + ("identical" if new == old else "DIFFERENT"))  # fmt: skip
        return 0 if same else 1
    print("\n".join(summary(FOLDER, names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
