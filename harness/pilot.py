"""Seed planning in ``--dry-run`` when the results root already holds a finished run (a pilot) of the study.

The pilot's seed-to-seed spread of paired differences says how many seeds a comparison needs. This module
sits at the top of the harness (it is neither ``harness.study`` nor ``harness.tune``), the one place the
harness may use the reports package, whose ``reports.power`` computes the plan (paired t-test power, as
``python -m reports plan`` prints it). The difference it plans for is the pilot's own gap between its two
best configurations on the objective: the difference the study exists to resolve.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["pilot_seed_plan"]


def pilot_seed_plan(study_dir: Path) -> str:
    """Lines saying how many seeds would tell the pilot's two best configurations apart (80% power, α = 0.05),
    and the command that plans for any other difference; a line saying why not when it cannot."""
    from reports.load import ResultsError, completed, load_study
    from reports.power import seed_plan

    command = f"python -m reports plan {study_dir} --delta D --metric METRIC"
    try:
        study = load_study(study_dir)
    except (ResultsError, OSError) as exc:
        return f"seed plan: the pilot in {study_dir} cannot be read ({exc})"
    metric, mode = study.objective
    done = completed(study.trials)
    means = done.groupby("variant")[metric].mean().dropna().sort_values(ascending=mode == "min")
    if len(means) < 2 or done["seed"].nunique() < 2:
        return f"seed plan: the pilot has fewer than 2 configurations or seeds to compare; later: {command}"
    gap = abs(float(means.iloc[0] - means.iloc[1]))
    if gap == 0:
        return f"seed plan: the pilot's two best configurations tie on {metric}; plan a difference with: {command}"
    pair = done[done["variant"].isin(means.index[:2])]
    row = seed_plan(pair, metrics=[metric], delta=gap).iloc[0]
    if not row["n_config_pairs"]:
        return f"seed plan: the pilot's two best configurations share no 2 seeds with a spread; later: {command}"
    needed = row["seeds_pooled"]
    need = f"{int(needed)} seeds" if needed == needed and needed is not None else "more than 10000 seeds"
    return (f"seed plan from the finished pilot ({int(row['pilot_seeds'])} seeds): telling {means.index[0]} from "
            f"{means.index[1]} apart (Δ {metric} = {gap:.4g}, sd of paired Δ {row['sd_pooled']:.3g}) with 80% "
            f"power at α = 0.05 needs {need} (power now {row['power_now']:.2f}); other differences: {command}")
