"""Autograde several assignments at once, paying nbgrader's start-up once.

    cd COURSE && python -m classroom.autograde [--jobs N] ASSIGNMENT [ASSIGNMENT ...]

does what ``nbgrader autograde ASSIGNMENT --force`` does for each assignment, ``--jobs`` of
them at a time, in the order given (put the longest first). Importing nbgrader costs about
3 CPU seconds, as much as grading a short notebook; here it is imported once, and each
assignment is graded in a child process forked from this one (a fresh nbgrader application
per child, nothing shared but the imported modules). Run it as its own process, as
``assignments.autograde`` does: a process that already runs threads (torch's, pytest's)
should not fork.

The students must already be in the gradebook: two children adding the same student at
once collide. Exit status 1 names the assignments whose grading failed; nbgrader's own log
goes to stderr as usual.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from multiprocessing.connection import wait


def grade(assignment: str) -> None:
    """``nbgrader autograde ASSIGNMENT --force`` in this process (it exits 1 on a failure)."""
    from nbgrader.apps.nbgraderapp import NbGraderApp

    NbGraderApp.launch_instance(argv=["autograde", assignment, "--force"])


def grade_all(assignments: list[str], jobs: int) -> list[str]:
    """Grade each assignment in its own forked child, ``jobs`` at once, in the order given;
    the assignments whose child exited non-zero."""
    fork = multiprocessing.get_context("fork")
    pending, running, failed = list(assignments), {}, []
    while pending or running:
        while pending and len(running) < jobs:
            child = fork.Process(target=grade, args=(pending[0],), name=pending.pop(0))
            child.start()
            running[child.sentinel] = child
        for sentinel in wait(list(running)):
            child = running.pop(sentinel)
            child.join()
            if child.exitcode != 0:
                failed.append(child.name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classroom.autograde", description=__doc__)
    parser.add_argument("assignments", nargs="+", metavar="ASSIGNMENT")
    parser.add_argument("--jobs", type=int, default=2, help="assignments graded at once")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    import nbgrader.apps.nbgraderapp  # noqa: F401  (once, before the children are forked)

    failed = grade_all(args.assignments, args.jobs)
    if failed:
        print(f"error: autograding failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
