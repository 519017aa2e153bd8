"""Command line: ``python -m reports results/<study> [--out DIR] [--format png,pdf]``.

Writes the study's figures and tables (see ``reports.build.build_report``) and prints their paths; a report
of an unfinished study says so on stdout first. Exit status 2, with nothing written, for a missing or
malformed result directory, an output directory that is a file or cannot be written, or a bad option.
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
                                description="Turn a study's Parquet results into paper figures and tables.")
    p.add_argument("study_dir", help="result directory of one study, e.g. results/distill_weight")
    p.add_argument("--out", default=None,
                   help="output root (figures/ and tables/ go under it); default: the study directory")
    p.add_argument("--format", default="png,pdf", help="comma-separated figure formats: png, pdf, svg")
    p.add_argument("-q", "--quiet", action="store_true", help="do not list the written files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    matplotlib.use("Agg")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from reports.build import normalize_formats, output_root, write_report
    from reports.load import ResultsError, load_study
    from reports.progress import incomplete_note

    try:
        formats = normalize_formats([f for f in args.format.split(",") if f.strip()])
        if args.out is not None:
            output_root(args.out)
        study = load_study(args.study_dir)
        note = incomplete_note(study)
        if note is not None:
            print(note, flush=True)
        paths = write_report(study, out=args.out, formats=formats)
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
