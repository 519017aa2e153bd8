"""Every ``python -m harness.run`` / ``harness`` / ``reports`` / ``emoe.data`` command shown in README.md and
docs/*.md runs, in a safe and fast form:

* ``harness.run``: as written plus ``--dry-run --no-measure --results <tmp>`` (the last ``--results``
  wins), with Ray refused: ``--resume`` and ``--address`` (which a dry run never connects to) are
  validated without a cluster;
* ``emoe.data convert`` / ``info``: on a small MMSA-layout pickle under a temporary ``$EMOE_DATA``;
* ``reports``: on a results directory written as docs/results.md describes (tests/reports/conftest.py;
  marked slow: building the figures takes a while).

Commands run in a temporary working directory that sees the repository's ``studies/``; shell variables
(``$EMOE_DATA``) expand outside single quotes, as a shell would. Placeholders are substituted
(``SUBSTITUTE``); what is not a command to run is listed in ``NOT_RUN`` with the reason, and a stale entry
fails.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import ray

from tests.emoe.data.mmsa_files import write_mmsa_pickle

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_COMMAND = re.compile(r"python -m (harness\.run|harness|reports|emoe\.data)(?=[\s`]|$)")

#: Placeholders in the docs and what stands for them here (the cluster's shared checkout is this one).
SUBSTITUTE = {"STUDY.yaml": "studies/smoke.yaml", "results/<study>": "results/ablation",
              "/shared/emoe/studies/": "studies/",
              # a tracking server of the lab: a local MLflow store in the test's working directory
              "http://mlflow.lab:5000": "file:mlruns"}

#: Shown in the docs but not a command to run, with the reason.
NOT_RUN = {
    "python -m harness.run": "named in prose (set the variable 'before python -m harness.run'), no arguments",
    "python -m harness.run ... --address ...": "schematic: the driver's form on a cluster, arguments elided",
    "python -m harness ...": "names the alias; `python -m harness` is harness/__main__.py -> harness.run.main",
    "python -m reports": "named in prose (files 'written by python -m reports'), no arguments",
}


def _joined_lines(text: str) -> list[tuple[int, str]]:
    """Lines with shell continuations (a trailing backslash) joined, each with its first line number."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        start, line = i, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        out.append((start + 1, line))
        i += 1
    return out


def doc_commands() -> list[tuple[str, str]]:
    """``(file:line, command)`` for every command shown, in document order."""
    found = []
    for path in DOCS:
        for lineno, line in _joined_lines(path.read_text(encoding="utf-8")):
            for match in _COMMAND.finditer(line):
                rest = line[match.start():]
                if line[:match.start()].count("`") % 2:  # inline code: up to the closing backtick
                    rest = rest.split("`", 1)[0]
                else:
                    rest = re.split(r"\s#\s", rest, maxsplit=1)[0]  # a trailing comment
                found.append((f"{path.relative_to(REPO)}:{lineno}", " ".join(rest.split())))
    return found


def shell_words(command: str) -> list[str]:
    """Split as a POSIX shell would, expanding ``$VAR``/``${VAR}`` outside single quotes."""
    parts = re.split(r"('[^']*')", command)
    return shlex.split("".join(p if p.startswith("'") else os.path.expandvars(p) for p in parts))


COMMANDS = doc_commands()
TO_RUN = [(where, cmd) for where, cmd in COMMANDS if cmd not in NOT_RUN]


def test_the_docs_show_the_commands_this_test_knows():
    shown = {cmd for _, cmd in COMMANDS}
    assert len(TO_RUN) >= 15, COMMANDS  # the extractor still finds the README's and docs' commands
    assert {"harness.run", "reports", "emoe.data"} <= {shell_words(c)[2] for _, c in TO_RUN}
    stale = sorted(set(NOT_RUN) - shown)
    assert not stale, f"NOT_RUN lists commands the docs no longer show: {stale}"


@pytest.fixture
def docs_env(tmp_path, monkeypatch) -> Path:
    """A working directory seeing studies/, with $EMOE_DATA holding a MOSI-layout pickle."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "studies").symlink_to(REPO / "studies")
    data = tmp_path / "MMSA"
    write_mmsa_pickle(data / "MOSI" / "Processed" / "unaligned_50.pkl", len_text=12, len_audio=10, len_vision=11)
    monkeypatch.setenv("EMOE_DATA", str(data))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this before using a file store
    monkeypatch.chdir(work)

    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not be started by a dry run")

    monkeypatch.setattr(ray, "init", refuse)
    return work


def _run(argv: list[str], work: Path) -> int:
    module, args = argv[2], argv[3:]
    if module in ("harness.run", "harness"):
        from harness.run import main as harness_main

        return harness_main([*args, "--dry-run", "--no-measure", "--results", str(work / "dry-run")])
    if module == "emoe.data":
        from emoe.data.__main__ import main as data_main

        if args[0] == "info" and not Path(args[1]).exists():  # the README converts first, then inspects
            source = Path(os.environ["EMOE_DATA"]) / "MOSI" / "Processed" / "unaligned_50.pkl"
            assert data_main(["convert", str(source), args[1]]) == 0
        return data_main(args)
    if module == "reports":
        from reports.__main__ import main as reports_main
        from tests.reports.conftest import write_ablation

        positional = args[1:] if args[0] == "plan" else args
        studies = [Path(a) for a in _positional(positional)]
        for study in studies:  # one study, a pilot for `plan`, or several data sets' studies
            if not study.exists():
                write_ablation(study, seeds=(1, 2, 3))
        return reports_main([*args, "--quiet"] if args[0] != "plan" else args)
    raise AssertionError(f"no runner for {module}")


def _positional(args: list[str]) -> list[str]:
    """The positional arguments of a reports command (every option of reports takes one value)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = "=" not in arg and arg not in ("-q", "--quiet")
        else:
            out.append(arg)
    return out


def _param(where: str, command: str) -> object:
    """Building figures takes 10-30 s: the reports commands are marked slow."""
    slow = [pytest.mark.slow] if shell_words(command)[2] == "reports" else []
    return pytest.param(where, command, id=where, marks=slow)


@pytest.mark.parametrize(("where", "command"), [_param(w, c) for w, c in TO_RUN])
def test_a_documented_command_runs(where, command, docs_env, capsys):
    for placeholder, value in SUBSTITUTE.items():
        command = command.replace(placeholder, value)
    argv = shell_words(command)
    before = sorted(os.listdir(REPO))
    code = _run(argv, docs_env)
    _, err = capsys.readouterr()
    assert code == 0, f"{where}: {command}\nexit {code}\n{err[-2000:]}"
    assert "Traceback" not in err
    assert sorted(os.listdir(REPO)) == before, "a documented command wrote into the repository"
