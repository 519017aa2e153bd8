"""Provenance stamps on a report's files: a ``<file>.json`` sidecar per table and figure, a ``%`` line in LaTeX.

A table pasted into a paper, or a figure copied into slides, can be traced back to the study that made
it: its fingerprint (``spec_hash``), the project's version and commit, the data's checksum, the number of
trials and the seeds. Everything comes from ``study.json`` and the loaded trials (no torch, no Ray).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from reports.figsave import atomic_target

__all__ = ["SIDECAR_SUFFIX", "latex_comment", "stamp", "study_stamp"]

SIDECAR_SUFFIX = ".json"
_LATEX_MARK = "% emoe-harness provenance:"


def study_stamp(meta: dict[str, Any], trials: pd.DataFrame) -> dict[str, Any]:
    """The provenance of a study's report: from its ``study.json`` (``meta``) and its trials table."""
    prov = meta.get("provenance") or {}
    project = prov.get("project") or {}
    data = prov.get("data") or {}
    seeds = sorted(int(s) for s in trials["seed"].dropna().unique()) if "seed" in trials else []
    return {
        "study": meta.get("study"),
        "spec_hash": meta.get("spec_hash"),
        "version": project.get("version") or meta.get("code_version"),
        "commit": project.get("commit"),
        "modified": project.get("modified"),
        "code_version": meta.get("code_version"),
        "data": meta.get("data"),
        "data_sha256": data.get("sha256"),
        "n_trials": len(trials),
        "seeds": seeds,
        "simulated": meta.get("simulated") is True,  # simulate: true, nothing was trained
    }


def latex_comment(stamp_: dict[str, Any]) -> str:
    """One ``%`` line with the stamp (LaTeX ignores it; ``grep emoe-harness`` finds it)."""
    return f"{_LATEX_MARK} {json.dumps(stamp_, sort_keys=True, default=str)}\n"


def _write(path: Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def stamp(paths: Iterable[Path], stamp_: dict[str, Any]) -> list[Path]:
    """Write ``<file>.json`` beside each path and put the comment line atop each ``.tex``; the sidecars."""
    sidecars = []
    for path in paths:
        path = Path(path)
        if path.suffix == ".tex":
            text = path.read_text(encoding="utf-8")
            if not text.startswith(_LATEX_MARK):
                _write(path, latex_comment(stamp_) + text)
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        _write(sidecar, json.dumps({"file": path.name, **stamp_}, indent=2, default=str) + "\n")
        sidecars.append(sidecar)
    return sidecars
