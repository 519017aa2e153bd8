"""Drawing functions ``(df, *, x, y, hue, ax=None) -> Axes | Figure``: they draw, they never write files."""

from reports.plots.ablation import plot_ablation, plot_ablation_panels
from reports.plots.curves import plot_learning_curves, plot_learning_curves_panels
from reports.plots.router import (
    plot_router_by_label,
    plot_router_correlation,
    plot_router_reliability,
    plot_router_weights,
)
from reports.plots.search import plot_best_so_far, plot_importance, plot_parallel_coordinates
from reports.plots.sensitivity import plot_sensitivity, plot_sensitivity_panels, plot_sensitivity_two_axis

__all__ = [
    "plot_ablation",
    "plot_ablation_panels",
    "plot_best_so_far",
    "plot_importance",
    "plot_learning_curves",
    "plot_learning_curves_panels",
    "plot_parallel_coordinates",
    "plot_router_by_label",
    "plot_router_correlation",
    "plot_router_reliability",
    "plot_router_weights",
    "plot_sensitivity",
    "plot_sensitivity_panels",
    "plot_sensitivity_two_axis",
]
