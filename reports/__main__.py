"""Command line.

    python -m reports results/<study> [--out DIR] [--format png,pdf]        one study's figures and tables
    python -m reports results/a results/b results/c --out paper/           one cross-study table and figures
    python -m reports plan results/<study> --delta 0.01 --metric test_mae  seeds needed (paired t power)

A report of an unfinished or simulated study says so on stdout first. Exit status 2, with nothing written, for a missing
or malformed result directory, an output directory that is a file or cannot be written, or a bad option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import matplotlib

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reports",
                                description="Turn study Parquet results into paper figures and tables; "
                                            "'python -m reports plan -h' plans seeds.")
    p.add_argument("study_dirs", nargs="+", metavar="study_dir",
                   help="result directory of one study, e.g. results/distill_weight; several: a cross-study "
                        "table (metrics x data sets, average ranks, critical-difference figures; needs --out)")
    p.add_argument("--out", default=None,
                   help="output root (figures/ and tables/ go under it); default: the study directory")
    p.add_argument("--format", default="png,pdf", help="comma-separated figure formats: png, pdf, svg")
    from reports.figsave import AUTO_MIN_CPUS

    p.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                   help="processes saving figures, this one included (default: auto, one per usable CPU "
                        f"from {AUTO_MIN_CPUS} up, else 1; 1: no worker process)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not list the written files")
    return p


def _jobs(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _plan_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reports plan",
                                description="Seeds needed to detect a difference with a paired t-test, from "
                                            "the seed-to-seed spread of paired differences in a finished study.")
    p.add_argument("study_dir", help="a finished (pilot) study, e.g. results/ablation")
    p.add_argument("--delta", type=float, required=True,
                   help="difference to detect, in stored units (0.01 = 1 point of Acc-2, or 0.01 of MAE)")
    p.add_argument("--metric", action="append", default=None,
                   help="metric column(s), e.g. test_mae (repeat or comma-separate); default: the objective")
    p.add_argument("--power", type=float, default=0.8, help="target power (default 0.8)")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided level (default 0.05)")
    return p


def _plan(argv: Sequence[str]) -> int:
    args = _plan_parser().parse_args(argv)
    from reports.load import ResultsError, load_study
    from reports.power import plan_table
    from reports.tables import to_markdown

    try:
        study = load_study(args.study_dir)
        metrics = [m for arg in args.metric or [] for m in arg.split(",") if m.strip()] or [study.objective[0]]
        table = plan_table(study, metrics=metrics, delta=args.delta, power=args.power, alpha=args.alpha)
    except (ResultsError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # no repr quotes
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(to_markdown(table), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    matplotlib.use("Agg")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if argv[:1] == ["plan"]:
        return _plan(argv[1:])
    args = _parser().parse_args(argv)
    from reports.build import normalize_formats, output_root, write_report
    from reports.crossstudy_build import build_cross_report
    from reports.load import ResultsError, load_study
    from reports.progress import report_notes

    try:
        formats = normalize_formats([f for f in args.format.split(",") if f.strip()])
        if args.out is not None:
            output_root(args.out)
        if len(args.study_dirs) == 1:
            study = load_study(args.study_dirs[0])
            for note in report_notes(study):
                print(note, flush=True)
            paths = write_report(study, out=args.out, formats=formats, jobs=args.jobs)
        elif args.out is None:
            raise ValueError("several study directories make one cross-study report: give --out DIR")
        else:
            paths = build_cross_report(args.study_dirs, out=args.out, formats=formats)
    except (ResultsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the disk filled up while writing
        print(f"error: writing the report failed: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        for path in paths:
            print(path)
    print(f"wrote {len(paths)} files; start with {paths[-1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
