"""The connection budget logged at Init: environments x connections each, against the
database's max_connections (lambda_conn/_budget.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lambda_conn
from lambda_conn import ConfigurationError, _budget, managed_connection

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = (_budget.RESERVED, _budget.MAXIMUM, _budget.EACH)


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A Lambda-like environment with no budget variable yet, and the Init log not done."""
    for name in (*VARIABLES, "AWS_LAMBDA_MAX_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    _budget.reset()
    yield monkeypatch
    _budget.reset()


def budget_events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.levelname, json.loads(r.getMessage()))
        for r in caplog.records
        if r.name == "lambda_conn" and json.loads(r.getMessage())["event"] == "connection_budget"
    ]


def decorate() -> None:
    @managed_connection
    def handler(event: object, context: object) -> None:
        return None


def test_a_budget_over_max_connections_is_a_warning_at_init(
    lambda_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_env.setenv(_budget.RESERVED, "50")
    lambda_env.setenv(_budget.MAXIMUM, "100")
    lambda_env.setenv(_budget.EACH, "3")
    with caplog.at_level("INFO", logger="lambda_conn"):
        decorate()
        decorate()  # a second handler in the same process: logged once
    [(level, event)] = budget_events(caplog)
    assert level == "WARNING"
    assert event["function"] == "orders"
    assert event["reserved_concurrency"] == 50 and event["connections_per_environment"] == 3
    assert event["budget"] == 150 and event["max_connections"] == 100
    assert event["share"] == 1.5 and event["within"] is False
    assert event["counted_from"] == "setting"
    assert "reserved concurrency" in event["why"]


def test_a_budget_within_max_connections_is_info(
    lambda_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_env.setenv(_budget.RESERVED, "40")
    lambda_env.setenv(_budget.MAXIMUM, "100")
    lambda_env.setenv(_budget.EACH, "2")
    with caplog.at_level("INFO", logger="lambda_conn"):
        decorate()
    [(level, event)] = budget_events(caplog)
    assert level == "INFO"
    assert event["budget"] == 80 and event["within"] is True and event["share"] == 0.8


@pytest.mark.parametrize(
    ("max_concurrency", "environments", "workers", "budget"),
    [
        ("8", 5, 8, 80),  # 40 requests at once: 5 environments of 8 worker processes
        ("6", 7, 6, 84),  # 40 / 6: 7 environments, and all 42 workers hold theirs
        ("1", 40, 1, 80),
        ("eight", 40, 1, 80),  # not a value Lambda sets: one worker, as without it
    ],
)
def test_multi_concurrency_counts_every_worker_process(
    lambda_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    max_concurrency: str,
    environments: int,
    workers: int,
    budget: int,
) -> None:
    # GIVEN Lambda Managed Instances' multi-concurrent mode: each environment runs
    # AWS_LAMBDA_MAX_CONCURRENCY worker processes, each with its own connections
    lambda_env.setenv("AWS_LAMBDA_MAX_CONCURRENCY", max_concurrency)
    lambda_env.setenv(_budget.RESERVED, "40")
    lambda_env.setenv(_budget.MAXIMUM, "82")
    lambda_env.setenv(_budget.EACH, "2")
    # WHEN the budget is logged at Init
    with caplog.at_level("INFO", logger="lambda_conn"):
        decorate()
    # THEN it counts the environments the requests need and every worker in each
    [(level, event)] = budget_events(caplog)
    assert event["environments"] == environments
    assert event["workers_per_environment"] == workers
    assert event["budget"] == budget
    assert level == ("WARNING" if budget > 82 else "INFO")


def test_outside_lambda_nothing_is_logged_but_bad_values_still_fail(
    lambda_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_env.delenv("AWS_LAMBDA_FUNCTION_NAME")
    lambda_env.setenv(_budget.RESERVED, "50")
    with caplog.at_level("INFO", logger="lambda_conn"):
        decorate()
    assert budget_events(caplog) == []
    lambda_env.setenv(_budget.MAXIMUM, "lots")
    with pytest.raises(ConfigurationError, match=_budget.MAXIMUM):
        decorate()


def test_not_configured_reads_nothing_more(
    lambda_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(**options: Any) -> None:
        raise AssertionError("the budget was computed without any budget variable")

    lambda_env.setattr(_budget, "compute", fail)
    with caplog.at_level("INFO", logger="lambda_conn"):
        decorate()
    assert budget_events(caplog) == []


@pytest.mark.parametrize("name", VARIABLES)
@pytest.mark.parametrize("value", ["0", "-3", "x", "1.5", "true", "\uff15"])
def test_bad_variables_fail_at_init_naming_variable_value_and_form(
    lambda_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    lambda_env.setenv(_budget.RESERVED, "10")
    lambda_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        decorate()
    assert refused.value.setting == name
    assert (
        str(refused.value)
        == f"{name}={refused.value.value} is not valid: expected a whole number >= 1"
    )


@pytest.mark.parametrize(
    "keyword", ["reserved_concurrency", "max_connections", "connections_per_environment"]
)
@pytest.mark.parametrize("value", [0, True, "x", 2.5])
def test_bad_keywords_are_refused_naming_the_keyword(
    lambda_env: pytest.MonkeyPatch, keyword: str, value: Any
) -> None:
    options = {"reserved_concurrency": 10, keyword: value}
    with pytest.raises(ConfigurationError) as refused:
        lambda_conn.connection_budget(**options)
    assert refused.value.setting == keyword


def test_connection_budget_from_python_keywords_win_over_the_environment(
    lambda_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_env.setenv(_budget.RESERVED, "500")
    lambda_env.setenv(_budget.MAXIMUM, "1000")
    with caplog.at_level("INFO", logger="lambda_conn"):
        budget = lambda_conn.connection_budget(
            reserved_concurrency=20, connections_per_environment=2
        )
    assert budget is not None
    assert budget["budget"] == 40 and budget["max_connections"] == 1000
    assert budget["within"] is True
    [(_level, event)] = budget_events(caplog)
    assert event["budget"] == 40
    assert lambda_conn.connection_budget(max_connections=5, reserved_concurrency=None) is not None
    lambda_env.delenv(_budget.RESERVED)
    assert lambda_conn.connection_budget(max_connections=5) is None  # no concurrency known


def test_the_reused_connections_declared_at_init_are_the_connections_each() -> None:
    # GIVEN a function module that declares two reused connections, then its handler
    code = (
        "from lambda_conn import managed_connection, reused_connection\n"
        "db = reused_connection(lambda: None, name='db')\n"
        "@reused_connection\n"
        "def cache():\n"
        "    return None\n"
        "@managed_connection\n"
        "def handler(event, context):\n"
        "    return None\n"
        "handler({}, None)\n"
        "handler({}, None)\n"
    )
    # THEN one line at Init: 30 environments x 2 connections = 60 > 50
    [(level, event)] = _budget_lines_of(code)
    assert level == "WARNING"
    assert event["connections_per_environment"] == 2
    assert event["counted_from"] == "reused_connections"
    assert event["budget"] == 60 and event["max_connections"] == 50


def _budget_lines_of(code: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``connection_budget`` lines (level, event) of ``code`` run as a function module
    of ``orders`` (reserved concurrency 30, max_connections 50), logging to stdout."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(\n"
        "    stream=sys.stdout, level=logging.INFO, format='%(levelname)s %(message)s'\n"
        ")\n"
    ) + code
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(
        AWS_LAMBDA_FUNCTION_NAME="orders",
        LAMBDA_CONN_RESERVED_CONCURRENCY="30",
        LAMBDA_CONN_MAX_CONNECTIONS="50",
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = [line.partition(" ") for line in out.splitlines() if "connection_budget" in line]
    return [(level, json.loads(payload)) for level, _, payload in lines]


def test_a_reused_connection_declared_after_the_handler_logs_the_budget_again() -> None:
    # GIVEN a function module that decorates its handler first (the budget is logged
    # then, with no reused connection yet: one each), then declares two reused connections
    code = (
        "from lambda_conn import managed_connection, reused_connection\n"
        "@managed_connection\n"
        "def handler(event, context):\n"
        "    return None\n"
        "db = reused_connection(lambda: None, name='db')\n"
        "cache = reused_connection(lambda: None, name='cache')\n"
        "handler({}, None)\n"
    )
    lines = _budget_lines_of(code)
    # THEN the first line's 30 x 1 fits, and the second reused connection logs it again:
    # 30 x 2 = 60 > 50, a warning, marked as recounted (the first one changed nothing)
    assert [(level, e["connections_per_environment"], e["budget"]) for level, e in lines] == [
        ("INFO", 1, 30),
        ("WARNING", 2, 60),
    ]
    assert "recounted" not in lines[0][1] and lines[1][1]["recounted"] is True
    assert lines[1][1]["within"] is False
