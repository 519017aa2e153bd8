"""The results directory of one study (docs/results.md): atomic, exactly-once Parquet files.

Each trial owns ``trials/<id>.parquet``, ``epochs/<id>.parquet`` and ``router/<id>.parquet``. A file is
written to a hidden temporary name in the same folder, flushed to disk and renamed over its final name,
so a retried or resumed trial replaces its own file (never adds a row) and a crash never leaves a
partial file visible. ``.runs/<id>.json`` counts a trial's attempts and time across retries. The
store holds only paths, so it pickles into Ray workers; with several nodes it must be on shared storage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from emoe_schema import TABLES
from harness.study.errors import SpecError, StudyExistsError
from harness.study.spec import is_safe_name

__all__ = ["ResultStore", "RunRecord", "atomic_write_bytes"]

if TYPE_CHECKING:
    import pandas as pd

    from harness.results.rows import Cell


class RunRecord(TypedDict, total=False):
    """A trial's attempts across retries and resumes (``.runs/<trial>.json``)."""

    attempts: int
    started_at: str  # ISO time of the first attempt
    prior_s: float  # seconds spent by earlier attempts
    current_s: float  # seconds spent by the current attempt so far
    node: str
    node_id: str | None

_TABLES = TABLES


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a hidden temporary file and a rename."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


class ResultStore:
    """``<root>/<study>/``: the spec as run, study.json, one Parquet file per trial and table."""

    def __init__(self, root: str | os.PathLike[str], study: str):
        if not is_safe_name(study):
            raise SpecError([f"name: {study!r} is not a safe study name"], source=study)
        self.root = Path(root).expanduser().absolute()
        self.dir = self.root / study
        self.study = study
        real_root = self.root.resolve()
        # the study directory, and each folder the harness writes into, must stay inside the root even
        # when one of them is a symbolic link (planted, or left by moving results around)
        for path in (self.dir, *(self.dir / sub for sub in (*_TABLES, ".runs", "tune"))):
            if (path.exists() or path.is_symlink()) and not path.resolve().is_relative_to(real_root):
                raise SpecError([f"results: {path} points outside the results root {real_root}"],
                                source=study)

    # --- layout -------------------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.dir / "spec.yaml"

    @property
    def info_path(self) -> Path:
        return self.dir / "study.json"

    @property
    def journal_path(self) -> Path:
        return self.dir / "optuna.journal"

    @property
    def tune_dir(self) -> Path:
        return self.dir / "tune"

    def table_dir(self, table: str) -> Path:
        if table not in _TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self.dir / table

    def table_path(self, table: str, trial_id: str) -> Path:
        if not (len(trial_id) == 12 and all(c in "0123456789abcdef" for c in trial_id)):
            raise ValueError(f"trial ids are 12 hex characters, got {trial_id!r}")
        return self.table_dir(table) / f"{trial_id}.parquet"

    # --- study level --------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a study was started here (``study.json`` exists)."""
        return self.info_path.exists()

    def read_info(self) -> dict[str, object]:
        return dict(json.loads(self.info_path.read_text()))

    def create(self, spec_yaml: str, info: dict[str, object]) -> None:
        """Create the directory tree and write ``spec.yaml`` and ``study.json``."""
        for sub in (*_TABLES, ".runs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.spec_path, spec_yaml.encode())
        self.write_info(info)

    def write_info(self, info: dict[str, object]) -> None:
        atomic_write_bytes(self.info_path, (json.dumps(info, indent=2, default=str) + "\n").encode())

    def update_info(self, **fields: object) -> dict[str, object]:
        info = {**self.read_info(), **fields}
        self.write_info(info)
        return info

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the study for a run; a second run of it fails at once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise StudyExistsError(f"{self.dir}: another process is running this study") from None
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    # --- trial files --------------------------------------------------------------------------------
    def write_table(self, table: str, trial_id: str, data: pa.Table) -> Path:
        """Atomically (re)write one trial's file of ``table``."""
        path = self.table_path(table, trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def read_trial(self, trial_id: str) -> dict[str, Cell] | None:
        """A trial's row as a dict, or None when it has none yet."""
        path = self.table_path("trials", trial_id)
        try:
            rows = pq.read_table(path).to_pylist()
        except FileNotFoundError:
            return None
        return rows[0] if rows else None

    def status(self, trial_id: str) -> str | None:
        """The recorded status of a trial (completed/pruned/failed/diverged), None if not recorded."""
        path = self.table_path("trials", trial_id)
        try:
            col = pq.read_table(path, columns=["status"]).column("status").to_pylist()
        except FileNotFoundError:
            return None
        return str(col[0]) if col else None

    def trial_ids(self) -> set[str]:
        """Ids of the trials that have a row."""
        d = self.table_dir("trials")
        return {p.stem for p in d.glob("*.parquet")} if d.exists() else set()

    def read_trials(self) -> pd.DataFrame:
        """All trial rows as a pandas DataFrame (empty when none)."""
        import pandas as pd  # only the driver's summary reads the table back; workers need no pandas

        d = self.table_dir("trials")
        files = sorted(d.glob("*.parquet")) if d.exists() else []
        if not files:
            return pd.DataFrame()
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").to_pandas()

    # --- attempts and time across retries ------------------------------------------------------------
    def _run_path(self, trial_id: str) -> Path:
        self.table_path("trials", trial_id)  # validates the id
        return self.dir / ".runs" / f"{trial_id}.json"

    def read_run(self, trial_id: str) -> RunRecord:
        """Attempts, first start time, time spent and node of a trial ({} before its first start)."""
        try:
            return RunRecord(**json.loads(self._run_path(trial_id).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return RunRecord()

    def write_run(self, trial_id: str, run: RunRecord) -> None:
        path = self._run_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(run, default=str).encode())
