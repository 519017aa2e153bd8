"""Build a study's report: make every planned figure and table and write them (the only module that
writes files): figures/<name>.<fmt>, tables/<name>.md|.tex (CSV for raw statistics) and report.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from reports.load import load_study
from reports.sections import Item, plan
from reports.style import style_context
from reports.tables import Table, to_latex, to_markdown

__all__ = ["FORMATS", "PNG_DPI", "build_report"]

log = logging.getLogger(__name__)
FORMATS = ("png", "pdf", "svg")
PNG_DPI = 200  # previews and slides; the PDF (vector) is the paper version
_META = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A hidden temporary path next to ``path`` to write to; renamed to ``path`` when the block succeeds
    (removed when it fails), so readers never see half a file. The reports package's one such helper."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    with _atomic_target(path) as tmp:
        tmp.write_bytes(data)


def _save_figure(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    with style_context():
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            with _atomic_target(path) as tmp:
                dpi = PNG_DPI if fmt == "png" else 300  # rasterised layers inside PDF/SVG
                fig.savefig(tmp, format=fmt, metadata=_META[fmt], dpi=dpi)
            paths.append(path)
    return paths


def _write_item(item: Item, obj: object, fig_dir: Path, tab_dir: Path, formats: Sequence[str]) -> list[Path]:
    if isinstance(obj, Figure):
        fig_dir.mkdir(parents=True, exist_ok=True)
        return _save_figure(obj, fig_dir / item.name, formats)
    tab_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, Table):
        md, tex = tab_dir / f"{item.name}.md", tab_dir / f"{item.name}.tex"
        _atomic_write(md, to_markdown(obj).encode())
        _atomic_write(tex, to_latex(obj).encode())
        return [md, tex]
    if isinstance(obj, pd.DataFrame):
        csv = tab_dir / f"{item.name}.csv"
        _atomic_write(csv, obj.to_csv(index=False).encode())
        return [csv]
    raise TypeError(f"report item {item.name!r} made a {type(obj).__name__}, not a Figure, Table or DataFrame")


def _index(title: str, kind: str, entries: list[tuple[Item, list[Path], object]], skipped: list[tuple[Item, str]],
           out: Path) -> str:
    lines = [f"# Report: {title} ({kind} study)", ""]
    section = None
    for item, paths, obj in entries:
        if item.section != section:
            section = item.section
            lines += [f"## {section}", ""]
        if isinstance(obj, Figure):
            png = next((p for p in paths if p.suffix == ".png"), paths[0])
            lines += [f"![{item.name}]({png.relative_to(out).as_posix()})", ""]
        elif isinstance(obj, Table):
            lines += [f"**{item.name}**", "", to_markdown(obj), ""]
        else:
            lines += [f"- raw data: [{paths[0].name}]({paths[0].relative_to(out).as_posix()})", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {item.name}: {reason}" for item, reason in skipped] + [""]
    return "\n".join(lines)


def build_report(study_dir: str | Path, out: str | Path | None = None,
                 formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write the figures and tables of the study in ``study_dir`` under ``out`` (default: the study directory
    itself) as ``figures/`` and ``tables/``, plus ``report.md``; return the written paths.

    An item the data cannot support (e.g. no completed trial of the baseline) is skipped with its reason in
    report.md and a logged warning; malformed result directories raise ``reports.load.ResultsError``.
    """
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unsupported figure format(s) {bad or list(formats)}; choose from {list(FORMATS)}")
    study = load_study(study_dir)
    root = Path(out) if out is not None else study.path
    fig_dir, tab_dir = root / "figures", root / "tables"
    written: list[Path] = []
    entries: list[tuple[Item, list[Path], object]] = []
    skipped: list[tuple[Item, str]] = []
    for item in plan(study):
        try:
            obj = item.make()
        except (ValueError, KeyError, TypeError) as exc:  # the data cannot support this item
            log.warning("report %s: skipped %s: %s", study.name, item.name, exc)
            skipped.append((item, str(exc)))
            continue
        except Exception as exc:  # a defect in one figure must not cost the rest of the report
            log.exception("report %s: %s failed", study.name, item.name)
            skipped.append((item, f"{type(exc).__name__}: {exc} (a bug: please report it)"))
            continue
        paths = _write_item(item, obj, fig_dir, tab_dir, formats)
        written += paths
        entries.append((item, paths, obj))
    root.mkdir(parents=True, exist_ok=True)
    index = root / "report.md"
    _atomic_write(index, _index(study.name, study.kind, entries, skipped, root).encode())
    return [*written, index]
