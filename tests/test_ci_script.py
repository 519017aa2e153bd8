"""``.ci/run``, the CI entry point: a failed install fails the run, and its temporary environment goes away.

Both were wrong: ``set -e`` does not stop at a failed command inside an ``&&`` list, so a pip that could not
install anything ended in "ci: finished" with exit status 0; and each run left its 2.4 GB environment in
/tmp, until the disk was full (which is how the first was found)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_failed_install_fails_the_run_and_leaves_no_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI_VENV", "VIRTUAL_ENV")}
    env.update(TMPDIR=str(tmp_path), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "no-wheels-here"),
               PIP_CONFIG_FILE=os.devnull)
    proc = subprocess.run(["bash", str(REPO / ".ci" / "run")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "ci: FAILED" in proc.stdout and "ci: finished" not in proc.stdout
    assert not list(tmp_path.iterdir())  # the temporary environment was removed
