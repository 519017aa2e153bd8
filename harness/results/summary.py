"""End-of-study summary from the trials table: per configuration mean +- std over seeds, and the best.

Pure pandas on the Parquet rows (``docs/results.md``), so it works the same on a finished study read
back from disk. Configurations are grouped by ``config_id`` (one label per configuration); statistics
use completed trials only, as the confirmation's choice of the best and the reports do (diverged, pruned
and failed trials are counted), so the best configuration printed is the one a study confirms.
The table and the best configuration come from the tuning trials; a study with confirmation trials
(``phase: confirm``) gets one more block: each confirmed configuration's tuning-seed mean next to its
fresh-seed mean (the winner's curse, measured).
"""

from __future__ import annotations

import math
from typing import TypedDict

import pandas as pd

from harness.study.confirm import CONFIRM, tuning_rows

__all__ = ["SUMMARY_TEST_METRICS", "BestConfiguration", "best_configuration", "failure_lines", "format_confirmation",
           "format_summary", "last_line", "summarize"]


class BestConfiguration(TypedDict):
    """The best configuration of a study: ids, the values of its varied fields, the objective over seeds."""

    config_id: str
    variant: str
    params: dict[str, object]
    objective_mean: float
    objective_std: float

#: Test metrics shown in the summary, per label kind family (the first ones present are used).
SUMMARY_TEST_METRICS = ("test_mae", "test_corr", "test_acc2", "test_f1", "test_acc7", "test_acc",
                        "test_f1_macro")


def summarize(trials: pd.DataFrame, *, mode: str) -> pd.DataFrame:
    """One row per configuration: counts by status, objective and test metrics as mean and std.

    Sorted best first by the mean objective (``mode`` "min" or "max"); columns ``<metric>_mean`` and
    ``<metric>_std`` (std over seeds, NaN with one seed).
    """
    if trials.empty:
        return pd.DataFrame()
    ran = trials[trials["status"] == "completed"]
    metrics = ["objective", *[m for m in SUMMARY_TEST_METRICS if m in trials.columns]]
    counts = trials.groupby("config_id")["status"].value_counts().unstack(fill_value=0)
    labels = trials.groupby("config_id")["variant"].first()
    stats = ran.groupby("config_id")[metrics].agg(["mean", "std"]) if not ran.empty else pd.DataFrame()
    stats.columns = [f"{m}_{s}" for m, s in stats.columns] if not stats.empty else []
    out = pd.DataFrame({"variant": labels}).join(counts).join(stats)
    out["n_seeds"] = trials.groupby("config_id")["seed"].nunique()
    if "objective_mean" in out:
        out = out.sort_values("objective_mean", ascending=mode == "min", na_position="last")
    return out


def best_configuration(trials: pd.DataFrame, *, mode: str, varied: list[str]) -> BestConfiguration | None:
    """The best configuration by mean objective over seeds: its label, values of the varied fields."""
    table = summarize(trials, mode=mode)
    if table.empty or "objective_mean" not in table or table["objective_mean"].isna().all():
        return None
    cid = table.index[0]
    row = trials[trials["config_id"] == cid].iloc[0]
    return {"config_id": cid, "variant": row["variant"],
            "params": {p: row[p] for p in varied if p in trials.columns},
            "objective_mean": float(table.loc[cid, "objective_mean"]),
            "objective_std": float(table.loc[cid, "objective_std"])}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def format_summary(trials: pd.DataFrame, *, objective: str, mode: str, varied: list[str],
                   max_rows: int = 30) -> str:
    """Human-readable summary: the best configuration, then one line per configuration."""
    if trials.empty:
        return "no trials recorded"
    confirmation = format_confirmation(trials, objective=objective, mode=mode)
    failures = failure_lines(trials)  # of both phases
    trials = tuning_rows(trials)
    table = summarize(trials, mode=mode)
    lines = []
    best = best_configuration(trials, mode=mode, varied=varied)
    if best is not None:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        lines.append(f"best configuration (mean over seeds): {best['variant']}" + (f" ({params})" if params else "")
                     + f" — {objective} {_pm(best['objective_mean'], best['objective_std'])}")
    metrics = [m for m in ("objective", *SUMMARY_TEST_METRICS) if f"{m}_mean" in table]
    shown = pd.DataFrame(index=table.index)
    shown["variant"] = table["variant"]
    for status in ("completed", "pruned", "diverged", "failed"):
        if status in table and table[status].any():
            shown[status] = table[status].astype(int)
    for m in metrics:
        shown[objective if m == "objective" else m] = [_pm(a, b) for a, b in
                                                        zip(table[f"{m}_mean"], table[f"{m}_std"])]
    text = shown.head(max_rows).to_string(index=False)
    lines.append(f"per configuration, mean ± std over seeds ({len(table)} configurations):")
    lines.append(text)
    if len(table) > max_rows:
        lines.append(f"... {len(table) - max_rows} more configurations in the trials table")
    lines.extend(failures)
    if confirmation:
        lines.append(confirmation)
    return "\n".join(lines)


def last_line(error: object) -> str:
    """The last non-empty line of an error text (the exception and its message), shortened."""
    text = "" if error is None or (isinstance(error, float) and math.isnan(error)) else str(error)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "no error text"
    return line if len(line) <= 300 else line[:297] + "..."


def failure_lines(trials: pd.DataFrame, *, max_rows: int = 10) -> list[str]:
    """How many trials failed, each one's last error line, and where the full texts are."""
    if trials.empty or "status" not in trials:
        return []
    failed = trials[trials["status"] == "failed"]
    if failed.empty:
        return []
    lines = [f"{len(failed)} of {len(trials)} trials failed (full error texts: the `error` column of trials/):"]
    for _, row in failed.head(max_rows).iterrows():
        lines.append(f"  {row['trial_id']} {row['variant']}, seed {row['seed']}: {last_line(row.get('error'))}")
    if len(failed) > max_rows:
        lines.append(f"  ... {len(failed) - max_rows} more")
    return lines


def format_confirmation(trials: pd.DataFrame, *, objective: str, mode: str) -> str:
    """The confirmed configurations: mean ± std over the tuning seeds and over the fresh seeds ("" if none)."""
    if "phase" not in trials.columns or not (trials["phase"] == CONFIRM).any():
        return ""
    tuned = summarize(tuning_rows(trials), mode=mode)
    confirmed = summarize(trials[trials["phase"] == CONFIRM], mode=mode)
    metrics = [m for m in ("objective", *SUMMARY_TEST_METRICS) if f"{m}_mean" in confirmed][:2]
    shown = pd.DataFrame(index=confirmed.index)
    shown["variant"] = confirmed["variant"]
    for m in metrics:
        name = objective if m == "objective" else m
        for label, table in (("tuning seeds", tuned), ("fresh seeds", confirmed)):
            shown[f"{name} ({label})"] = [_pm(table[f"{m}_mean"].get(c), table[f"{m}_std"].get(c))
                                          for c in confirmed.index]
    return ("confirmation, mean ± std over the tuning seeds (which selected these) and over the fresh seeds:\n"
            + shown.to_string(index=False))
