"""Statistics of searches: best-so-far against trials and compute, and parameter importance.

Importance uses Optuna's evaluators when Optuna is importable (fANOVA when scikit-learn is installed,
else PED-ANOVA), and otherwise a labelled fallback of our own: eta-squared, the share of the objective's
variance explained by each parameter alone (numeric parameters in up to 5 quantile bins).

No importance is computed from fewer than ``MIN_IMPORTANCE_TRIALS`` completed trials: with 5 trials every
continuous parameter falls into 5 bins of one trial each and gets η² = 1, and fANOVA's forest fits the
noise just as well, so a number would look like a finding where there is none.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from emoe_schema import COMPLETED
from reports.load import completed
from reports.stats import is_log_spaced

__all__ = ["IMPORTANCE_LABELS", "MAX_OPTUNA_TRIALS", "MIN_IMPORTANCE_TRIALS", "best_so_far", "eta_squared",
           "param_importance", "sample_note", "too_few_note"]

IMPORTANCE_LABELS: dict[str, str] = {  # lines short enough for a 3.3 in column (the label is not clipped)
    "fanova": "Importance\n(Optuna fANOVA; sums to 1)",
    "ped-anova": "Importance\n(Optuna PED-ANOVA; sums to 1)",
    "eta2": "Importance: η², share of the\nobjective's variance explained\nby the parameter alone",
    "none": "Importance (not computed)",
}
#: fewer completed trials (with an objective value) than this: importance is "too few trials to judge"
MIN_IMPORTANCE_TRIALS = 10
#: more completed trials than this: Optuna's importance is fitted on a seeded random sample of this many
#: (its forest costs tens of seconds per thousand trials), and every parameter's note says so
MAX_OPTUNA_TRIALS = 200


def sample_note(n: int) -> str:
    """The note of an importance fitted on a sample of ``n`` completed trials."""
    return f"fitted on a random {MAX_OPTUNA_TRIALS} of {n} completed trials"


def too_few_note(n: int) -> str:
    """The note of a parameter whose importance is not judged from ``n`` completed trials."""
    return f"too few trials to judge ({n} completed; needs ≥ {MIN_IMPORTANCE_TRIALS})"


def best_so_far(trials: pd.DataFrame, *, metric: str, mode: str) -> pd.DataFrame:
    """Running best of ``metric`` over configurations in the order they started, with the compute spent.

    Seeds of one configuration (config_id) are averaged over their completed trials; compute counts every
    trial (pruned and failed included). Columns: ``order, config_id, variant, value, completed, epochs,
    time_s, cum_epochs, cum_time_s, best``; ``best`` is NaN until the first completed configuration.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    need = ["config_id", "variant", "status", metric]
    missing = [c for c in need if c not in trials.columns]
    if missing:
        raise KeyError(f"best_so_far: trials lack columns {missing}")
    df = trials.copy()
    df["_start"] = pd.to_datetime(df["started_at"], utc=True) if "started_at" in df else pd.NaT
    df["_value"] = pd.to_numeric(df[metric], errors="coerce").where(df["status"] == COMPLETED)
    df["_epochs"] = pd.to_numeric(df.get("epochs_run", pd.Series(0, index=df.index)), errors="coerce").fillna(0)
    df["_time"] = pd.to_numeric(df.get("time_total_s", pd.Series(0.0, index=df.index)), errors="coerce").fillna(0)
    df["_done"] = df["status"] == COMPLETED
    df["_row"] = np.arange(len(df))
    g = df.groupby("config_id", sort=False)
    out = pd.DataFrame({
        "variant": g["variant"].first(), "start": g["_start"].min(), "value": g["_value"].mean(),
        "completed": g["_done"].any(), "epochs": g["_epochs"].sum(), "time_s": g["_time"].sum(),
        "first_row": g["_row"].min(),
    }).reset_index()
    out = out.sort_values(["start", "first_row"], kind="stable", na_position="last", ignore_index=True)
    out["order"] = np.arange(1, len(out) + 1)
    out["cum_epochs"] = out["epochs"].cumsum()
    out["cum_time_s"] = out["time_s"].cumsum()
    running = out["value"].cummin() if mode == "min" else out["value"].cummax()
    out["best"] = running.ffill()
    return out[["order", "config_id", "variant", "value", "completed", "epochs", "time_s", "cum_epochs",
                "cum_time_s", "best"]]


def eta_squared(values: pd.Series, target: pd.Series, max_bins: int = 5) -> float:
    """Between-group sum of squares over total sum of squares of ``target`` grouped by ``values``."""
    y = pd.to_numeric(target, errors="coerce").to_numpy(dtype=float)
    x = pd.Series(values).reset_index(drop=True)
    numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
    if numeric and x.nunique() > max_bins:  # a missing value (conditional parameter) is its own group
        groups = pd.qcut(x.rank(method="first"), q=max_bins, labels=False).fillna(-1)
    else:
        groups = x.astype(str)
    total = float(np.sum((y - y.mean()) ** 2))
    if total == 0 or x.nunique() < 2:
        return 0.0
    means = pd.Series(y).groupby(groups.to_numpy()).transform("mean").to_numpy()
    return float(np.sum((means - y.mean()) ** 2) / total)


def _optuna_importance(df: pd.DataFrame, params: list[str], metric: str, mode: str, method: str,
                       log: Collection[str] | None) -> dict[str, float]:
    import optuna  # optional (extra "reports-search"): only reached when find_spec found it
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    cols: dict[str, pd.Series] = {}
    for p in params:
        s = df[p]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        is_log = numeric and bool(s.min() > 0 and (p in log if log is not None else is_log_spaced(s)))
        if pd.api.types.is_integer_dtype(s):
            dists[p] = IntDistribution(int(s.min()), int(s.max()), log=is_log)
            cols[p] = s.astype(int)
        elif pd.api.types.is_float_dtype(s):
            dists[p] = FloatDistribution(float(s.min()), float(s.max()), log=is_log)
            cols[p] = s.astype(float)
        else:
            dists[p] = CategoricalDistribution(sorted(s.astype(str).unique()))
            cols[p] = s.astype(str)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    study.add_trials([
        optuna.trial.create_trial(params={p: cols[p].iloc[i].item() if hasattr(cols[p].iloc[i], "item")
                                          else cols[p].iloc[i] for p in params},
                                  distributions=dists, value=float(df[metric].iloc[i]))
        for i in range(len(df))
    ])
    evaluator = (optuna.importance.FanovaImportanceEvaluator(seed=0) if method == "fanova"
                 else optuna.importance.PedAnovaImportanceEvaluator())
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, params=params))


def param_importance(trials: pd.DataFrame, *, params: Sequence[str], metric: str, mode: str,
                     method: str = "auto", log: Collection[str] | None = None) -> pd.DataFrame:
    """Importance of each varied parameter for ``metric`` over completed trials, most important first.

    ``method``: "fanova" or "ped-anova" (Optuna), "eta2" (ours), or "auto" (fanova if scikit-learn is
    installed, else ped-anova, else eta2). ``log``: the parameters sampled log-uniformly (Optuna's
    distributions; None: guessed from the values). Columns: param, importance, method, note. With fewer than
    ``MIN_IMPORTANCE_TRIALS`` completed trials every importance is NaN, the method "none", and the note says
    why; a parameter
    that never varied gets 0 and the note "did not vary".
    """
    if method not in ("auto", "fanova", "ped-anova", "eta2"):
        raise ValueError(f"method must be auto, fanova, ped-anova or eta2, got {method!r}")
    df = completed(trials).dropna(subset=[metric]).reset_index(drop=True)
    varying = [p for p in params if p in df.columns and df[p].nunique() > 1]
    if method == "auto":
        has_optuna = importlib.util.find_spec("optuna") is not None
        if has_optuna and importlib.util.find_spec("sklearn") is not None:
            method = "fanova"
        elif has_optuna:
            method = "ped-anova"
        else:
            method = "eta2"
    out = pd.DataFrame({"param": list(params)})
    out["note"] = ["" if p in varying else "did not vary" for p in params]
    if len(df) < MIN_IMPORTANCE_TRIALS:
        out["importance"] = np.nan
        out.loc[out["note"] == "", "note"] = too_few_note(len(df))
        out["method"] = "none"
        return out[["param", "importance", "method", "note"]]
    complete = df.dropna(subset=varying)  # Optuna needs a value for every parameter of a trial
    if method == "eta2" or not varying or len(complete) < MIN_IMPORTANCE_TRIALS:
        scores = {p: eta_squared(df[p], df[metric]) for p in varying}
        method = "eta2"
    else:
        if len(complete) > MAX_OPTUNA_TRIALS:  # Optuna's fANOVA costs minutes over thousands of trials
            out.loc[out["note"] == "", "note"] = sample_note(len(complete))
            complete = complete.sample(n=MAX_OPTUNA_TRIALS, random_state=0)
        scores = _optuna_importance(complete.reset_index(drop=True), varying, metric, mode, method, log)
    out["importance"] = out["param"].map(scores).fillna(0.0).astype(float)
    out["method"] = method
    out = out[["param", "importance", "method", "note"]]
    return out.sort_values("importance", ascending=False, kind="stable", ignore_index=True)
