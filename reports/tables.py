"""Paper tables: results per variant or configuration (mean ± std over seeds, n; bold only for a row
significantly better than every other, † for rows tied with the best: ``reports.effects.emphasis``) and paired
comparisons against the baseline, rendered as LaTeX (booktabs, ready to \\input) or Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emoe_schema import STATUSES
from reports.effects import effect_sizes, emphasis
from reports.load import completed
from reports.metrics import metric_info
from reports.stats import summarize

__all__ = [
    "EMPHASIS_NOTE",
    "UNTESTED_NOTE",
    "Table",
    "ablation_table",
    "comparison_table",
    "latex_escape",
    "results_table",
    "status_table",
    "to_latex",
    "to_markdown",
]

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "−": "$-$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "Δ": r"$\Delta$",
                  "λ": r"$\lambda$", "τ": r"$\tau$", "α": r"$\alpha$", "χ": r"$\chi$", "²": r"$^2$",
                  "–": "--"}


#: The emphasis convention, stated in the caption of every table that applies it.
EMPHASIS_NOTE = ("Bold: significantly better than every other row; †: not significantly worse than the best "
                 "mean (paired t-test over seeds against the best mean over the seeds all rows share, "
                 "Holm-corrected, p < 0.05).")
#: Added to it when a column had rows with a single seed, which the rule cannot test.
UNTESTED_NOTE = "Rows with fewer than 2 seeds in a column are not tested and not marked."


@dataclass
class Table:
    """A rendered-agnostic table: header, string cells, bold and †-marked cells, alignment and a caption."""

    header: list[str]
    rows: list[list[str]]
    align: str  # one of l/r/c per column
    caption: str = ""
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column)
    marked: set[tuple[int, int]] = field(default_factory=set)  # (row, column) shown with a dagger


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map ±, −, arrows, Greek letters to math)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _num(x: float, decimals: int) -> str:
    if not np.isfinite(x):
        return "–"
    s = f"{x:.{decimals}f}"
    if float(s) == 0:
        s = s.lstrip("-")  # no "-0.0"
    return s.replace("-", "−")


def _signed(x: float, decimals: int) -> str:
    """A difference with its sign (+0.012, −0.003; 0.000 unsigned, – when undefined)."""
    text = _num(x, decimals)
    return "+" + text if np.isfinite(x) and not text.startswith("−") and float(text) != 0 else text


def _mean_std(mean: float, std: float, decimals: int) -> str:
    return _num(mean, decimals) if not np.isfinite(std) else f"{_num(mean, decimals)} ± {_num(std, decimals)}"


_SPLIT_SHORT = {"valid": "Val.", "test": "Test", "train": "Train"}


def _key_text(v: object) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _header(col: str, split: bool = False) -> str:
    info = metric_info(col)
    arrow = "↑" if info.higher_is_better else "↓"
    name = f"{_SPLIT_SHORT[info.split]} {info.name}" if split and info.split else info.name
    return f"{name} (%) {arrow}" if info.percent else f"{name} {arrow}"


def results_table(trials: pd.DataFrame, *, by: str | Sequence[str], metrics: Sequence[str],
                  order: Sequence[object] | None = None, caption: str = "") -> Table:
    """One row per group (e.g. variant, or a grid's parameter values): n seeds and mean ± std of each metric
    over the completed trials (n as a range, e.g. 4–5, when a metric is missing on some seeds). Per column,
    ``reports.effects.emphasis`` decides the marks: bold for a row significantly better than every other, †
    for the rows not significantly worse than the best mean; rows with a single seed are not tested, and with
    no testable pair (fewer than 2 shared seeds) nothing is marked. The caption states the convention."""
    keys = [by] if isinstance(by, str) else list(by)
    data = completed(trials) if "status" in trials.columns else trials
    summ = summarize(data, keys, metrics)
    # group labels as shown; a missing parameter value (conditional search space) shows as "–"
    summ["_label"] = [tuple(_key_text(v) for v in row) for row in summ[keys].itertuples(index=False)]
    firsts = summ.drop_duplicates("_label")
    if order is not None:
        pos = {v: i for i, v in enumerate(order)}
        firsts = firsts.assign(_o=firsts[keys[0]].map(pos)).dropna(subset=["_o"]).sort_values("_o")
    split = len({metric_info(m).split for m in metrics}) > 1
    table = Table(header=[*keys, "n", *(_header(m, split) for m in metrics)], rows=[],
                  align="l" * len(keys) + "r" * (1 + len(metrics)), caption=caption)
    for label in firsts["_label"]:
        part = summ[summ["_label"] == label].set_index("metric")
        lo, hi = int(part["n"].min()), int(part["n"].max())
        cells = [*label, str(hi) if lo == hi else f"{lo}–{hi}"]  # a metric missing on some seeds: n per metric
        for m in metrics:
            info = metric_info(m)
            mean, std = part.loc[m, "mean"] * info.scale, part.loc[m, "std"] * info.scale
            cells.append(_mean_std(mean, std, info.decimals))
        table.rows.append(cells)
    rows = {label: i for i, label in enumerate(firsts["_label"])}
    labelled = data.assign(_label=[tuple(_key_text(v) for v in r) for r in data[keys].itertuples(index=False)])
    labelled = labelled[labelled["_label"].isin(rows)]
    tested = untested = False
    for j, m in enumerate(metrics):
        emph = emphasis(labelled, metric=m, group="_label", higher_is_better=metric_info(m).higher_is_better)
        tested |= emph.testable
        untested |= bool(emph.untested)
        table.bold |= {(rows[g], len(keys) + 1 + j) for g in emph.best}
        table.marked |= {(rows[g], len(keys) + 1 + j) for g in emph.tied}
    if tested:
        table.caption = f"{caption} {EMPHASIS_NOTE}{' ' + UNTESTED_NOTE if untested else ''}".strip()
    return table


def ablation_table(trials: pd.DataFrame, *, baseline: str, metrics: Sequence[str],
                   group: str = "variant") -> Table:
    """Variants (baseline first) with mean ± std over seeds and n; best in bold."""
    done = completed(trials) if "status" in trials.columns else trials
    names = [baseline, *[v for v in pd.unique(done[group]) if v != baseline]]
    n_seeds = done.groupby(group)["seed"].nunique()
    n_text = (f"seeds (n per row, {n_seeds.min()}–{n_seeds.max()})" if n_seeds.min() != n_seeds.max()
              else f"n={n_seeds.max()} seeds")
    cap = f"Mean ± std over {n_text} of the metrics at the epoch selected on validation; accuracies and F1 in %."
    table = results_table(done, by=group, metrics=metrics, order=names, caption=cap)
    table.header[0] = "Variant"
    return table


def comparison_table(trials: pd.DataFrame, *, baseline: str, metrics: Sequence[str], group: str = "variant",
                     comparison: pd.DataFrame | None = None, shown: Sequence[str] | None = None,
                     note: str = "") -> Table:
    """Paired differences to the baseline: Δ mean ± std over seeds, its 95% bootstrap CI (paired over seeds,
    ``reports.effects.effect_sizes``), n pairs, paired t and Wilcoxon p-values (Holm-corrected per metric);
    p < 0.05 in bold, notes where a test is undefined. ``shown`` limits the rows to those groups (a large
    study's best, ``reports.caps``) while the Holm family stays every group compared; ``note`` (saying so)
    opens the caption."""
    done = completed(trials) if "status" in trials.columns else trials
    comp = comparison if comparison is not None else effect_sizes(
        done, baseline=baseline, metrics=metrics, group=group)
    if "boot_ci_low" not in comp.columns:
        raise ValueError("comparison_table: the comparison needs bootstrap CI columns (reports.effects.effect_sizes)")
    k = comp[group].nunique()
    caption = (f"Δ = variant − {baseline}, paired by seed (accuracies in percentage points); 95% CI: percentile "
               "bootstrap over seeds (exact for up to 6 seeds; narrow with few seeds, the tests decide). "
               f"p: two-sided paired t-test and Wilcoxon signed-rank, Holm-corrected over the {k} variants per "
               "metric; p < 0.05 in bold.")
    if note:
        caption = f"{note}. {caption}"
    if shown is not None:
        comp = comp[comp[group].isin(set(shown))]
    notes = [[n for n in str(text).split("; ") if n and not n.startswith("Wilcoxon cannot")]
             for text in comp["note"]]
    if comp["note"].astype(str).str.contains("Wilcoxon cannot").any():
        caption += (" With n pairs the smallest two-sided Wilcoxon p is 2/2^n, so it cannot reach 0.05 with "
                    "fewer than 6 seeds.")
    with_notes = any(notes)
    mixed = len({metric_info(m).split for m in comp["metric"]}) > 1  # e.g. valid_mae and test_mae: name the split
    table = Table(header=["Variant", "Metric", f"Δ vs {baseline}", "95% CI (bootstrap)", "n pairs", "p (t, Holm)",
                          "p (Wilcoxon, Holm)", *(["note"] if with_notes else [])], rows=[],
                  align="llrrrrr" + ("l" if with_notes else ""), caption=caption)
    for i, (r, row_notes) in enumerate(zip(comp.itertuples(index=False), notes)):
        info = metric_info(r.metric)
        s, d = info.scale, info.decimals
        ci = f"[{_num(r.boot_ci_low * s, d)}, {_num(r.boot_ci_high * s, d)}]" if np.isfinite(r.boot_ci_low) else "–"
        p_t, p_w = r.p_t_holm, r.p_wilcoxon_holm
        name = f"{_SPLIT_SHORT.get(str(info.split), '')} {info.name}".strip() if mixed else info.name
        table.rows.append([str(getattr(r, group)), name, _mean_std(r.diff_mean * s, r.diff_std * s, d), ci,
                           str(r.n_pairs), _p(p_t), _p(p_w), *(["; ".join(row_notes)] if with_notes else [])])
        table.bold |= {(i, j) for j, p in ((5, p_t), (6, p_w)) if np.isfinite(p) and p < 0.05}
    return table


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def status_table(trials: pd.DataFrame, group: str = "variant") -> Table:
    """Trials per status and group, so failed, diverged and pruned trials are never silently dropped."""
    counts = trials.groupby([group, "status"]).size().unstack(fill_value=0)
    statuses = [s for s in STATUSES if s in counts.columns]
    statuses += [s for s in counts.columns if s not in statuses]
    rows = [[str(g), *(str(int(counts.loc[g, s])) for s in statuses)] for g in counts.index]
    return Table(header=[group, *statuses], rows=rows, align="l" + "r" * len(statuses),
                 caption="Trials per status (only completed trials enter the statistics).")


def _cell(table: Table, i: int, j: int, text: str, latex: bool) -> str:
    body = latex_escape(text) if latex else text.replace("|", "\\|")
    if (i, j) in table.marked:
        body += r"$^\dagger$" if latex else "†"
    if (i, j) in table.bold:
        return rf"\textbf{{{body}}}" if latex else f"**{body}**"
    return body


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), caption as a comment, cells escaped."""
    lines = [f"% {table.caption}" if table.caption else "% table generated by python -m reports",
             "% requires \\usepackage{booktabs}", rf"\begin{{tabular}}{{{table.align}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(_cell(table, i, j, c, True) for j, c in enumerate(row)) + r" \\"
              for i, row in enumerate(table.rows)]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with the caption in italics below it."""
    rule = {"l": ":--", "r": "--:", "c": ":-:"}
    out = ["| " + " | ".join(h.replace("|", "\\|") for h in table.header) + " |",
           "|" + "|".join(rule[a] for a in table.align) + "|"]
    out += ["| " + " | ".join(_cell(table, i, j, c, False) for j, c in enumerate(row)) + " |"
            for i, row in enumerate(table.rows)]
    if table.caption:
        out += ["", f"*{table.caption}*"]
    return "\n".join(out) + "\n"
