"""Handler specs: both spellings, and a missing module found before any process starts."""

from __future__ import annotations

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
