"""One table of settings (lambda_conn/_settings.py): the code reads exactly the variables it
lists, with its names and parsers, and the docs' tables are rendered from it."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from lambda_conn import ConfigurationError
from lambda_conn._settings import BY_NAME, SETTINGS, in_group, markdown_table

ROOT = Path(__file__).resolve().parent.parent


class Recording(MutableMapping[str, str]):
    """An environment that remembers every name looked up in it (pytest itself writes
    PYTEST_CURRENT_TEST into ``os.environ``: writes are allowed, not recorded)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return key in self.values

    def __setitem__(self, key: str, value: str) -> None:
        self.values[key] = value

    def __delitem__(self, key: str) -> None:
        del self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_the_code_reads_exactly_the_variables_of_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lambda_conn import _fd_audit, _health
    from lambda_conn._guard.config import Platform, load_config
    from lambda_conn._rds.iam import resolve_region

    environ = Recording({})
    monkeypatch.setattr(os, "environ", environ)
    platform = Platform.from_environ(environ, 1024)
    load_config(environ, {}, platform)
    assert _fd_audit.audit_from_env() is False
    assert _health.guard_for_handler() is None  # nothing set: no guard
    with pytest.raises(ConfigurationError):
        resolve_region(None)  # reads AWS_REGION, then AWS_DEFAULT_REGION
    from lambda_conn._pinning import enable_from_environment

    enable_from_environment()  # LAMBDA_CONN_PINNING_CHECK
    from lambda_conn._budget import compute

    assert compute() is None  # the connection budget's variables, AWS_LAMBDA_FUNCTION_NAME
    assert environ.read == set(BY_NAME), environ.read ^ set(BY_NAME)


def test_health_guard_takes_exactly_the_tables_keywords_in_its_order() -> None:
    from lambda_conn import health_guard
    from lambda_conn._guard.config import KEYWORDS

    keywords = [
        name
        for name, p in inspect.signature(health_guard).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert keywords == [s.keyword for s in in_group("health")] == list(KEYWORDS)


@pytest.mark.parametrize("group", ["audit", "health", "budget", "lambda"])
def test_the_docs_tables_are_rendered_from_the_table(group: str) -> None:
    table = markdown_table(group)
    assert len(table.splitlines()) == 2 + len(in_group(group))
    for doc in ("docs/configuration.md", "README.md"):
        text = (ROOT / doc).read_text()
        blocks = re.findall(
            rf"<!-- settings:{group} -->\n(.*?)\n<!-- /settings:{group} -->", text, re.S
        )
        if doc == "docs/configuration.md" or group == "health":
            assert blocks, f"{doc} has no settings:{group} table"
        for block in blocks:
            assert block == table, f"{doc}: run scripts/settings-docs"


def test_settings_docs_check_fails_on_a_stale_table(tmp_path: Path) -> None:
    for name in ("README.md", "docs/configuration.md", "lambda_conn", "scripts"):
        src = ROOT / name
        dst = tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            import shutil

            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.write_text(src.read_text())
    script = [sys.executable, str(tmp_path / "scripts" / "settings-docs")]
    assert subprocess.run([*script, "--check"], capture_output=True).returncode == 0
    config = tmp_path / "docs" / "configuration.md"
    config.write_text(config.read_text().replace("| `90%` |", "| `80%` |"))
    stale = subprocess.run([*script, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1 and "docs/configuration.md" in stale.stdout
    subprocess.run(script, check=True)
    assert "| `90%` |" in config.read_text()


@pytest.mark.parametrize("value", ["maybe", "2", "-"])
def test_one_boolean_parser_refuses_the_same_words_everywhere(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from lambda_conn._fd_audit import audit_from_env
    from lambda_conn._guard.config import Platform, load_config

    monkeypatch.setenv("LAMBDA_CONN_AUDIT_DESCRIPTORS", value)
    with pytest.raises(ConfigurationError) as audit:
        audit_from_env()
    env = {"HEALTH_REPORT_ONLY": value}
    with pytest.raises(ConfigurationError) as guard:
        load_config(env, {}, Platform(fd_rlimit=1024))
    accepted = "true or false (also 1/0, yes/no, on/off)"
    assert accepted in str(audit.value) and accepted in str(guard.value)


@pytest.mark.parametrize(("value", "expected"), [(" TRUE ", True), ("off", False), ("", None)])
def test_one_boolean_parser_agrees_about_every_form_and_the_empty_string(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool | None
) -> None:
    from lambda_conn._fd_audit import audit_from_env
    from lambda_conn._guard.config import Platform, load_config

    monkeypatch.setenv("LAMBDA_CONN_AUDIT_DESCRIPTORS", value)
    config = load_config({"HEALTH_REPORT_ONLY": value}, {}, Platform(fd_rlimit=1024))
    # An empty variable is unset for both: the audit's default (off), the guard's (false).
    assert audit_from_env() is (expected or False)
    assert config.report_only is (expected or False)


def test_every_setting_names_a_parser_that_exists() -> None:
    from lambda_conn import _settings
    from lambda_conn._guard import config

    for setting in SETTINGS:
        if setting.group == "lambda":
            continue
        module = config if setting.group == "health" else _settings
        assert callable(getattr(module, setting.parser)), setting


def test_log_levels_are_named_never_numbers() -> None:
    numeric = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "lambda_conn").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"log_event\(\s*\d", line)
    ]
    multiline = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "lambda_conn").rglob("*.py")
        if re.search(r"log_event\(\n\s*\d+,", path.read_text())
    ]
    assert numeric == [] and multiline == []
