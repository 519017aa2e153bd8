"""Command line for data files: convert an MMSA pickle once, or describe a data file or directory.

    python -m emoe.data convert IN.pkl OUT_DIR [--overwrite] [--expect mosi|mosei|sims|none]
    python -m emoe.data info PATH [--verify] [--text features|bert] [--expect auto|mosi|mosei|sims|none]
    python -m emoe.data info synthetic:small

``--expect none`` loads a subset of a known data set (e.g. MOSI-shaped with fewer samples); ``convert``
records it in the manifest, so ``info``, ``load_data`` and studies honour it without repeating it.
Exit status 0 on success, 2 on a data problem (the message names the file and the problem), 141 (as for
SIGPIPE) without a word when the reader of the output goes away (``info ... | head``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emoe.data.arrays import DataSet
from emoe.data.checks import DataError
from emoe.data.convert import convert_mmsa, load_data, read_manifest
from emoe.data.mmsa import Expect
from emoe.data.synthetic import make_synthetic

__all__ = ["describe", "main"]

_SPLIT_FIELDS = ("text", "audio", "vision", "labels", "ids", "reliability", "audio_lengths",
                 "vision_lengths", "uni_labels")


def describe(data: DataSet) -> str:
    """A few lines on a data set: name, label kind, model dims, per-split arrays and label statistics."""
    lines = [f"name:       {data.name}", f"label_kind: {data.label_kind}",
             "dims:       " + ", ".join(f"{k}={v}" for k, v in data.dims.items())]
    for name, split in data.splits().items():
        y = np.asarray(split.labels)
        lines.append(f"{name} (n={len(split)}): labels min {y.min():.3g} max {y.max():.3g} "
                     f"mean {y.mean():.3g}, zeros {np.mean(y == 0):.1%}")
        for field in _SPLIT_FIELDS:
            arr = getattr(split, field)
            if arr is not None:
                mapped = " (memory-mapped)" if isinstance(arr, np.memmap) else ""
                lines.append(f"  {field:<15}{arr.dtype.str:<8}{tuple(arr.shape)}{mapped}")
    return "\n".join(lines)


_EXPECT_CHOICES = ["auto", "mosi", "mosei", "sims", "none"]


def _expect(value: str) -> Expect:
    if value == "auto":
        return None
    if value == "none":
        return False
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m emoe.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert a trusted MMSA pickle to the safe .npy format")
    conv.add_argument("input", type=Path, help="MMSA .pkl file (unpickled: trusted files only)")
    conv.add_argument("output", type=Path, help="output directory (created; must be empty)")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing conversion")
    conv.add_argument("--expect", default="auto", choices=_EXPECT_CHOICES,
                      help="split sizes to check (auto: when the file is recognised; none: a subset); "
                           "recorded in the manifest")
    conv.add_argument("--label-kind", choices=["mosi", "sims", "classification"], default=None)
    info = sub.add_parser("info", help="describe a converted directory, a pickle, or synthetic:<preset>")
    info.add_argument("path", help="directory, .pkl file, or synthetic:<preset>")
    info.add_argument("--verify", action="store_true", help="also check every file's SHA-256")
    info.add_argument("--text", choices=["features", "bert"], default="features")
    info.add_argument("--expect", default="auto", choices=_EXPECT_CHOICES,
                      help="split sizes to check (auto: as recorded at conversion, else when recognised)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # here, not at exit, so a reader that went away is caught below
    except BrokenPipeError:
        # the reader closed the pipe (`| head`): stop quietly; stdout goes to /dev/null so the interpreter's
        # own flush at exit does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return status


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "convert":
            manifest = convert_mmsa(args.input, args.output, expect=_expect(args.expect),
                                    label_kind=args.label_kind, overwrite=args.overwrite)
            print(f"wrote {manifest.parent} (manifest {manifest.name})")
            # reload as a study will (the recorded expect; every hash checked, and remembered)
            print(describe(load_data(manifest.parent, verify_hash=True, hash_cache=True)))
            return 0
        if args.path.startswith("synthetic:"):
            data = make_synthetic(args.path.split(":", 1)[1])
        else:
            path = Path(args.path)
            if path.is_file():
                print("note: unpickling runs code from the file; convert trusted files once with "
                      "`python -m emoe.data convert`", file=sys.stderr)
            data = load_data(path, text=args.text, verify_hash=args.verify, expect=_expect(args.expect))
            if path.is_dir():
                m = read_manifest(path)
                print(f"format:     {m['format']} v{m['format_version']} from {m['source']} "
                      f"(recognised as {m.get('dataset') or 'unknown'}"
                      + (f"; converted with expect={m['expect']}" if m.get("expect") is not None else "") + ")"
                      + (", all SHA-256 verified" if args.verify else ""))
        print(describe(data))
        return 0
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
