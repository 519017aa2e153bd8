"""One report across several studies of the same configurations on different data sets (e.g. the ablation
on MOSI, MOSEI and SIMS): a metrics x data sets table of every configuration with its average rank, the
Friedman/Nemenyi tests per metric (``reports.crossstudy``) and a critical-difference figure per metric.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emoe_schema import SIMULATED_NOTE
from reports.build import FORMATS, _atomic_write, _write_item
from reports.crossstudy import FriedmanResult, friedman, ranks
from reports.effects import emphasis
from reports.load import ResultsError, Study, load_study
from reports.metrics import CLASSIFICATION_MAIN, REGRESSION_MAIN, metric_info, metric_title
from reports.plots.crossstudy import plot_critical_difference
from reports.progress import mark_incomplete, simulated_note
from reports.sections import Item, main_metrics
from reports.tables import EMPHASIS_NOTE, UNTESTED_NOTE, Table, _mean_std, _num, _p, to_markdown

__all__ = ["build_cross_report", "cross_scores", "cross_table", "friedman_table", "shared_variants"]

log = logging.getLogger(__name__)


def _done(study: Study) -> pd.DataFrame:
    return study.trials[study.trials["status"] == "completed"]


def shared_variants(studies: Sequence[Study]) -> list[str]:
    """Configurations (``variant``) every study has completed trials of; the common baseline first."""
    sets = [list(dict.fromkeys(_done(s)["variant"])) for s in studies]
    common = [v for v in sets[0] if all(v in other for other in sets[1:])]
    bases = {s.baseline for s in studies}
    if len(bases) == 1 and (base := bases.pop()) in common:
        common = [base, *[v for v in common if v != base]]
    return common


def cross_scores(studies: Sequence[Study], metric: str, variants: Sequence[str]) -> pd.DataFrame:
    """Mean of ``metric`` over completed seeds: rows = studies (data sets), columns = ``variants``."""
    rows = {}
    for s in studies:
        done = _done(s)
        means = done.groupby("variant")[metric].mean() if metric in done.columns else pd.Series(dtype=float)
        rows[s.name] = means.reindex(list(variants))
    return pd.DataFrame(rows).T[list(variants)]


def cross_table(studies: Sequence[Study], *, metrics: Sequence[str], variants: Sequence[str]) -> Table:
    """Rows: metric x data set (mean ± std over seeds, emphasis within the row) and the average rank."""
    names = list(variants)
    table = Table(header=["Metric", "Data set", *names], rows=[], align="ll" + "r" * len(names))
    all_ranks = []
    untested = False
    for m in metrics:
        info = metric_info(m)
        r = ranks(cross_scores(studies, m, names), higher_is_better=info.higher_is_better)
        all_ranks.append(r)
        for s in studies:
            done = _done(s)
            if m not in done.columns or done[m].isna().all():
                continue
            part = done[done["variant"].isin(names)]
            stats = part.groupby("variant")[m].agg(["mean", "std"]).reindex(names)
            i = len(table.rows)
            table.rows.append([f"{info.name}{' (%)' if info.percent else ''} {'↑' if info.higher_is_better else '↓'}",
                               s.name, *(_mean_std(a * info.scale, b * info.scale, info.decimals)
                                         for a, b in zip(stats["mean"], stats["std"]))])
            emph = emphasis(part, metric=m, group="variant", higher_is_better=info.higher_is_better)
            untested |= bool(emph.untested)
            table.bold |= {(i, 2 + names.index(str(g))) for g in emph.best}
            table.marked |= {(i, 2 + names.index(str(g))) for g in emph.tied}
    avg = pd.concat(all_ranks).mean(axis=0)
    table.rows.append(["Avg. rank", f"over {sum(int(r.notna().all(axis=1).sum()) for r in all_ranks)} cells",
                       *(_num(float(avg[v]), 2) for v in names)])
    table.caption = (f"Mean ± std over seeds per data set; last row: rank of each configuration (1 = best) "
                     f"averaged over every metric and data set. {EMPHASIS_NOTE}"
                     f"{' ' + UNTESTED_NOTE if untested else ''}")
    return table


def friedman_table(studies: Sequence[Study], *, metrics: Sequence[str], variants: Sequence[str],
                   alpha: float = 0.05) -> tuple[Table, dict[str, FriedmanResult]]:
    """Friedman and Iman-Davenport tests with the Nemenyi CD per metric (Demšar 2006); also the results."""
    table = Table(header=["Metric", "N data sets", "k", "χ²_F", "p", "F_F", "p (F_F)", f"CD (α={alpha:g})",
                          "best avg. rank"], rows=[], align="lrrrrrrrl",
                  caption=("Friedman test over data sets (ties corrected), Iman-Davenport F_F and the Nemenyi "
                           "critical difference of average ranks (Demšar 2006); two configurations differ "
                           "when their average ranks differ by at least CD."))
    results: dict[str, FriedmanResult] = {}
    for m in metrics:
        try:
            res = friedman(cross_scores(studies, m, variants), higher_is_better=metric_info(m).higher_is_better,
                           alpha=alpha)
        except ValueError as exc:
            log.warning("cross-study %s: %s", m, exc)
            continue
        results[m] = res
        top = res.avg_ranks.index[0]
        table.rows.append([metric_title(m), str(res.n), str(len(res.avg_ranks)), _num(res.chi2, 2), _p(res.p_chi2),
                           _num(res.f, 2), _p(res.p_f), _num(res.cd, 2), f"{top} ({res.avg_ranks.iloc[0]:.2f})"])
    return table, results


def _by_rank(studies: Sequence[Study], metrics: Sequence[str], variants: Sequence[str]) -> list[str]:
    """The baseline (kept first when shared), then the others by average rank over every metric and data set."""
    all_ranks = [ranks(cross_scores(studies, m, variants), higher_is_better=metric_info(m).higher_is_better)
                 for m in metrics]
    avg = pd.concat(all_ranks).mean(axis=0) if all_ranks else pd.Series(0.0, index=list(variants))
    first = [variants[0]] if len({s.baseline for s in studies}) == 1 and studies[0].baseline == variants[0] else []
    rest = sorted((v for v in variants if v not in first), key=lambda v: (avg.get(v, np.inf), str(v)))
    return [*first, *rest]


def _metrics(studies: Sequence[Study]) -> list[str]:
    present = {m for s in studies for m in main_metrics(s)}
    order = [f"test_{m}" for m in (*REGRESSION_MAIN, *CLASSIFICATION_MAIN)]
    return [m for m in order if m in present]


def build_cross_report(study_dirs: Sequence[str | Path], out: str | Path,
                       formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write the cross-study tables, critical-difference figures and report.md under ``out``."""
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unsupported figure format(s) {bad or list(formats)}; choose from {list(FORMATS)}")
    studies = [load_study(d) for d in study_dirs]
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise ResultsError(f"the same study appears twice among {names}")
    simulated = [s.name for s in studies if simulated_note(s) is not None]
    if simulated and len(simulated) < len(studies):
        raise ResultsError(f"{', '.join(simulated)}: simulated (simulate: true, nothing trained); a cross-study "
                           "report compares measured results only, or simulated ones only")
    variants = shared_variants(studies)
    if len(variants) < 2:
        raise ResultsError(f"the studies {names} share fewer than 2 configurations with completed trials "
                           "(matched by variant name)")
    metrics = _metrics(studies)
    variants = _by_rank(studies, metrics, variants)
    root = Path(out)
    ftable, results = friedman_table(studies, metrics=metrics, variants=variants)

    def cd_figure(m: str) -> Figure:
        res = results[m]
        title = f"{metric_title(m)}: Friedman p = {_p(res.p_chi2)} over N = {res.n} data sets"
        fig = plot_critical_difference(res.avg_ranks, res.cd, title=title,
                                       baseline=studies[0].baseline).get_figure(root=True)
        if not isinstance(fig, Figure):  # pragma: no cover - axes always belong to a figure here
            raise TypeError("critical-difference axes without a figure")
        return fig

    items = [Item("Tables", "cross_study", partial(cross_table, studies, metrics=metrics, variants=variants)),
             Item("Tables", "cross_study_friedman", lambda: ftable),
             Item("Tables", "cross_study_ranks", lambda: pd.DataFrame(
                 {m: r.avg_ranks for m, r in results.items()}).rename_axis("variant").reset_index()),
             *(Item("Critical difference", f"critical_difference_{m}", partial(cd_figure, m)) for m in results)]
    lines = [f"# Cross-study report: {', '.join(names)}", "",
             *([f"> **{SIMULATED_NOTE}** (every study here is simulated).", ""] if simulated else []),
             f"Configurations shared by every study: {', '.join(variants)}.", ""]
    dropped = sorted({v for s in studies for v in _done(s)["variant"]} - set(variants))
    if dropped:
        lines += [f"Left out (not completed in every study): {', '.join(map(str, dropped))}.", ""]
    written: list[Path] = []
    for item in items:
        obj = item.make()
        if simulated:
            obj = mark_incomplete(obj, SIMULATED_NOTE)
        paths = _write_item(item, obj, root / "figures", root / "tables", formats)
        written += paths
        if isinstance(obj, Table):
            lines += [f"**{item.name}**", "", to_markdown(obj), ""]
        elif isinstance(obj, Figure):
            png = next((p for p in paths if p.suffix == ".png"), paths[0])
            lines += [f"![{item.name}]({png.relative_to(root).as_posix()})", ""]
        else:
            lines += [f"- raw data: [{paths[0].name}]({paths[0].relative_to(root).as_posix()})", ""]
    index = root / "report.md"
    _atomic_write(index, "\n".join(lines).encode())
    return [*written, index]
