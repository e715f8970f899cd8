"""`radiogenomics audit RUN_OR_SWEEP` / `radiogenomics audit --data OVERRIDES`: the leakage audit.

Prints one line per check, ``PASS|FAIL|SKIP <check>: ...``; exits 0 when none fails,
`EXIT_LEAK` (4) when one does, and 2 with one message for a bad argument, folder or config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from radiogenomics import config as rc
from radiogenomics.audit import EXIT_LEAK
from radiogenomics.audit.checks import SKIP, Verdict, check_ids, check_slices
from radiogenomics.audit.duplicates import DUPLICATE_CORRELATION, check_near_duplicates
from radiogenomics.audit.permutation import ALPHA, check_permutation
from radiogenomics.audit.subject import Subject, audit_subject, data_subject

log = logging.getLogger("radiogenomics.audit")

PERMUTATIONS = 3
"""Retrainings on permuted labels by default (each costs one training of the run)."""


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of ``radiogenomics audit``."""
    parser = argparse.ArgumentParser(
        prog="radiogenomics audit",
        description="Leakage audit of a training run, a multirun (CV) or a cohort's splits: "
                    "patient ids in two parts, near-duplicate scans, slices of one patient in "
                    "two parts, and a label-permutation test. Exit 0: all pass; 4: one fails.")
    parser.add_argument("target", nargs="*", metavar="RUN_OR_SWEEP | OVERRIDE",
                        help="a run directory or a multirun directory; with --data, overrides "
                             "of the train config (data=rsna data.root=DIR)")
    parser.add_argument("--data", action="store_true",
                        help="audit a cohort and its splits file without any run")
    parser.add_argument("--permutations", type=_count, default=PERMUTATIONS, metavar="K",
                        help=f"retrain K times on permuted labels (default {PERMUTATIONS}; "
                             "0 skips the test)")
    parser.add_argument("--alpha", type=_share, default=ALPHA,
                        help=f"fail the permutation test below this p-value (default {ALPHA})")
    parser.add_argument("--duplicate-correlation", type=_share, default=DUPLICATE_CORRELATION,
                        metavar="R", help="correlation of two scans' fingerprints from which "
                                          f"they are one scan (default {DUPLICATE_CORRELATION})")
    return parser


def _subject(args: argparse.Namespace, command: argparse.ArgumentParser) -> Subject:
    if args.data:
        cfg = rc.compose("train", list(args.target))
        rc.check_output_places(cfg, "data.cache_dir")
        return data_subject(cfg)
    if len(args.target) != 1:
        command.error("give one run or multirun directory, or --data with overrides "
                      "(radiogenomics audit --data data=rsna data.root=DIR)")
    target = args.target[0]
    if "=" in target and not Path(target).exists():
        command.error(f"{target!r} is an override: audit a data config with --data {target}")
    return audit_subject(target)


def verdicts(subject: Subject, args: argparse.Namespace) -> Iterator[Verdict]:
    """Every check of the audit, in turn (the cheap ones first)."""
    yield check_ids(subject.partitions)
    yield check_slices(subject.partitions)
    if subject.load_volumes is None:
        yield Verdict(SKIP, "near-duplicates", "the data cache slices of series, not volumes")
    else:
        yield check_near_duplicates(subject.load_volumes(), subject.partitions,
                                    args.duplicate_correlation)
    yield check_permutation(subject.runs, args.permutations, args.alpha)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the audit; the exit status: 0, `EXIT_LEAK` or 2 (`config.EXIT_USER_ERROR`)."""
    command = parser()
    args = command.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    failed = False
    try:
        subject = _subject(args, command)
        log.info("audit of %s", subject.description)
        for verdict in verdicts(subject, args):
            print(verdict.line(), flush=True)
            failed |= verdict.failed
    except Exception as err:
        user_error = rc.user_error_of(err)
        if user_error is None or rc.full_errors_asked():
            raise
        sys.stderr.write(f"error: {type(user_error).__name__}: {user_error}\n")
        return rc.EXIT_USER_ERROR
    return EXIT_LEAK if failed else 0


if __name__ == "__main__":
    sys.exit(main())
