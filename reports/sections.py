"""What a report contains, chosen by the study kind (grid / ablation / search) and by what the data hold.

``plan(study)`` returns lazy items (a file stem and a function making a Figure, a Table or a DataFrame);
``reports.build`` makes and writes them, so one item that cannot be drawn does not stop the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports import plots
from reports.caps import (
    MAX_SHOWN,
    cap_note,
    capped_status,
    is_capped,
    mark_capped,
    ranked,
    results_frame,
    status_frame,
)
from reports.confirmation import (
    confirmed_caption,
    confirmed_trials,
    confirmed_variants,
    curse_frame,
    curse_table,
    plot_curse,
    tuning_caption,
)
from reports.effects import effect_sizes
from reports.load import Study, completed
from reports.metrics import CLASSIFICATION_MAIN, REGRESSION_MAIN
from reports.paired_tables import evidence_table, study_evidence
from reports.progress import mark_incomplete, report_notes
from reports.router_stats import has_reliability
from reports.scales import study_scales
from reports.search_stats import param_importance
from reports.style import PAGE_WIDTH, new_figure
from reports.tables import Table, ablation_table, comparison_table, results_table, status_table

__all__ = ["Artifact", "Item", "focus_variant", "main_metrics", "plan", "ranked_variants"]

Artifact: TypeAlias = Figure | Table | pd.DataFrame


@dataclass(frozen=True)
class Item:
    """One output of the report: ``make()`` builds it; ``name`` is its file stem."""

    section: str
    name: str
    make: Callable[[], Artifact]
    #: Shown under the item in report.md (e.g. that a large study's table shows only its best configurations).
    note: str | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def _done(df: pd.DataFrame) -> pd.DataFrame:
    return completed(df)


def main_metrics(study: Study) -> list[str]:
    """Headline test metrics present in the trials table (not all null), in paper order."""
    names = CLASSIFICATION_MAIN if study.task == "classification" else REGRESSION_MAIN
    done = _done(study.trials)
    return [f"test_{m}" for m in names if f"test_{m}" in done.columns and done[f"test_{m}"].notna().any()]


def ranked_variants(study: Study) -> list[str]:
    """Variants ordered by mean objective over completed seeds, best first (``reports.caps.ranked``: the
    order the capped tables and figures pick their best from)."""
    return ranked(study)


def _best(study: Study) -> str:
    ranked = ranked_variants(study)
    if not ranked:
        raise ValueError("no completed trial with an objective value")
    return ranked[0]


def _figure_of(draw: Callable[..., Axes], *args: object, **kwargs: object) -> Figure:
    """Run an axes-level drawing function and return its (root) figure."""
    fig = draw(*args, **kwargs).get_figure(root=True)
    if fig is None:  # pragma: no cover - axes always belong to a figure here
        raise TypeError("drawing function returned axes without a figure")
    return fig


def focus_variant(study: Study) -> str | None:
    """The variant the router figures show: the ablation baseline, else the best configuration."""
    ranked = ranked_variants(study)
    if study.kind == "ablation" and study.baseline in ranked:
        return study.baseline
    return ranked[0] if ranked else None


def _common(study: Study, metrics: list[str]) -> list[Item]:
    col, _ = study.objective
    if is_capped(study):
        items = [Item("Trials", "status", lambda: capped_status(study), cap_note(study, MAX_SHOWN, "status_all")),
                 Item("Trials", "status_all", lambda: status_frame(study.trials))]
    else:
        items = [Item("Trials", "status", lambda: status_table(study.trials))]
    if not study.epochs.empty and col in study.epochs.columns:
        top = ranked_variants(study)[:6]
        if study.kind == "ablation" and study.baseline in ranked_variants(study):  # the baseline first, always
            top = [study.baseline, *[v for v in ranked_variants(study) if v != study.baseline][:5]]
        if study.kind == "grid":  # in the order of the grid's values, not of their scores
            by_value = study.trials.sort_values([*study.varied, "variant"], kind="stable")["variant"]
            top = [v for v in dict.fromkeys(by_value) if v in top]
        cols = [c for c in (col, "train_loss") if c in study.epochs.columns]
        items.append(Item("Learning curves", "learning_curves", lambda: plots.plot_learning_curves_panels(
            study.epochs, metrics=cols, hue="variant", order=top)))
    return items


def _grid(study: Study, metrics: list[str]) -> list[Item]:
    col, _ = study.objective
    varied = study.varied
    items: list[Item] = []
    shown = [col, *metrics]
    for p in varied:
        others = [q for q in varied if q != p]
        numeric = pd.api.types.is_numeric_dtype(study.trials[p])
        if numeric and len(others) <= 1:
            hue = others[0] if others else None
            items.append(Item("Sensitivity", f"sensitivity_{_slug(p)}", partial(
                plots.plot_sensitivity_panels, study.trials, x=p, metrics=shown, hue=hue)))
            values = study.trials[p].dropna().unique()
            if len(values) >= 3 and study.trials["seed"].nunique() >= 2:
                items.append(Item("Sensitivity", f"sensitivity_{_slug(p)}_paired", partial(
                    plots.plot_sensitivity_panels, study.trials, x=p, metrics=shown, hue=hue,
                    reference=float(min(values)))))
            if {"test_acc7", "test_mae"} <= set(metrics) and hue is None:
                items.append(Item("Sensitivity", f"sensitivity_{_slug(p)}_two_axis", partial(
                    _figure_of, plots.plot_sensitivity_two_axis, study.trials, x=p)))
    if any(not pd.api.types.is_numeric_dtype(study.trials[p]) for p in varied) or len(varied) > 2:
        if is_capped(study):
            fig_note = cap_note(study, MAX_SHOWN, "results_all")
            items.append(Item("Configurations", "configurations", lambda: mark_capped(plots.plot_ablation_panels(
                _top(study), metrics=metrics[:3], baseline=_best(study), kind="absolute"), fig_note), fig_note))
        else:
            items.append(Item("Configurations", "configurations", lambda: plots.plot_ablation_panels(
                study.trials, metrics=metrics[:3], baseline=_best(study), kind="absolute")))
    by = varied or ["variant"]
    caption = "Mean ± std over seeds."
    if is_capped(study):
        caption = (f"{cap_note(study, MAX_SHOWN, 'results_all')}, in the grid's order; marks compare the rows "
                   f"shown. {caption}")
    items.append(Item("Tables", "results", lambda: results_table(
        _top(study), by=by, metrics=shown, caption=tuning_caption(study, caption, "results_confirmed"))))
    if is_capped(study):  # every configuration, after the table that shows the best
        every = [*by, "variant"] if "variant" not in by else by
        items.append(Item("Tables", "results_all", lambda: results_frame(study.trials, by=every, metrics=shown)))
    if study.trials["seed"].nunique() >= 2:  # Δ to the first configuration in the grid's order, paired by seed
        in_order = study.trials.sort_values([*varied, "variant"], kind="stable")  # rows in the grid's order
        base = str(in_order["variant"].iloc[0])
        if is_capped(study):
            shown_variants = [base, *[v for v in ranked_variants(study) if v != base][:MAX_SHOWN - 1]]
            cache: dict[str, pd.DataFrame] = {}

            def effects() -> pd.DataFrame:
                if "x" not in cache:
                    cache["x"] = effect_sizes(_done(in_order), baseline=base, metrics=shown)
                return cache["x"]

            effects_note = cap_note(study, MAX_SHOWN - 1, "results_effects_all").replace(
                "best of", "best (and the reference) of")
            items += [Item("Tables", "results_effects", lambda: comparison_table(
                          in_order, baseline=base, metrics=shown, comparison=effects(), shown=shown_variants,
                          note=effects_note), effects_note),
                      Item("Tables", "results_effects_all", effects)]
        else:
            items.append(Item("Tables", "results_effects", lambda: comparison_table(
                in_order, baseline=base, metrics=shown)))
    return items


def _top(study: Study) -> pd.DataFrame:
    """The trials of the best ``MAX_SHOWN`` configurations when the study has more (``reports.caps``), else all."""
    if not is_capped(study):
        return study.trials
    return study.trials[study.trials["variant"].isin(set(ranked_variants(study)[:MAX_SHOWN]))]


def _ablation(study: Study, metrics: list[str]) -> list[Item]:
    base = study.baseline or "<study.json has no baseline>"
    t = study.trials
    return [
        Item("Ablation", "ablation_delta", lambda: plots.plot_ablation_panels(t, metrics=metrics, baseline=base)),
        Item("Ablation", "ablation_absolute", lambda: plots.plot_ablation_panels(
            t, metrics=metrics, baseline=base, kind="absolute")),
        Item("Tables", "ablation", lambda: _captioned(ablation_table(t, baseline=base, metrics=metrics), study)),
        Item("Tables", "ablation_tests", lambda: comparison_table(t, baseline=base, metrics=metrics)),
        Item("Tables", "ablation_tests_raw", lambda: effect_sizes(_done(t), baseline=base, metrics=metrics)),
        *_sample_items(study, base, metrics),
    ]


def _sample_items(study: Study, base: str, metrics: list[str]) -> list[Item]:
    """Per-sample paired tests (computed once, shared by the table and the raw CSV)."""
    cache: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

    def run() -> tuple[pd.DataFrame, pd.DataFrame]:
        if "x" not in cache:
            cache["x"] = study_evidence(study, baseline=base, metrics=metrics)
        return cache["x"]

    return [Item("Tables", "ablation_sample_tests", lambda: evidence_table(
                run()[0], baseline=base, n_samples=int(run()[1]["n_samples"].max()))),
            Item("Tables", "ablation_sample_tests_raw", lambda: run()[1])]


def _search(study: Study, metrics: list[str]) -> list[Item]:
    col, mode = study.objective
    t, varied = study.trials, study.varied

    def progress() -> Figure:
        fig, axes = new_figure(PAGE_WIDTH, height=2.4, ncols=2, sharey=True)
        plots.plot_best_so_far(t, metric=col, mode=mode, x="order", ax=axes[0, 0])
        plots.plot_best_so_far(t, metric=col, mode=mode, x="cum_epochs", ax=axes[0, 1])
        axes[0, 1].get_legend().remove()
        return fig

    items = [Item("Search", "best_so_far", progress)]
    log = {p: sc.log for p, sc in study_scales(study).items()}  # the search space's log-sampled parameters
    if varied:
        cache: dict[str, pd.DataFrame] = {}

        def imp() -> pd.DataFrame:  # computed once for the figure and the CSV (a forest fit: seconds)
            if "x" not in cache:
                cache["x"] = param_importance(t, params=varied, metric=col, mode=mode,
                                              log=[p for p, is_log in log.items() if is_log])
            return cache["x"].copy()

        items += [Item("Search", "importance", lambda: _figure_of(lambda: plots.plot_importance(imp()))),
                  Item("Tables", "importance_raw", imp)]
    if len(varied) >= 2:
        items.append(Item("Search", "parallel_coordinates", partial(
            _figure_of, plots.plot_parallel_coordinates, t, params=varied, metric=col, mode=mode, log=log)))
    top = ranked_variants(study)[:10]
    items.append(Item("Tables", "top_configurations", lambda: results_table(
        t, by=["variant", *varied], metrics=[col, *metrics], order=top,
        caption=tuning_caption(study, "The 10 best configurations by the objective (mean ± std over seeds).",
                               "top_configurations_confirmed"))))
    return items


def _captioned(table: Table, study: Study) -> Table:
    table.caption = tuning_caption(study, table.caption, "ablation_confirmed")
    return table


def _confirmation(study: Study, metrics: list[str]) -> list[Item]:
    """Tuning vs fresh seeds for the confirmed configurations (nothing without confirmation trials)."""
    if not confirmed_variants(study):
        return []
    shown = [study.objective[0], *metrics[:2]]
    quoted = {"grid": "results", "ablation": "ablation", "search": "top_configurations"}[study.kind]
    by = ["variant", *study.varied] if study.kind == "search" else (study.varied or ["variant"])
    return [Item("Tables", f"{quoted}_confirmed", lambda: results_table(
                confirmed_trials(study), by=by, metrics=[study.objective[0], *metrics],
                order=confirmed_variants(study) if by[0] == "variant" else None, caption=confirmed_caption(study))),
            Item("Confirmation", "confirmation", lambda: plot_curse(study, shown)),
            Item("Tables", "confirmation", lambda: curse_table(study, [study.objective[0], *metrics])),
            Item("Tables", "confirmation_raw", lambda: curse_frame(study, [study.objective[0], *metrics]))]


def _router(study: Study) -> list[Item]:
    r = study.router
    if r.empty:
        return []
    focus = focus_variant(study)
    if focus is None:
        return []
    done = r[r["trial_id"].isin(set(_done(study.trials)["trial_id"]))]
    one = done[done["variant"] == focus]
    by_value = study.trials.sort_values([*study.varied, "variant"], kind="stable")["variant"]
    present = set(done["variant"].unique())  # once: a set per candidate costs minutes over thousands of trials
    levels = [v for v in ([focus, *ranked_variants(study)] if study.kind != "grid" else list(by_value))
              if v in present]
    levels = list(dict.fromkeys(levels))[:8]
    items = [Item("Router", "router_weights", partial(
        _figure_of, plots.plot_router_weights, done, hue="variant", order=levels))]
    if has_reliability(one):
        items.append(Item("Router", f"router_reliability_{_slug(focus)}", lambda: plots.plot_router_reliability(one)))
    if study.kind == "grid" and has_reliability(done):
        items += [Item("Router", f"router_correlation_{_slug(p)}", partial(
            _figure_of, plots.plot_router_correlation, done, study.trials, x=p))
            for p in study.varied if pd.api.types.is_numeric_dtype(study.trials[p])]
    items.append(Item("Router", f"router_by_label_{_slug(focus)}", partial(
        _figure_of, plots.plot_router_by_label, one)))
    return items


def _marked(make: Callable[[], Artifact], notes: list[str]) -> Artifact:
    obj = make()
    for note in reversed(notes):  # the first note ends up on top
        obj = mark_incomplete(obj, note)  # the same object, with the note added
    return obj


def plan(study: Study) -> list[Item]:
    """Every item of the report of ``study``, in report order; a simulated or incomplete study's figures
    and tables carry a note saying so (``reports.progress``)."""
    metrics = main_metrics(study)
    kind = {"grid": _grid, "ablation": _ablation, "search": _search}[study.kind]
    items = [*kind(study, metrics), *_confirmation(study, metrics), *_common(study, metrics), *_router(study)]
    notes = report_notes(study)
    if not notes:
        return items
    return [Item(i.section, i.name, partial(_marked, i.make, notes)) for i in items]
