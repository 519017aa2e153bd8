"""Per-sample predictions of a study's completed trials, as one long frame (docs/results.md, ``predictions/``).

The harness writes ``predictions/<trial_id>.parquet`` (split, sample, label, prediction at the selected
epoch), folded into ``predictions/compacted.parquet`` by compaction. Older result directories have only ``router/``, which holds the same test-split labels and
predictions, so it stands in when ``predictions/`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emoe_schema.layout import list_table
from reports.load import ResultsError, Study, read_table

__all__ = ["PREDICTION_COLUMNS", "label_kind", "load_predictions", "sample_matrix"]

#: Required columns of ``predictions/`` (the harness may add more, e.g. sample_id).
PREDICTION_COLUMNS = ("trial_id", "config_id", "variant", "seed", "split", "sample", "label", "prediction")


def label_kind(study: Study) -> str:
    """``mosi``, ``sims`` or ``classification`` (study.json ``label_kind``; MOSI-style by default)."""
    if study.task == "classification":
        return "classification"
    return str(study.meta.get("label_kind") or "mosi")


def load_predictions(study: Study) -> pd.DataFrame:
    """Predictions of the completed trials: ``predictions/`` if present, else the test split of ``router/``."""
    done = set(study.trials.loc[study.trials["status"] == "completed", "trial_id"])
    pdir = Path(study.path) / "predictions"
    if not list_table(pdir).empty:
        df = read_table(pdir, PREDICTION_COLUMNS)
    elif not study.router.empty and {"label", "pred"} <= set(study.router.columns):
        df = study.router.rename(columns={"pred": "prediction"}).assign(split="test")
    else:
        raise ValueError("no per-sample predictions: the study has neither predictions/ nor router/ files")
    df = df[df["trial_id"].isin(done)]
    for col in df.columns[[isinstance(t, pd.CategoricalDtype) for t in df.dtypes]]:  # dictionary-coded ids
        df[col] = df[col].astype(object)  # plain values: no unobserved categories in pivots
    if df.empty:
        raise ValueError("no per-sample predictions of completed trials")
    return df


def sample_matrix(preds: pd.DataFrame, *, group: str = "variant", split: str = "test",
                  ) -> tuple[np.ndarray, dict[tuple[object, int], np.ndarray]]:
    """Labels (n,) and a prediction vector (n,) per (group, seed), aligned on the samples all trials share.

    Raises ResultsError when two trials disagree on a sample's label (they were not scored on one test set).
    """
    df = preds[preds["split"] == split] if "split" in preds.columns else preds
    if df.empty:
        raise ValueError(f"no predictions on the {split!r} split")
    dup = df.duplicated([group, "seed", "sample"])
    if dup.any():
        raise ValueError(f"several predictions per ({group}, seed, sample), e.g. "
                         f"{df.loc[dup, [group, 'seed', 'sample']].iloc[0].tolist()}")
    wide = df.pivot(index="sample", columns=[group, "seed"], values="prediction").dropna()
    if wide.empty:
        raise ValueError("the trials share no test sample")
    labels = df.pivot(index="sample", columns=[group, "seed"], values="label").loc[wide.index]
    lab = labels.to_numpy(dtype=np.float64)
    spread = np.nanmax(lab, axis=1) - np.nanmin(lab, axis=1)
    if (spread > 1e-5 * np.maximum(1.0, np.nanmax(np.abs(lab), axis=1))).any():
        raise ResultsError("trials disagree on the labels of the same sample ids: not one test set")
    y = np.nanmean(lab, axis=1)
    vectors = {(g, int(s)): wide[(g, s)].to_numpy(dtype=np.float64) for g, s in wide.columns}
    return y, vectors
