"""ruff (pyflakes, pycodestyle, bugbear, pyupgrade) over services, operators, tests and scripts; config in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is missing (it is in the dev extra)"
    result = subprocess.run([ruff, "check", "services", "operators", "tests", "scripts"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
