"""The service images install lynx without the budget controller (their Dockerfiles copy services/ only): the command
line must still start there, `lynx serve` and `lynx models build` among its commands."""

import subprocess
import sys

WITHOUT_LYNX_BUDGET = "import sys; sys.modules['lynx_budget'] = None; from lynx.cli import main; main(sys.argv[1:])"


def lynx(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_LYNX_BUDGET, *argv], capture_output=True, text=True, timeout=60)


def test_the_command_line_starts_without_the_budget_controller():
    assert lynx("serve", "--help").returncode == 0
    listed = lynx("--help")
    assert listed.returncode == 0 and "models" in listed.stdout and "budget" not in listed.stdout.split("{")[1]


def test_the_budget_commands_are_there_with_it():
    listed = subprocess.run([sys.executable, "-m", "lynx.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert "budget" in listed.stdout.split("{")[1]
