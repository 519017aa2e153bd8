"""The reports package stays free of torch and Ray, so results can be turned into figures on a laptop."""

from __future__ import annotations

import subprocess
import sys


def test_reports_imports_neither_torch_nor_ray() -> None:
    code = ("import sys\n"
            "import reports.__main__, reports.build, reports.crossstudy_build, reports.paired_tables, reports.power\n"
            "bad = sorted(m for m in ('torch', 'ray', 'emoe', 'harness') if m in sys.modules)\n"
            "print(bad)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
