"""Every table and figure of a report carries its study's provenance: a ``<file>.json`` sidecar, and a
``%`` comment line atop each LaTeX table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from reports.build import build_report


def test_each_table_and_figure_has_a_sidecar_and_latex_a_comment(ablation_dir: Path, tmp_path: Path) -> None:
    ablation_dir = Path(shutil.copytree(ablation_dir, tmp_path / "ablation"))  # the fixture is shared
    meta = json.loads((ablation_dir / "study.json").read_text())
    meta.update(spec_hash="abcd1234abcd1234", code_version="0.1.0+gdeadbee",
                provenance={"project": {"version": "0.1.0", "commit": "deadbeef", "modified": False},
                            "data": {"kind": "synthetic", "sha256": "f00d"}})
    (ablation_dir / "study.json").write_text(json.dumps(meta))
    paths = build_report(ablation_dir, out=tmp_path / "out", formats=("png",))
    made = [p for p in paths if p.name != "report.md"]
    assert made
    for path in made:
        side = json.loads(path.with_name(path.name + ".json").read_text())
        assert side["file"] == path.name and side["spec_hash"] == "abcd1234abcd1234"
        assert side["commit"] == "deadbeef" and side["version"] == "0.1.0" and side["data_sha256"] == "f00d"
        assert side["n_trials"] == 30 and side["seeds"] == [1111, 1112, 1113, 1114, 1115]
    tex = (tmp_path / "out" / "tables" / "ablation.tex").read_text().splitlines()
    assert tex[0].startswith("% emoe-harness provenance:") and '"spec_hash": "abcd1234abcd1234"' in tex[0]
    assert sum(line.startswith("% emoe-harness provenance:") for line in tex) == 1
