"""Confirmation trials in reports: kept apart from the tuning rows, quoted in tables, compared with tuning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.confirmation import (
    confirmed_caption,
    confirmed_trials,
    confirmed_variants,
    curse_frame,
    curse_table,
    plot_curse,
    tuning_caption,
)
from reports.load import ResultsError, Study, split_phases


def _study() -> Study:
    """Three configurations tuned on seeds 1-2; the two best (a, b) confirmed on seeds 7-8."""
    rows = []
    tune = {"a": (0.40, 0.42), "b": (0.45, 0.45), "c": (0.60, 0.62)}
    for variant, values in tune.items():
        for seed, v in zip((1, 2), values):
            rows.append({"trial_id": f"{variant}{seed}", "config_id": f"cfg_{variant}", "variant": variant,
                         "seed": seed, "status": "completed", "phase": "tune", "valid_mae": v, "test_mae": v + 0.1})
    for variant, values in {"a": (0.50, 0.54), "b": (0.44, 0.46)}.items():
        for seed, v in zip((7, 8), values):
            rows.append({"trial_id": f"{variant}{seed}", "config_id": f"cfg_{variant}", "variant": variant,
                         "seed": seed, "status": "completed", "phase": "confirm", "valid_mae": v, "test_mae": v})
    tuned, confirm = split_phases(pd.DataFrame(rows))
    meta = {"study": "s", "kind": "grid", "objective": {"metric": "valid_mae", "mode": "min"}}
    return Study(path=Path("s"), meta=meta, trials=tuned, confirm=confirm)


def test_phases_split_and_old_results_are_all_tuning() -> None:
    s = _study()
    assert len(s.trials) == 6 and len(s.confirm) == 4 and set(s.confirm["seed"]) == {7, 8}
    old = s.trials.drop(columns="phase")
    tuned, confirm = split_phases(old)
    assert len(tuned) == 6 and confirm.empty
    with pytest.raises(ResultsError, match="phase"):
        split_phases(s.trials.assign(phase="retune"))


def test_confirmed_numbers_get_their_own_table_and_tuning_tables_point_to_it() -> None:
    s = _study()
    quoted = confirmed_trials(s)
    assert sorted(quoted["seed"].unique()) == [7, 8] and set(quoted["variant"]) == {"a", "b"}
    assert confirmed_variants(s) == ["a", "b"]  # in tuning order
    caption = confirmed_caption(s)
    assert "[7, 8]" in caption and "[1, 2]" in caption and "2 best" in caption
    note = tuning_caption(s, "Mean ± std over seeds.", "results_confirmed")
    assert note.startswith("Mean ± std over seeds.") and "a, b" in note and "results_confirmed" in note
    unconfirmed = Study(path=s.path, meta=s.meta, trials=s.trials)
    assert confirmed_trials(unconfirmed).empty and tuning_caption(unconfirmed, "x", "y") == "x"


def test_the_winners_curse_frame_has_the_hand_computed_means_and_shift() -> None:
    frame = curse_frame(_study(), ["valid_mae"]).set_index("variant")
    assert math.isclose(frame.loc["a", "tune_mean"], 0.41) and math.isclose(frame.loc["a", "fresh_mean"], 0.52)
    assert math.isclose(frame.loc["a", "shift"], 0.11)
    assert math.isclose(frame.loc["a", "fresh_std"], float(np.std([0.50, 0.54], ddof=1)))
    assert frame.loc["b", "tune_n"] == 2 and math.isclose(frame.loc["b", "shift"], 0.0, abs_tol=1e-12)
    table = curse_table(_study(), ["valid_mae"])
    assert table.rows[0][0] == "a" and table.rows[0][-1] == "+0.110" and "fresh" in table.caption
    fig = plot_curse(_study(), ["valid_mae", "test_mae"])
    assert len(fig.axes) == 2


def test_a_configuration_proposed_twice_is_confirmed_under_one_label() -> None:
    # a search proposed cfg_a twice (labels a and a2): confirmation ran it once, as "a". Before, a2 was listed
    # as confirmed too, with an empty fresh-seed row and a "+nan" shift
    s = _study()
    dup = s.trials[s.trials["variant"] == "a"].assign(variant="a2", trial_id=lambda d: d["trial_id"] + "x",
                                                      valid_mae=[0.30, 0.32])
    s = Study(path=s.path, meta=s.meta, trials=pd.concat([s.trials, dup], ignore_index=True), confirm=s.confirm)
    assert confirmed_variants(s) == ["a", "b"]
    frame = curse_frame(s, ["valid_mae"]).set_index("variant")
    assert list(frame.index) == ["a", "b"] and frame.loc["a", "tune_n"] == 4  # both labels' tuning rows
    assert math.isclose(frame.loc["a", "tune_mean"], (0.40 + 0.42 + 0.30 + 0.32) / 4)
    assert "nan" not in str(curse_table(s, ["valid_mae"]).rows)


def test_no_confirmation_no_curse() -> None:
    s = _study()
    bare = Study(path=s.path, meta=s.meta, trials=s.trials)
    assert confirmed_variants(bare) == [] and curse_frame(bare, ["valid_mae"]).empty
    with pytest.raises(ValueError, match="confirmation"):
        curse_table(bare, ["valid_mae"])
