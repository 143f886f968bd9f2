"""The wheel as built from this checkout: every module, ``py.typed``, the console script.

``scripts/smoke-wheel`` (run by .ci/run) goes further: sdist, fresh venv, a soak. Here the
wheel is built by pip (as `pip install .` would) and checked with the same function.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import lambda_conn

ROOT = Path(__file__).resolve().parent.parent
BUILD_LEFTOVERS = ("build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".git")


def load_smoke() -> ModuleType:
    path = ROOT / "scripts" / "smoke-wheel"
    loader = importlib.machinery.SourceFileLoader("smoke_wheel", str(path))
    spec = importlib.util.spec_from_loader("smoke_wheel", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a clean copy: a checkout's stale build/ would otherwise fill in missing files.
    source = tmp_path_factory.mktemp("src") / "lambda-conn"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("lambda_conn-*.whl")
    return built


def test_the_wheel_holds_every_module_py_typed_and_the_entry_point(wheel: Path) -> None:
    smoke = load_smoke()
    expected = smoke.source_modules()
    assert "lambda_conn/py.typed" in expected and "lambda_conn/local/_soak.py" in expected
    smoke.check_wheel(wheel, lambda_conn.__version__)  # raises SystemExit on a gap
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


def test_a_wheel_without_py_typed_is_refused(wheel: Path, tmp_path: Path) -> None:
    smoke = load_smoke()
    broken = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if item.filename != "lambda_conn/py.typed":
                dst.writestr(item, src.read(item))
    with pytest.raises(SystemExit, match=r"lacks lambda_conn/py\.typed"):
        smoke.check_wheel(broken, lambda_conn.__version__)
