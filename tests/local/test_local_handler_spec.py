"""Handler specs: both spellings, and a missing module found before any process starts."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

from lambda_conn.local import HandlerSpec, HandlerSpecError, check_importable, parse_handler


@pytest.mark.parametrize(
    ("spec", "module", "function"),
    [
        ("app.handler", "app", "handler"),
        ("app:handler", "app", "handler"),
        ("pkg.sub.mod.handler", "pkg.sub.mod", "handler"),
        ("pkg.sub.mod:handler", "pkg.sub.mod", "handler"),
        ("pkg/mod.handler", "pkg.mod", "handler"),
    ],
)
def test_both_spellings_give_the_lambda_form(spec: str, module: str, function: str) -> None:
    parsed = parse_handler(spec)
    assert parsed == HandlerSpec(module, function)
    assert parsed.lambda_form == f"{module}.{function}"


@pytest.mark.parametrize(
    "spec", ["", "handler", "app.", ":handler", "app:", "1app.handler", "a b.c"]
)
def test_malformed_specs_are_named(spec: str) -> None:
    with pytest.raises(HandlerSpecError, match=f"bad handler {spec!r}"):
        parse_handler(spec)


def test_modules_are_found_without_importing_them(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("raise RuntimeError('must not import')\n")
    (tmp_path / "pkg" / "mod.py").write_text("def handler(e, c): pass\n")
    check_importable(parse_handler("pkg.mod:handler"), tmp_path)
    check_importable(parse_handler("json:loads"), tmp_path)  # on the runtime's path
    for missing in ("pkg.nope:handler", "nope:handler", "pkg.mod.deeper:handler"):
        with pytest.raises(HandlerSpecError, match="not found"):
            check_importable(parse_handler(missing), tmp_path)


class _EditableFinder(importlib.abc.MetaPathFinder):
    """What ``pip install -e`` installs with setuptools: a finder mapping a package to a
    directory that is on no path."""

    def __init__(self, name: str, where: Path) -> None:
        self.name, self.where = name, where

    def find_spec(
        self, fullname: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        init = self.where / "__init__.py"
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[str(self.where)]
        )


def test_a_package_behind_an_editable_install_finder_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src" / "edpkg"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("raise RuntimeError('must not import')\n")
    (source / "app.py").write_text("def handler(e, c): pass\n")
    root = tmp_path / "task"
    root.mkdir()
    with pytest.raises(HandlerSpecError, match="not found"):
        check_importable(parse_handler("edpkg.app:handler"), root)
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, _EditableFinder("edpkg", source)])
    check_importable(parse_handler("edpkg.app:handler"), root)
    with pytest.raises(HandlerSpecError, match="not found"):
        check_importable(parse_handler("edpkg.nope:handler"), root)
    assert "edpkg" not in sys.modules


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("app.py:handler", "expected app:handler"),
        ("src/app.py:handler", "expected src.app:handler"),
        ("./app.handler", "not a path"),
        ("/abs/app.handler", "--handler-dir"),
    ],
)
def test_file_names_and_paths_get_a_hint(spec: str, hint: str) -> None:
    with pytest.raises(HandlerSpecError, match=f"bad handler {spec!r}") as info:
        parse_handler(spec)
    assert hint in str(info.value)
