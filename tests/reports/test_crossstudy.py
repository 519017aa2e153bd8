"""Cross-study comparison: Friedman/Nemenyi against Demšar (2006) and scipy, the critical-difference figure
and ``python -m reports dir dir dir --out``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.__main__ import main
from reports.crossstudy import cliques, friedman, friedman_from_ranks, nemenyi_cd, ranks
from reports.plots.crossstudy import plot_critical_difference

# Demšar (2006), Table 5(a): q_0.05 of the two-tailed Nemenyi test for k = 2..10
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


def test_nemenyi_cd_matches_demsar() -> None:
    for k, q in zip(range(2, 11), DEMSAR_Q05):
        assert nemenyi_cd(k, 6) / np.sqrt(k * (k + 1) / 36) == pytest.approx(q, abs=2e-3)
    # the worked example (Section 3.2.4): k = 4 classifiers, N = 14 data sets, CD = 2.569 sqrt(20/84) = 1.25
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_friedman_from_ranks_matches_demsar_example() -> None:
    # Section 3.2.2: average ranks 3.143, 2.000, 2.893, 1.964 over 14 data sets give chi2_F = 9.28, F_F = 3.69
    chi2, ff = friedman_from_ranks([3.143, 2.000, 2.893, 1.964], 14)
    assert chi2 == pytest.approx(9.28, abs=0.01) and ff == pytest.approx(3.69, abs=0.01)


def test_friedman_agrees_with_scipy_including_ties() -> None:
    rng = np.random.default_rng(3)
    scores = pd.DataFrame(np.round(rng.normal(size=(7, 4)), 1), columns=list("abcd"))
    scores.iloc[0, 1] = scores.iloc[0, 0]  # a tie
    res = friedman(scores, higher_is_better=True)
    ref = sps.friedmanchisquare(*(scores[c] for c in scores.columns))
    assert res.chi2 == pytest.approx(ref.statistic) and res.p_chi2 == pytest.approx(ref.pvalue)
    assert res.avg_ranks.is_monotonic_increasing and res.n == 7
    r = ranks(pd.DataFrame({"x": [0.5], "y": [0.4], "z": [0.4]}), higher_is_better=False)
    assert r.iloc[0].tolist() == [3.0, 1.5, 1.5]
    with pytest.raises(ValueError, match=">= 2 data sets"):
        friedman(scores.iloc[:1], higher_is_better=True)


def test_cliques_by_hand() -> None:
    r = pd.Series({"a": 1.0, "b": 1.5, "c": 2.6, "d": 3.9})
    assert cliques(r, 1.2) == [(0, 1), (1, 2)]  # a-b, b-c; c-d differ by 1.3 >= CD
    assert cliques(r, 5.0) == [(0, 3)] and cliques(r, 0.4) == []


def test_critical_difference_figure_draws_ranks_and_groups(tmp_path: Path) -> None:
    r = pd.Series({"full": 1.33, "concat": 1.67, "no_ud": 3.0, "uniform": 4.0})
    ax = plot_critical_difference(r, 1.5, title="Test MAE", baseline="full")
    bars = [ln for ln in ax.lines if ln.get_linewidth() > 2]
    # CD 1.5: 1.33-1.67, 1.67-3.0 and 3.0-4.0 are each closer than CD; 1.33-3.0 and 1.67-4.0 are not
    assert sorted(tuple(np.round(ln.get_xdata(), 2)) for ln in bars) == [(1.3, 1.7), (1.64, 3.03), (2.97, 4.03)]
    texts = {t.get_text(): t for t in ax.texts}
    assert "CD = 1.50" in texts and texts["full (1.33)"].get_fontweight() == "bold"
    assert "(4.00) uniform" in texts
    ax.get_figure(root=True).savefig(tmp_path / "cd.png")


def _ablations(make_study: Callable[..., Path], root: Path) -> list[Path]:
    return [make_study("ablation", root / name, seeds=seeds)
            for name, seeds in (("abl_mosi", (1, 2, 3)), ("abl_mosei", (4, 5, 6)), ("abl_sims", (7, 8)))]


def test_cross_study_cli(make_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = [str(d) for d in _ablations(make_study, tmp_path)]
    out = tmp_path / "paper"
    assert main([*dirs, "--out", str(out), "--format", "png", "-q"]) == 0
    assert (out / "figures/critical_difference_test_mae.png").is_file()
    table = (out / "tables/cross_study.md").read_text()
    header = table.splitlines()[0].split(" | ")
    assert header[2] == "full" and header[3] == "concat_fusion" and header[-1] == "no_unimodal |"  # baseline, by rank
    assert "| MAE ↓ | abl_sims |" in table and "| Avg. rank | over 15 cells |" in table
    ranks_csv = pd.read_csv(out / "tables/cross_study_ranks.csv")
    assert set(ranks_csv["variant"]) == {"full", "uniform_router", "no_balance", "no_distill", "no_unimodal",
                                         "concat_fusion"}
    assert "Friedman" in (out / "report.md").read_text()
    for tex in (out / "tables").glob("*.tex"):  # what pdflatex reads (not the comments) is ASCII: χ² was raw
        assert all(line.isascii() for line in tex.read_text().splitlines() if not line.startswith("%")), tex.name
    assert r"$\chi$$^2$\_F" in (out / "tables/cross_study_friedman.tex").read_text()
    capsys.readouterr()
    assert main([*dirs]) == 2 and "--out" in capsys.readouterr().err  # several dirs: --out is required
    assert main([dirs[0], dirs[0], "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("r", [
    pd.Series({"full": 1.2, "uniform_router": 1.8}),
    pd.Series({"full": 1.67, "concat_fusion": 1.33, "no_balance": 3.0, "no_distill": 4.0, "uniform_router": 5.0,
               "no_unimodal": 6.0}),
    pd.Series({f"variant_{i}_with_a_long_name": 1 + 0.7 * i for i in range(8)}),
], ids=["k2", "k6", "k8-long"])
def test_critical_difference_figure_is_legible(r: pd.Series) -> None:
    from tests.reports.test_layout import _problems

    fig = plot_critical_difference(r, nemenyi_cd(len(r), 3), title="Test MAE: Friedman p = 0.012 over N = 3 data sets",
                                   baseline="full").get_figure(root=True)
    assert _problems(fig, "critical_difference") == []
