"""Loading a study's data once in the driver: the synthetic benchmark or an MMSA/converted file.

``load_study_data`` returns the ``DataSet`` plus what the plan needs from it: the configuration fields
the data decide (input shapes, task, number of classes), a description for the results, and the data
part of a trial's identity (synthetic generator fields, or a file's name and size, never its path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoe.data.arrays import DataSet
from emoe.data.checks import DataError
from harness.study.params import ParamValue
from harness.study.spec import DataSpec, SyntheticSpec

__all__ = ["DataError", "StudyData", "check_splits", "load_study_data", "synthetic_errors"]


@dataclass(frozen=True)
class StudyData:
    """A loaded data set and the facts about it that studies and results need."""

    data: DataSet
    description: str  # the results' ``data`` column
    key: str  # data part of ``config_id``
    fields: dict[str, ParamValue]  # dotted config fields set by the data (model.d_text, ..., loss.task)

    @property
    def task(self) -> str:
        return "classification" if self.data.label_kind == "classification" else "regression"

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.data.splits().items()}


def synthetic_errors(spec: SyntheticSpec | None) -> list[str]:
    """Problems with a synthetic data request (unknown preset or field, bad value), as ``field: msg``."""
    from emoe.data.synthetic import synthetic_spec

    if spec is None:
        return []
    fields = spec.model_dump()
    preset = fields.pop("preset")
    try:
        synthetic_spec(preset, **fields)
    except DataError as exc:  # "invalid synthetic spec:\n  field: problem\n  ...": one error per field
        head, *lines = str(exc).split("\n  ")
        return lines or [head]
    except TypeError as exc:
        return [f"{exc}"]
    return []


def check_splits(data: DataSet, source: str) -> None:
    """Every split has samples; checked before any trial starts. (The loaders check the arrays themselves:
    dimensions, finite labels and text, counts, shapes shared between splits; ``emoe.data.mmsa.check_arrays``.)"""
    errors = [f"the {name} split has no samples" for name, split in data.splits().items() if len(split) == 0]
    if errors:
        raise DataError(f"{source}: " + "; ".join(errors))


def _fields_from(data: DataSet) -> dict[str, ParamValue]:
    fields: dict[str, ParamValue] = {f"model.{k}": v for k, v in data.dims.items()}
    if data.label_kind == "classification":
        labels = np.concatenate([s.labels for s in data.splits().values()])
        fields["loss.task"] = "classification"
        fields["model.n_outputs"] = int(labels.max()) + 1
    return fields


def _data_size(path: Path) -> int:
    """Bytes of a data file, or of a directory's files less the verification cache (not part of the data)."""
    from emoe.data.verify import CACHE_NAME

    if not path.is_dir():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.name.startswith(CACHE_NAME))


def load_study_data(spec: DataSpec, *, text_input: str = "features") -> StudyData:
    """Generate or read the study's data (``DataError`` naming the file and problem if it cannot)."""
    if spec.path is None:
        from emoe.data.synthetic import make_synthetic, synthetic_spec

        assert spec.synthetic is not None
        fields = spec.synthetic.model_dump()
        syn = synthetic_spec(fields.pop("preset"), **fields)
        try:
            data = make_synthetic(syn)
        except (ValueError, MemoryError) as exc:  # sizes beyond this machine ("array is too big")
            raise DataError(f"{syn.describe()}: cannot generate the synthetic data: {exc}") from exc
        check_splits(data, syn.describe())
        key = "synthetic:" + json.dumps(syn.to_dict(), sort_keys=True)
        return StudyData(data, syn.describe(), key, _fields_from(data))
    from emoe.data.convert import load_data
    from emoe.data.mmsa import Expect

    path = Path(spec.path)
    expect: Expect = False if spec.expect == "none" else spec.expect
    try:
        # a converted directory's files must match its manifest's checksums (hashed once, then remembered
        # by size, times and inode: see emoe.data.verify)
        data = load_data(path, text="bert" if text_input == "bert" else "features", expect=expect,
                         verify_hash=True, hash_cache=True)
    except DataError:
        raise
    except ValueError as exc:  # arrays the loader accepted but that do not form splits (counts differ)
        raise DataError(f"{path}: {exc}") from exc
    check_splits(data, str(path))
    size = _data_size(path)
    key = f"file:{path.name}:{size}:{data.label_kind}:{text_input}"
    return StudyData(data, str(path), key, _fields_from(data))
