"""Errors the harness shows to users as they are: a bad study file, or data that cannot be used."""

from __future__ import annotations

__all__ = ["SpecError", "StudyExistsError"]


class SpecError(ValueError):
    """A study that cannot run as written; ``errors`` lists every problem as ``"field.path: message"``."""

    #: The default source: the study file being read (the command line shows its path instead).
    STUDY_FILE = "<spec>"

    def __init__(self, errors: list[str], *, source: str = STUDY_FILE):
        self.errors = list(errors)
        self.source = source
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{source}: {len(self.errors)} problem(s):\n{lines}")


class StudyExistsError(RuntimeError):
    """The study's results directory already holds a run and ``--resume`` was not given."""
