"""Tables: values, n, direction-aware bold, LaTeX (booktabs, escaped) and Markdown rendering."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.load import load_study
from reports.tables import (
    Table,
    _signed,
    ablation_table,
    comparison_table,
    latex_escape,
    results_table,
    status_table,
    to_latex,
    to_markdown,
)


def _frame() -> pd.DataFrame:
    rows = [("full", 1, 0.50, 0.80), ("full", 2, 0.52, 0.82), ("no_ud", 1, 0.45, 0.70),
            ("no_ud", 2, 0.47, 0.74), ("concat", 1, 0.49, 0.75), ("concat", 2, 0.55, 0.77)]
    df = pd.DataFrame(rows, columns=["variant", "seed", "test_acc7", "test_mae"])
    return df.assign(status="completed")


def test_results_table_values_and_direction_aware_bold() -> None:
    t = ablation_table(_frame(), baseline="full", metrics=["test_acc7", "test_mae"])
    assert t.header == ["Variant", "n", "Acc-7 (%) ↑", "MAE ↓"]
    assert [r[0] for r in t.rows] == ["full", "no_ud", "concat"]  # baseline first
    assert t.rows[0] == ["full", "2", "51.0 ± 1.4", "0.810 ± 0.014"]
    assert t.rows[1][2:] == ["46.0 ± 1.4", "0.720 ± 0.028"]
    # best means: Acc-7 concat (52.0), MAE no_ud (0.720, lower is better); with 2 seeds no row is
    # significantly better than the others, so nothing is bold and every row is marked as tied with the best
    assert t.bold == set()
    assert t.marked == {(i, j) for i in range(3) for j in (2, 3)}
    assert "n=2 seeds" in t.caption and "not significantly worse than the best" in t.caption


def test_indistinguishable_rows_are_all_marked_and_none_bold() -> None:
    df = pd.DataFrame({"variant": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2], "test_mae": [0.5, 0.5, 0.5001, 0.4999],
                       "status": "completed"})
    t = results_table(df, by="variant", metrics=["test_mae"])
    assert t.bold == set() and t.marked == {(0, 2), (1, 2)}


def test_mixed_splits_are_labelled_and_single_seed_has_no_std() -> None:
    df = pd.DataFrame({"x": [0.1, 0.2], "seed": 1, "valid_mae": [0.9, 0.8], "test_mae": [0.91, -0.0001],
                       "status": "completed"})
    t = results_table(df, by="x", metrics=["valid_mae", "test_mae"])
    assert t.header == ["x", "n", "Val. MAE ↓", "Test MAE ↓"]
    assert t.rows == [["0.1", "1", "0.900", "0.910"], ["0.2", "1", "0.800", "0.000"]]  # no "-0.000"


def test_comparison_table_from_paired_tests() -> None:
    t = comparison_table(_frame(), baseline="full", metrics=["test_acc7"])
    assert t.header[:7] == ["Variant", "Metric", "Δ vs full", "95% CI (bootstrap)", "n pairs", "p (t, Holm)",
                            "p (Wilcoxon, Holm)"]
    no_ud = t.rows[0]
    assert no_ud[:3] == ["no_ud", "Acc-7", "−5.0 ± 0.0"]  # both seeds 5 points lower: zero variance
    assert no_ud[5] == "–" and "zero variance" in no_ud[7]
    assert "Holm-corrected over the 2 variants" in t.caption and "2/2^n" in t.caption


def test_latex_is_booktabs_escaped_and_bold() -> None:
    t = Table(header=["Variant", "Acc-7 (%) ↑"], rows=[["no_ud & 50%", "−1.0 ± 0.5"], ["x", "2"]], align="lr",
              caption="Δ = variant − full_model", bold={(1, 1)})
    tex = to_latex(t)
    assert r"\begin{tabular}{lr}" in tex and r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"Variant & Acc-7 (\%) $\uparrow$ \\" in tex
    assert r"no\_ud \& 50\% & $-$1.0 $\pm$ 0.5 \\" in tex
    assert r"x & \textbf{2} \\" in tex
    assert tex.startswith("% Δ = variant − full_model\n% requires \\usepackage{booktabs}")  # a comment
    assert latex_escape("a_b{c}~^\\") == r"a\_b\{c\}\textasciitilde{}\textasciicircum{}\textbackslash{}"


def test_markdown_rendering() -> None:
    t = Table(header=["a|b", "v"], rows=[["x", "1.0 ± 0.1"]], align="lr", caption="cap", bold={(0, 1)})
    assert to_markdown(t) == "| a\\|b | v |\n|:--|--:|\n| x | **1.0 ± 0.1** |\n\n*cap*\n"


def test_status_table_counts_every_trial(ablation_dir: Path) -> None:
    t = status_table(load_study(ablation_dir).trials)
    assert t.header == ["variant", "completed", "failed"]
    rows = {r[0]: r[1:] for r in t.rows}
    assert rows["no_unimodal"] == ["4", "1"] and rows["full"] == ["5", "0"]


def test_missing_parameter_values_form_their_own_row() -> None:
    df = pd.DataFrame({"variant": ["a", "a", "b", "b"], "model.x": [1.0, 1.0, None, None], "seed": [1, 2, 1, 2],
                       "test_mae": [0.5, 0.6, 0.4, 0.45], "status": "completed"})
    t = results_table(df, by=["variant", "model.x"], metrics=["test_mae"])
    assert t.rows == [["a", "1", "2", "0.550 ± 0.071"], ["b", "–", "2", "0.425 ± 0.035"]]
    assert t.bold == set() and t.marked == {(0, 3), (1, 3)}  # 2 seeds: b's lead is not significant


def test_signed_differences() -> None:
    assert [_signed(x, 3) for x in (0.0123, -0.0031, -0.0001, 0.0, float("nan"))] == \
        ["+0.012", "−0.003", "0.000", "0.000", "–"]
