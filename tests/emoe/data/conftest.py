"""Fixtures for the data tests: a factory writing MMSA-layout pickles into the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.emoe.data.mmsa_files import write_mmsa_pickle


@pytest.fixture
def mmsa_pickle(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, Any]]]:
    """``mmsa_pickle(name="data.pkl", **make_mmsa_dict kwargs) -> (path, dict written)``."""

    def make(name: str = "data.pkl", **kw: Any) -> tuple[Path, dict[str, Any]]:
        path = tmp_path / name
        return path, write_mmsa_pickle(path, **kw)

    return make
