"""The per-sample evidence of an ablation as a paper table and the study-level entry point that feeds it.

:func:`study_evidence` runs the seed-level tests (``reports.effects.effect_sizes``) and the per-sample tests
(``reports.paired.sample_comparison`` on ``reports.predictions``) of one study and joins them with
``reports.paired.evidence`` (one Holm family per metric); :func:`evidence_table` renders the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.effects import effect_sizes
from reports.load import Study
from reports.metrics import metric_info
from reports.paired import evidence, sample_comparison
from reports.predictions import label_kind, load_predictions, sample_matrix
from reports.sample_metrics import sample_metric_names
from reports.tables import Table, _num, _p

__all__ = ["evidence_table", "study_evidence"]


def study_evidence(study: Study, *, baseline: str, metrics: Sequence[str], n_resamples: int = 2000,
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evidence, per-sample tests) of ``study``: every variant against ``baseline`` on the test metrics of
    ``metrics`` that the per-sample tests support; raises ValueError when the study has no predictions."""
    kind = label_kind(study)
    if kind == "classification":
        raise ValueError("per-sample tests cover regression studies (MOSI/MOSEI/SIMS metrics) only")
    names = sample_metric_names(kind)
    cols = [m for m in metrics if m.startswith("test_") and m[5:] in names]
    if not cols:
        raise ValueError(f"none of {list(metrics)} is a per-sample test metric ({list(names)})")
    done = study.trials[study.trials["status"] == "completed"]
    seed_tests = effect_sizes(done, baseline=baseline, metrics=cols)
    sample = sample_comparison(sample_matrix(load_predictions(study)), baseline=baseline,
                               metrics=[c[5:] for c in cols], label_kind=kind, n_resamples=n_resamples)
    return evidence(seed_tests, sample), sample


def evidence_table(ev: pd.DataFrame, *, baseline: str, n_samples: int | None = None) -> Table:
    """Variant x metric x test: Δ to the baseline, its 95% CI and the Holm-corrected p (bold below 0.05)."""
    k = ev["variant"].nunique()
    size = f"{n_samples} " if n_samples else ""
    caption = (f"Δ = variant − {baseline} (accuracies in percentage points). Seed-level: paired t-test over seeds "
               f"(t-based CI). Sample-level: paired bootstrap over the {size}test samples of the predictions "
               "averaged over seeds (percentile CI), and McNemar's mid-p test of Acc-2 correctness. p: "
               f"Holm-corrected over all tests of the {k} variants on that metric; p < 0.05 in bold.")
    table = Table(header=["Variant", "Metric", "Test", f"Δ vs {baseline}", "95% CI", "p (Holm)"], rows=[],
                  align="lllrrr", caption=caption)
    for i, r in enumerate(ev.sort_values(["variant", "metric"], kind="stable").itertuples(index=False)):
        info = metric_info(r.metric)
        s, d = info.scale, info.decimals
        ci = f"[{_num(r.ci_low * s, d)}, {_num(r.ci_high * s, d)}]" if np.isfinite(r.ci_low) else "–"
        table.rows.append([str(r.variant), info.name, str(r.test), _num(r.estimate * s, d), ci, _p(r.p_holm)])
        if np.isfinite(r.p_holm) and r.p_holm < 0.05:
            table.bold.add((i, 5))
    return table
