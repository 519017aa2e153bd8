"""Statistics of the per-sample router weights (router/ table): long form, correlation with the true
modality reliabilities of synthetic data, and mean weights per label bin with CIs over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.stats import summarize

__all__ = [
    "MODALITIES",
    "MODALITY_NAMES",
    "grouped_pearson",
    "has_reliability",
    "label_bins",
    "reliability_correlation",
    "weights_by_label",
    "weights_long",
]

MODALITIES: tuple[str, str, str] = ("l", "v", "a")
MODALITY_NAMES: dict[str, str] = {"l": "Language", "v": "Vision", "a": "Acoustic"}


def _keys(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def has_reliability(router: pd.DataFrame) -> bool:
    """Whether the table carries true reliabilities (synthetic data): r_l, r_v, r_a present and not all null."""
    cols = [f"r_{m}" for m in MODALITIES]
    return all(c in router.columns for c in cols) and bool(router[cols].notna().all(axis=1).any())


def weights_long(router: pd.DataFrame, by: str | Sequence[str] = "variant") -> pd.DataFrame:
    """One row per (sample, modality): ``*by, trial_id, seed, sample, label, modality, weight, reliability``."""
    keys = _keys(by)
    ids = list(dict.fromkeys([*keys, "trial_id", "seed", "sample", "label"]))
    parts = []
    for m in MODALITIES:
        part = router[ids].copy()
        part["modality"] = m
        part["weight"] = router[f"w_{m}"].to_numpy(dtype=float)
        rel = f"r_{m}"
        part["reliability"] = router[rel].to_numpy(dtype=float) if rel in router.columns else np.nan
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(np.corrcoef(x, y)[0, 1])


def grouped_pearson(df: pd.DataFrame, keys: Sequence[str], x: str = "weight", y: str = "reliability"
                    ) -> pd.DataFrame:
    """Pearson r of ``x`` and ``y`` within each group of ``keys`` (rows where both are finite), as
    :func:`_pearson` per group but in a few vectorised passes (one Python call per group costs seconds over the
    thousands of trials of a large study). Columns: ``*keys, r``; NaN with under 3 pairs or a constant side."""
    keys = list(keys)
    xs, ys = df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    data = df.loc[ok, keys].assign(_x=xs[ok], _y=ys[ok])
    g = data.groupby(keys, sort=False)
    data["_dx"] = data["_x"] - g["_x"].transform("mean")
    data["_dy"] = data["_y"] - g["_y"].transform("mean")
    data["_xy"], data["_xx"], data["_yy"] = data["_dx"] * data["_dy"], data["_dx"] ** 2, data["_dy"] ** 2
    agg = data.groupby(keys, sort=False).agg(n=("_x", "size"), x_min=("_x", "min"), x_max=("_x", "max"),
                                             y_min=("_y", "min"), y_max=("_y", "max"), xy=("_xy", "sum"),
                                             xx=("_xx", "sum"), yy=("_yy", "sum"))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(agg["xy"] / np.sqrt(agg["xx"] * agg["yy"]), -1.0, 1.0)
    bad = (agg["n"] < 3) | (agg["x_max"] == agg["x_min"]) | (agg["y_max"] == agg["y_min"])
    out = df[keys].drop_duplicates().merge(r.where(~bad).rename("r").reset_index(), on=keys, how="left")
    return out.reset_index(drop=True)


def reliability_correlation(router: pd.DataFrame, by: str | Sequence[str] = "variant") -> pd.DataFrame:
    """Pearson r between each modality's weight and its true reliability.

    One row per (group, modality): ``r_pooled`` over all samples of all seeds, ``n_samples``, and the
    per-seed correlations summarised over seeds (``n`` seeds, ``mean``, ``std``, ``ci_low``, ``ci_high``).
    NaN where a weight or reliability is constant (e.g. a uniform router) or reliabilities are missing.
    """
    keys = _keys(by)
    long = weights_long(router, keys)
    gcols = [*keys, "modality"]
    pooled = grouped_pearson(long, gcols).rename(columns={"r": "r_pooled"})
    counts = long.groupby(gcols, sort=False)["weight"].count().rename("n_samples").reset_index()
    pooled = pooled.merge(counts, on=gcols, how="left")
    per_trial = grouped_pearson(long, list(dict.fromkeys([*gcols, "trial_id"])))
    seeds = summarize(per_trial, gcols, ["r"]).drop(columns="metric")
    out = pooled.merge(seeds, on=gcols, how="left")
    out["n_samples"] = out["n_samples"].astype("int64")
    return out


def _name(v: float) -> str:
    return f"{v + 0.0:g}".replace("-", "−")  # + 0.0 turns -0.0 into 0.0


def label_bins(labels: pd.Series | np.ndarray) -> pd.Series:
    """Bin labels for 'weights by label': class values for integer labels with at most 10 classes; the
    Acc-7 classes (rounded, clipped to [-3, 3]) for sentiment scores in [-3, 3]; else 7 equal-width bins.
    Returns an ordered categorical with readable names.
    """
    y = pd.Series(np.asarray(labels, dtype=float))
    distinct = np.sort(y.dropna().unique())
    if distinct.size <= 10 and np.all(distinct == np.round(distinct)):
        names = [_name(v) for v in distinct]
        return pd.Series(pd.Categorical(y.map(lambda v: _name(v) if np.isfinite(v) else None),
                                        categories=names, ordered=True))
    if distinct[0] >= -3 and distinct[-1] <= 3:
        codes = np.clip(np.round(y), -3, 3)
        names = [_name(v) for v in np.sort(codes.dropna().unique())]
        return pd.Series(pd.Categorical(codes.map(lambda v: _name(v) if np.isfinite(v) else None),
                                        categories=names, ordered=True))
    cut = pd.cut(y, bins=7, precision=2)
    return pd.Series(cut.cat.rename_categories([f"{iv.left:.2g}..{iv.right:.2g}" for iv in cut.cat.categories]))


def weights_by_label(router: pd.DataFrame, by: str | Sequence[str] = "variant") -> pd.DataFrame:
    """Mean router weight per (group, label bin, modality): per-seed means, then mean and CI over seeds.

    Columns: ``*by, label_bin, modality, n_samples`` (all seeds), ``n`` (seeds), ``mean, std, ci_low, ci_high``.
    """
    keys = _keys(by)
    df = router.copy()
    bins = label_bins(df["label"])
    df["label_bin"] = bins.to_numpy()
    long = weights_long(df.assign(label=df["label_bin"]), keys).rename(columns={"label": "label_bin"})
    gcols = [*keys, "label_bin", "modality"]
    counts = long.groupby(gcols, observed=True, sort=False).size().rename("n_samples").reset_index()
    per_seed = long.groupby([*gcols, "trial_id"], observed=True, sort=False)["weight"].mean().reset_index()
    seeds = summarize(per_seed, gcols, ["weight"]).drop(columns=["metric", "sem"])
    out = counts.merge(seeds, on=gcols, how="left")
    out["modality"] = pd.Categorical(out["modality"], categories=list(MODALITIES), ordered=True)
    out["label_bin"] = pd.Categorical(out["label_bin"].astype(str), categories=bins.cat.categories, ordered=True)
    return out.sort_values(gcols, ignore_index=True)
