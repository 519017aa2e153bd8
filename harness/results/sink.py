"""The results directory of one study (docs/results.md): atomic, exactly-once Parquet files.

Each trial owns ``trials/``, ``epochs/``, ``router/`` and ``predictions/<id>.parquet``. A file is
written to a hidden temporary name in the same folder, flushed to disk and renamed over its final name,
so a retried or resumed trial replaces its own file (never adds a row) and a crash never leaves a
partial file visible. A trial's progress before its last epoch (its ``epochs/`` file, its ``.runs`` time)
is renamed without the flush, since it is written again the next epoch; its row, the commit point, is
written only after ``sync_progress`` has flushed them. ``.runs/<id>.json`` counts a trial's attempts and time across retries. The
store holds only paths, so it pickles into Ray workers; with several nodes it must be on shared storage.

Files carry Parquet page checksums, so bytes damaged on disk are detected when read. A file that cannot
be read is never allowed to stop a study: ``harness.results.quarantine`` moves a damaged trial's files aside
(``quarantine/``), and the readers here treat such a file as no row (``read_trials`` skips it, saying so).

After compaction (``harness.results.compact``) a table's rows live in ``<table>/compacted.parquet`` as well;
the readers here apply ``emoe_schema.layout``'s precedence rule: a trial's part wins over its compacted rows.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from emoe_schema import TABLES
from emoe_schema.layout import COMPACTED, READ_ERRORS, list_table, read_parquet, read_table_files
from harness.study.errors import SpecError, StudyExistsError
from harness.study.spec import is_safe_name

__all__ = ["QUARANTINE", "READ_ERRORS", "TABLES", "ResultStore", "RunRecord", "atomic_write_bytes", "fsync_dir",
           "read_parquet"]

if TYPE_CHECKING:
    import pandas as pd

    from harness.results.rows import Cell

#: Where damaged trial files are moved (``quarantine/<UTC time>/<table>/<trial_id>.parquet``), never deleted.
QUARANTINE = "quarantine"


class RunRecord(TypedDict, total=False):
    """A trial's attempts across retries and resumes (``.runs/<trial>.json``)."""

    attempts: int
    started_at: str  # ISO time of the first attempt
    prior_s: float  # seconds spent by earlier attempts
    current_s: float  # seconds spent by the current attempt so far
    node: str
    node_id: str | None
    quarantined: str  # the folder its damaged files went to, until the trial starts again


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's content to disk (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems refuse)."""
    _fsync(path)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a hidden temporary file and a rename.

    Readers and other processes see the old or the new content, never a mix, either way. ``durable``
    also flushes the file and the rename to disk (two fsyncs), so a machine crash keeps the new content;
    progress that is written again later (a trial's ``epochs/`` file and ``.runs`` time before its last
    epoch) skips them: they were over half of a trial's own cost in studies of many short trials.
    """
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if durable:
        fsync_dir(path.parent)


class ResultStore:
    """``<root>/<study>/``: the spec as run, study.json, one Parquet file per trial and table."""

    def __init__(self, root: str | os.PathLike[str], study: str):
        if not is_safe_name(study):
            raise SpecError([f"name: {study!r} is not a safe study name"])
        self.root = Path(root).expanduser().absolute()
        self.dir = self.root / study
        self.study = study
        real_root = self.root.resolve()
        # the study directory, and each folder the harness writes into, must stay inside the root even
        # when one of them is a symbolic link (planted, or left by moving results around)
        for path in (self.dir, *(self.dir / sub for sub in (*TABLES, ".runs", "tune", "quarantine"))):
            if (path.exists() or path.is_symlink()) and not path.resolve().is_relative_to(real_root):
                raise SpecError([f"--results: {path} points outside the results root {real_root}"],
                                source="--results")

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
        if table not in TABLES:
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

    def result_files(self) -> str:
        """What this directory holds of a study's results, in words ("3 files in trials/, ..."), or "" when it
        holds none: a directory whose study.json is gone still holds a study."""
        found = []
        for sub in (*TABLES, ".runs", "tune"):
            folder = self.dir / sub
            n = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
            if n:
                found.append(f"{n} file(s) in {sub}/")
        return ", ".join(found)

    def read_info(self) -> dict[str, object]:
        return dict(json.loads(self.info_path.read_text()))

    def create(self, spec_yaml: str, info: dict[str, object]) -> None:
        """Create the directory tree and write ``spec.yaml`` and ``study.json``."""
        for sub in (*TABLES, ".runs"):
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
    def write_table(self, table: str, trial_id: str, data: pa.Table, *, durable: bool = True) -> Path:
        """Atomically (re)write one trial's file of ``table`` (``durable``: see ``atomic_write_bytes``)."""
        path = self.table_path(table, trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, write_page_checksum=True)
        atomic_write_bytes(path, sink.getvalue().to_pybytes(), durable=durable)
        return path

    def compacted_path(self, table: str) -> Path:
        """The table's compacted file (``emoe_schema.layout.COMPACTED``); it exists once compacted."""
        return self.table_dir(table) / COMPACTED

    def _compacted_trials(self) -> tuple[pa.Table, dict[str, int]]:
        """The compacted ``trials/`` rows and each trial id's row index, cached while the file is unchanged
        (``status`` and ``read_trial`` are asked once per trial: one read, not one per trial)."""
        path = self.compacted_path("trials")
        try:
            st = path.stat()
        except FileNotFoundError:
            return pa.table({}), {}
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self.__dict__.get("_trials_cache")
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        try:
            table = read_parquet(path)
        except READ_ERRORS as exc:  # never silently: named at every read, salvaged by --resume
            print(f"warning: {path}: damaged ({exc}); its trials are taken as having no row until "
                  "`--resume` moves its unreadable rows to quarantine/", file=sys.stderr, flush=True)
            return pa.table({}), {}
        index = {str(tid): i for i, tid in enumerate(table.column("trial_id").to_pylist())}
        self.__dict__["_trials_cache"] = (key, table, index)
        return table, index

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_trials_cache"}  # Ray workers read their own

    def _read_row(self, trial_id: str, columns: list[str] | None = None) -> pa.Table | None:
        """The trial's ``trials/`` row: its part when it has one (None when that is damaged, then moved
        aside), else its compacted row (the precedence rule), else None."""
        path = self.table_path("trials", trial_id)
        try:
            return read_parquet(path, columns)
        except FileNotFoundError:
            pass
        except READ_ERRORS as exc:
            moved = self.quarantine({trial_id: f"{path.name}: {exc}"})
            print(f"warning: {path}: damaged ({exc}); moved to {moved} and taken as no row",
                  file=sys.stderr, flush=True)
            return None
        table, index = self._compacted_trials()
        if trial_id not in index:
            return None
        row = table.slice(index[trial_id], 1)
        return row.select(columns) if columns is not None else row

    def read_trial(self, trial_id: str) -> dict[str, Cell] | None:
        """A trial's row as a dict, or None when it has none yet (or its file was damaged)."""
        table = self._read_row(trial_id)
        rows = table.to_pylist() if table is not None else []
        return rows[0] if rows else None

    def status(self, trial_id: str) -> str | None:
        """The recorded status of a trial (completed/pruned/failed/diverged), None if not recorded."""
        table = self._read_row(trial_id, ["status"])
        col = table.column("status").to_pylist() if table is not None else []
        return str(col[0]) if col else None

    def trial_ids(self) -> set[str]:
        """Ids of the trials that have a row (a part, or a row in the compacted file)."""
        return set(list_table(self.table_dir("trials")).parts) | set(self._compacted_trials()[1])

    def read_trials(self) -> pd.DataFrame:
        """All trial rows as a pandas DataFrame (empty when none), parts winning over compacted rows.

        A damaged file is left out with a warning naming it (``--resume`` moves it to ``quarantine/`` and
        runs its trial again), so a summary never fails on one bad file.
        """
        import pandas as pd  # only the driver's summary reads the table back; workers need no pandas

        def warn(path: Path, exc: Exception) -> None:
            print(f"warning: {path}: not a readable Parquet file ({exc}); left out "
                  "(`--resume` moves it to quarantine/ and runs its trial(s) again)", file=sys.stderr, flush=True)

        table = read_table_files(list_table(self.table_dir("trials")), on_damaged=warn)
        return table.to_pandas() if table is not None else pd.DataFrame()

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

    def new_quarantine_folder(self) -> Path:
        """A fresh ``quarantine/<UTC time>-<random>/`` path (not created)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.dir / QUARANTINE / f"{stamp}-{uuid.uuid4().hex[:6]}"

    def quarantine(self, reasons: dict[str, str], target: Path | None = None) -> Path:
        """Move every part of the given trials under a new ``quarantine/<time>/`` folder (or ``target``);
        returns that folder. Their compacted rows stay: ``quarantine.quarantine_damaged`` takes those aside
        under the study's lock.

        ``reasons`` maps trial id -> why (written to ``reasons.txt``). A file already gone is skipped, so two
        processes quarantining the same trial at once do no harm.
        """
        target = target or self.new_quarantine_folder()
        lines = []
        for tid, why in sorted(reasons.items()):
            for table in TABLES:
                src = self.table_path(table, tid)
                dst = target / table / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(src, dst)
                except FileNotFoundError:
                    continue
                lines.append(f"{table}/{src.name}: moved here because {why}\n")
            self.mark_quarantined(tid, target)
        target.mkdir(parents=True, exist_ok=True)
        with open(target / "reasons.txt", "a", encoding="utf-8") as fh:
            fh.writelines(lines)
        return target

    def mark_quarantined(self, trial_id: str, folder: Path) -> None:
        """Note that the trial's files were moved to ``folder``: what Tune last reported for it predates
        that, so no row may be written from it (the mark goes when the trial starts again)."""
        self.write_run(trial_id, {**self.read_run(trial_id), "quarantined": str(folder)})

    def awaiting_rerun(self, trial_id: str) -> bool:
        """Whether the trial's files were quarantined and it has not started since."""
        return "quarantined" in self.read_run(trial_id)

    def sync_progress(self, trial_id: str) -> None:
        """Flush a trial's ``epochs/`` file and ``.runs`` record to disk (they may have been written without,
        ``atomic_write_bytes``): its row is written only once what the row summarises is durable."""
        for path in (self.table_path("epochs", trial_id), self._run_path(trial_id)):
            _fsync(path)
            fsync_dir(path.parent)

    def write_run(self, trial_id: str, run: RunRecord, *, durable: bool = True) -> None:
        path = self._run_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(run, default=str).encode(), durable=durable)
