"""``scripts/check``: each step fails the whole check, in order, on a tiny project of its own.

The project is a copy of the script beside a one-module package, so each case is quick and
exercises the real ruff, mypy (strict, from the project's pyproject.toml) and pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLEAN = 'def double(x: int) -> int:\n    """Twice x."""\n    return 2 * x\n'
PYPROJECT = """\
[tool.mypy]
strict = true
files = ["pkg"]

[tool.ruff]
line-length = 100

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]
"""
PASSING_TEST = "from pkg import double\n\n\ndef test_double() -> None:\n    assert double(2) == 4\n"


def make_project(tmp_path: Path, module: str = CLEAN, test: str | None = PASSING_TEST) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "check", tmp_path / "scripts" / "check")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(module)
    (tmp_path / "tests").mkdir()
    if test is not None:
        (tmp_path / "tests" / "test_pkg.py").write_text(test)
    return tmp_path


def check(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(project))
    return subprocess.run(
        ["bash", str(project / "scripts" / "check"), *args, "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def steps_run(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.split(" -m ", 1)[1].split()[0] + (" format" if "ruff format" in line else "")
        for line in result.stderr.splitlines()
        if line.startswith("check: ") and " -m " in line
    ]


def test_a_clean_project_passes_all_four_steps(tmp_path: Path) -> None:
    result = check(make_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert steps_run(result) == ["ruff format", "ruff", "mypy", "pytest"]
    assert "1 passed" in result.stdout
    assert result.stderr.rstrip().endswith("check: all passed")


@pytest.mark.parametrize(
    ("module", "failing_step"),
    [
        ("def double(x: int) -> int:\n    return 2*x\n", "ruff format"),  # unformatted
        ("import os\n\n\n" + CLEAN, "ruff"),  # unused import
        ("def double(x):\n    return 2 * x\n", "mypy"),  # untyped under --strict
    ],
    ids=["format", "lint", "types"],
)
def test_each_step_stops_the_check(tmp_path: Path, module: str, failing_step: str) -> None:
    result = check(make_project(tmp_path, module=module))
    assert result.returncode != 0
    assert steps_run(result)[-1] == failing_step
    assert "all passed" not in result.stderr


def test_a_failing_test_fails_the_check(tmp_path: Path) -> None:
    failing = PASSING_TEST.replace("== 4", "== 5")
    result = check(make_project(tmp_path, test=failing))
    assert result.returncode == 1
    assert "1 failed" in result.stdout


def test_no_tests_collected_fails_the_check(tmp_path: Path) -> None:
    result = check(make_project(tmp_path, test=None))
    assert result.returncode == 5  # pytest's "no tests ran", not turned into a pass


def test_no_tests_option_stops_after_the_type_check(tmp_path: Path) -> None:
    failing = PASSING_TEST.replace("== 4", "== 5")
    result = check(make_project(tmp_path, test=failing), "--no-tests")
    assert result.returncode == 0, result.stderr
    assert steps_run(result) == ["ruff format", "ruff", "mypy"]
