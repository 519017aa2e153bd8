"""Command line: ``python -m harness.compact results/<study>``: fold a study's per-trial files into one file
per table (docs/results.md, Compaction).

Safe to run at any time and any number of times: a compacted study is left as it is, a compaction that was
killed is completed. A study whose driver is running is refused (its driver compacts it when it ends).

Exit status: 0 compacted (or nothing to do); 2 not a study directory, the study is being run, or a table
cannot be compacted as it is (nothing of that table was changed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.compact", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir", help="a study's results directory, e.g. results/distill_weight")
    p.add_argument("--row-group-rows", type=int, default=None, metavar="N",
                   help="rows per Parquet row group of the compacted files (default 100000)")
    return p.parse_args(argv)


def _problem(path: Path) -> str | None:
    """Why ``path`` is not a study results directory, or None."""
    if not path.exists():
        return f"{path}: no such directory"
    if not path.is_dir():
        return f"{path}: is a file, not a study results directory (results/<study>)"
    if not (path / "study.json").is_file():
        inside = sorted(p.name for p in path.iterdir() if (p / "study.json").is_file())
        hint = f"; it holds the studies {', '.join(inside[:5])}: give one of them" if inside else ""
        return f"{path}: holds no study.json, so it is not a study results directory (results/<study>){hint}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m harness.compact``; returns the exit status."""
    args = parse_args(argv)
    path = Path(args.study_dir).expanduser().absolute()
    problem = _problem(path)
    if problem is None and args.row_group_rows is not None and args.row_group_rows < 1:
        problem = f"--row-group-rows: must be at least 1, got {args.row_group_rows}"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # pyarrow and the store only once the arguments are known to be usable
    from harness.results.compact import ROW_GROUP_ROWS, CompactionError, compact_study
    from harness.results.sink import ResultStore
    from harness.study.errors import SpecError, StudyExistsError

    try:
        store = ResultStore(path.parent, path.name)
        report = compact_study(store, row_group_rows=args.row_group_rows or ROW_GROUP_ROWS)
    except StudyExistsError:
        print(f"error: {path}: a driver is running this study; it compacts the study when it ends "
              "(or run this again afterwards)", file=sys.stderr)
        return 2
    except (SpecError, CompactionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
