"""Confirmation on fresh seeds in reports: quoted numbers, and the winner's curse made visible.

A study with ``confirm:`` trains its best configurations again on seeds that did not select them (rows with
``phase: confirm``, ``Study.confirm``). The configuration that won on the tuning seeds is, on average, the
one whose seeds happened to be kind to it, so its tuning-seed mean is optimistic (the winner's curse,
e.g. Cawley & Talbot 2010, "On over-fitting in model selection"). The report therefore gives the confirmed
configurations a table of their own on the fresh seeds (``confirmed_trials``, ``confirmed_caption``): the
numbers to quote. They are not mixed into the tuning-seed tables, whose rows share seeds and compare paired:
the seed shifts every configuration alike (on the synthetic benchmark by more than the configurations
differ), so a fresh-seed row next to tuning-seed rows would compare seeds, not configurations; those
tables' captions point to the confirmed table instead (``tuning_caption``). ``curse_table``/``plot_curse``
show tuning-seed against fresh-seed numbers for each confirmed configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.load import Study, completed
from reports.metrics import axis_label, metric_info
from reports.style import COLUMN_WIDTH, PAGE_WIDTH, new_figure
from reports.tables import Table, _mean_std, _signed

__all__ = ["confirmed_caption", "confirmed_trials", "confirmed_variants", "curse_frame", "curse_table", "plot_curse",
           "tuning_caption"]


def _confirmed(study: Study) -> pd.DataFrame:
    return completed(study.confirm) if not study.confirm.empty else study.confirm


def confirmed_variants(study: Study) -> list[str]:
    """Variants with completed confirmation trials, best first by their configuration's tuning-seed mean.

    A search may propose one configuration twice (two variant labels, one config_id); the confirmation runs
    it once under one label, so only labels with confirmation trials are listed, each ranked by every
    tuning row of its configuration."""
    done = _confirmed(study)
    if done.empty:
        return []
    col, mode = study.objective
    tuned = completed(study.trials)
    means = pd.Series({variant: tuned.loc[tuned["config_id"].isin(set(part["config_id"])), col].astype(float).mean()
                       for variant, part in done.groupby("variant", sort=True)}, dtype=float)
    return [str(v) for v in means.sort_values(ascending=mode == "min", kind="stable", na_position="last").index]


def confirmed_trials(study: Study) -> pd.DataFrame:
    """The completed confirmation trials: the numbers to quote for the confirmed configurations."""
    return _confirmed(study)


def _seeds(df: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in df["seed"].unique())


def confirmed_caption(study: Study) -> str:
    """Caption of a table of the confirmation trials."""
    col, _ = study.objective
    return (f"Confirmed on fresh seeds {_seeds(_confirmed(study))}: the {len(confirmed_variants(study))} best "
            f"configurations by {col} on the tuning seeds {_seeds(study.trials)}, trained again on seeds that did "
            "not select them (mean ± std over the fresh seeds). These are the numbers to quote for them; compare "
            "them with each other, not with tuning-seed rows (seeds shift every configuration alike).")


def tuning_caption(study: Study, caption: str, confirmed_table: str) -> str:
    """``caption`` of a tuning-seed table plus, when the study confirmed configurations, the table (file
    stem) that holds their confirmed numbers."""
    names = confirmed_variants(study)
    if not names:
        return caption
    return (f"{caption} Tuning seeds: these rows selected {', '.join(names)}, so theirs are optimistic; their "
            f"confirmed numbers are in {confirmed_table}.").strip()


def curse_frame(study: Study, metrics: Sequence[str]) -> pd.DataFrame:
    """Per confirmed configuration and metric: mean, std and n over the tuning seeds and over the fresh
    seeds, and ``shift`` = fresh mean − tuning mean (columns variant, metric, tune_*, fresh_*, shift)."""
    done = _confirmed(study)
    tuned = completed(study.trials)
    rows = []
    for variant in confirmed_variants(study):
        cids = set(done.loc[done["variant"] == variant, "config_id"])
        parts = {"tune": tuned[tuned["config_id"].isin(cids)], "fresh": done[done["variant"] == variant]}
        for m in metrics:
            if m not in done.columns:
                continue
            row: dict[str, object] = {"variant": variant, "metric": m}
            for name, part in parts.items():
                values = part[m].astype(float).dropna()
                row |= {f"{name}_mean": values.mean() if len(values) else np.nan,
                        f"{name}_std": values.std(ddof=1) if len(values) > 1 else np.nan,
                        f"{name}_n": len(values)}
            row["shift"] = float(row["fresh_mean"]) - float(row["tune_mean"])  # type: ignore[arg-type]
            rows.append(row)
    cols = ["variant", "metric", "tune_mean", "tune_std", "tune_n", "fresh_mean", "fresh_std", "fresh_n", "shift"]
    return pd.DataFrame(rows, columns=cols)


def curse_table(study: Study, metrics: Sequence[str]) -> Table:
    """Tuning seeds vs fresh seeds for every confirmed configuration (mean ± std over seeds, and the shift)."""
    frame = curse_frame(study, metrics)
    if frame.empty:
        raise ValueError("no completed confirmation trials")
    table = Table(header=["Configuration", "Metric", "tuning seeds", "n", "fresh seeds", "n", "shift"], rows=[],
                  align="llrrrrr",
                  caption=("Winner's curse: each confirmed configuration's mean ± std over the tuning seeds, which "
                           "selected it, and over fresh seeds it was trained on afterwards; shift = fresh − tuning "
                           "(in the metric's table units). Tables quote the fresh-seed numbers."))
    for r in frame.itertuples(index=False):
        info = metric_info(str(r.metric))
        scale = info.scale
        table.rows.append([str(r.variant), f"{info.name} ({info.split})" if info.split else info.name,
                           _mean_std(r.tune_mean * scale, r.tune_std * scale, info.decimals), str(r.tune_n),
                           _mean_std(r.fresh_mean * scale, r.fresh_std * scale, info.decimals), str(r.fresh_n),
                           _signed(r.shift * scale, info.decimals)])
    return table


def plot_curse(study: Study, metrics: Sequence[str]) -> Figure:
    """One panel per metric: for each confirmed configuration, its tuning-seed values (hollow) and fresh-seed
    values (filled), with their means joined by an arrow from tuning to confirmation."""
    names = confirmed_variants(study)
    if not names:
        raise ValueError("no completed confirmation trials")
    done, tuned = _confirmed(study), completed(study.trials)
    width = COLUMN_WIDTH if len(metrics) == 1 else PAGE_WIDTH
    fig, axes = new_figure(width, height=2.4, ncols=len(metrics))
    for ax, m in zip(axes[0], metrics):
        scale = metric_info(m).scale  # as the tables show it (accuracies in %)
        for i, variant in enumerate(names):
            cids = set(done.loc[done["variant"] == variant, "config_id"])
            tune_v = tuned.loc[tuned["config_id"].isin(cids), m].astype(float).dropna() * scale
            fresh_v = done.loc[done["variant"] == variant, m].astype(float).dropna() * scale
            ax.scatter(np.full(len(tune_v), i - 0.12), tune_v, s=14, facecolors="none", edgecolors="0.45",
                       label="tuning seeds" if i == 0 else None)
            ax.scatter(np.full(len(fresh_v), i + 0.12), fresh_v, s=14, color="C0",
                       label="fresh seeds" if i == 0 else None)
            if len(tune_v) and len(fresh_v):
                ax.annotate("", xy=(i + 0.12, fresh_v.mean()), xytext=(i - 0.12, tune_v.mean()),
                            arrowprops={"arrowstyle": "->", "color": "C3", "lw": 1.2})
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel(axis_label(m))
    axes[0, 0].legend(loc="best", fontsize="small")
    return fig
