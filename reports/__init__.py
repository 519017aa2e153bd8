"""Paper figures and tables from a study's Parquet results (docs/results.md); no Ray, no torch.

Layers: ``load`` (read and check a results directory), ``stats`` / ``router_stats`` / ``search_stats``
(DataFrame -> DataFrame), ``plots`` (DataFrame -> Axes/Figure, never writing), ``tables`` (-> LaTeX,
Markdown), ``sections`` (what a study kind's report holds) and ``build`` (the only writer; ``figsave``
saves its figures, in worker processes when several CPUs are free).
Command line: ``python -m reports results/<study> [--out DIR] [--format png,pdf]``.
"""

__all__ = ["build", "load", "plots", "stats", "tables"]
