"""Build a study's report: make every planned figure and table and write them (the only module that
writes files, with ``reports.figsave`` for the figures): figures/<name>.<fmt>, tables/<name>.md|.tex (CSV
for raw statistics) and report.md.

The output directory is checked before anything is made (a file, or a place this process cannot write,
is an ``OutputError`` naming it), so a bad ``--out`` writes nothing. With several CPUs the figures are
saved in worker processes while the next items are made (``reports.figsave.FigurePool``); the files are
the same, byte for byte.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from reports.figsave import FORMATS, PNG_DPI, FigurePool, atomic_target, report_jobs, save_figure
from reports.load import Study, load_study
from reports.progress import incomplete_note, simulated_note
from reports.provenance import stamp, study_stamp
from reports.scales import inferred_note, study_scales
from reports.sections import Item, plan
from reports.tables import Table, to_latex, to_markdown

__all__ = ["FORMATS", "PNG_DPI", "OutputError", "build_report", "check_output_dir", "normalize_formats", "output_root",
           "write_report"]

log = logging.getLogger(__name__)


class OutputError(ValueError):
    """The report's output directory is a file, lies under a file, or cannot be written."""


def check_output_dir(root: Path) -> None:
    """Raise ``OutputError`` unless ``root`` is, or can be created as, a directory this process can write
    figures/, tables/ and report.md into. Writes nothing (a probe file is created and removed at once)."""
    if root.exists() and not root.is_dir():
        raise OutputError(f"output directory {root}: is a file, not a directory")
    for name, want_dir in (("figures", True), ("tables", True), ("report.md", False)):
        path = root / name
        if path.exists() and path.is_dir() != want_dir:
            raise OutputError(f"output directory {root}: {path} is a {'file' if want_dir else 'directory'}")
    parent = root
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"output directory {root}: {parent} is a file, so no directory can be made under it")
    for probe_dir in (parent, *(root / d for d in ("figures", "tables") if (root / d).is_dir())):
        try:
            with tempfile.TemporaryFile(dir=probe_dir, prefix=".probe-"):
                pass
        except OSError as exc:
            raise OutputError(f"output directory {root}: cannot write in {probe_dir} "
                              f"({exc.strerror or exc}); choose another with --out") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def _write_item(item: Item, obj: object, fig_dir: Path, tab_dir: Path, formats: Sequence[str]) -> list[Path]:
    if isinstance(obj, Figure):
        fig_dir.mkdir(parents=True, exist_ok=True)
        return save_figure(obj, fig_dir / item.name, formats)
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


def _index(study: Study, entries: list[tuple[Item, list[Path], object]], skipped: list[tuple[Item, str]],
           out: Path) -> str:
    simulated = simulated_note(study)
    lines = [f"# Report: {study.name} ({'simulated ' if simulated else ''}{study.kind} study)", ""]
    if simulated is not None:
        lines += [f"> **{simulated}.** Every number and curve below comes from the harness's simulated trials "
                  "(`simulate: true`), not from a trained model: useful to try schedulers and search spaces, "
                  "never as a result.", ""]
    note = incomplete_note(study)
    if note is not None:
        lines += [f"> **Note: {note}.** Figures and tables show only the trials recorded so far; "
                  "rebuild the report when the study has finished.", ""]
    scale_note = inferred_note(study_scales(study)) if study.kind == "search" else None
    if scale_note is not None:
        lines += [f"*{scale_note}*", ""]
    section = None
    for item, paths, obj in entries:
        if item.section != section:
            section = item.section
            lines += [f"## {section}", ""]
        if isinstance(obj, Figure):
            png = next((p for p in paths if p.suffix == ".png"), paths[0])
            lines += [f"![{item.name}]({png.relative_to(out).as_posix()})", ""]
            if item.note:  # e.g. a large study's figure shows only its best configurations (reports.caps)
                lines += [f"*{item.note}.*", ""]
        elif isinstance(obj, Table):
            lines += [f"**{item.name}**", "", to_markdown(obj), ""]
        else:
            lines += [f"- raw data: [{paths[0].name}]({paths[0].relative_to(out).as_posix()})", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {item.name}: {reason}" for item, reason in skipped] + [""]
    return "\n".join(lines)


def normalize_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Lower-cased, de-duplicated figure formats without dots; ValueError for an unsupported one."""
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ValueError(f"unsupported figure format(s) {bad or list(out)}; choose from {list(FORMATS)}")
    return out


def build_report(study_dir: str | Path, out: str | Path | None = None,
                 formats: Sequence[str] = ("png", "pdf"), jobs: int | None = None) -> list[Path]:
    """Write the figures and tables of the study in ``study_dir`` under ``out`` (default: the study directory
    itself) as ``figures/`` and ``tables/``, plus ``report.md``; return the written paths.

    An item the data cannot support (e.g. no completed trial of the baseline) is skipped with its reason in
    report.md and a logged warning; malformed result directories raise ``reports.load.ResultsError``, an
    output directory that cannot be written ``OutputError`` (both before anything is written). ``jobs``:
    processes saving figures, this one included; None chooses from the usable CPUs
    (``reports.figsave.report_jobs``), 1 saves every figure here.
    """
    formats = normalize_formats(formats)
    if out is not None:
        output_root(out)
    return write_report(load_study(study_dir), out=out, formats=formats, jobs=jobs)


def output_root(out: str | Path) -> Path:
    """``out`` as a Path after :func:`check_output_dir`; an empty string (which Path would silently read as
    the current directory) is an ``OutputError`` too."""
    if isinstance(out, str) and not out.strip():
        raise OutputError("the output directory is an empty string; give a directory (e.g. --out paper/figs)")
    root = Path(out)
    check_output_dir(root)
    return root


def write_report(study: Study, out: str | Path | None = None, formats: Sequence[str] = ("png", "pdf"),
                 jobs: int | None = None) -> list[Path]:
    """:func:`build_report` of an already loaded study."""
    formats = normalize_formats(formats)
    root = output_root(out) if out is not None else study.path
    if out is None:
        check_output_dir(root)
    provenance = study_stamp(study.meta, study.trials)
    fig_dir, tab_dir = root / "figures", root / "tables"
    written: list[Path] = []
    entries: list[tuple[Item, list[Path], object]] = []
    skipped: list[tuple[Item, str]] = []
    items = plan(study)
    with FigurePool(report_jobs(jobs, len(items))) as pool:  # no workers: each figure is saved when made
        for index, item in enumerate(items):
            if pool.failed:  # a figure failed to save: as serially, nothing after it is made
                break
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
            if isinstance(obj, Figure):  # saved (here or by a worker), then stamped
                fig_dir.mkdir(parents=True, exist_ok=True)
                paths = pool.submit(index, item.name, obj, fig_dir / item.name, formats,
                                    on_saved=lambda saved: stamp(saved, provenance))
            else:
                paths = _write_item(item, obj, fig_dir, tab_dir, formats)
                stamp(paths, provenance)  # <file>.json sidecars and a % line atop LaTeX (reports.provenance)
            written += paths
            entries.append((item, paths, obj))
        pool.join()  # the rest of the figures; a failed one raises here
        if pool.saved_by_workers:
            log.debug("report %s: %d figures saved by worker processes", study.name, pool.saved_by_workers)
    root.mkdir(parents=True, exist_ok=True)
    index_path = root / "report.md"
    _atomic_write(index_path, _index(study, entries, skipped, root).encode())
    return [*written, index_path]
