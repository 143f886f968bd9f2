"""The RDS Proxy example stacks (MySQL, PostgreSQL): templates pass cfn-lint, handlers run.

The handlers run in-process against the private MariaDB / PostgreSQL with TLS
(certificates generated for the run, passed as ``DB_SSL_CA``) and IAM auth: the token the
function's connector signs with dummy credentials is made the database user's password.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import lambda_conn
from lambda_conn._rds.connector import RDSConnector
from tests.servers import MariaDBServer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rds_proxy"
TEMPLATE = EXAMPLE / "template.yaml"
PG_EXAMPLE = EXAMPLE.parent / "rds_proxy_postgres"
TEMPLATES = [TEMPLATE, PG_EXAMPLE / "template.yaml"]


class FakeContext:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def cfn_lint_command() -> list[str]:
    exe = shutil.which("cfn-lint")
    if exe is not None:
        return [exe]
    if importlib.util.find_spec("cfnlint") is None:
        pytest.fail("cfn-lint is not installed: pip install -e '.[test]'", pytrace=False)
    return [sys.executable, "-m", "cfnlint"]


@pytest.mark.parametrize("template", TEMPLATES, ids=["mysql", "postgresql"])
def test_template_passes_cfn_lint(template: Path) -> None:
    result = subprocess.run(
        [*cfn_lint_command(), "--regions", "us-east-1", "eu-west-1", "--", str(template)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_requires_tls_and_iam_at_the_proxy() -> None:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(TEMPLATE))
    resources = template["Resources"]
    proxy = resources["Proxy"]["Properties"]
    assert proxy["RequireTLS"] is True
    assert [auth["IAMAuth"] for auth in proxy["Auth"]] == ["REQUIRED"]
    assert "VpcSubnetIds" in proxy
    assert {"VpcId", "SubnetIds"} <= set(template["Parameters"])
    functions = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    assert {p["Handler"] for p in functions.values()} == {"app.handler", "bench.handler"}
    for props in functions.values():
        actions = [s["Action"] for p in props["Policies"] for s in p["Statement"]]
        assert actions == ["rds-db:connect"]
    # No password anywhere in the template: the database's lives in Secrets Manager only
    database = resources["Database"]["Properties"]
    assert database["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in database


def load_handler_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"rds_proxy_example_{name}", EXAMPLE / "src" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_env(
    make_mariadb: Callable[..., MariaDBServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MariaDBServer]:
    """A TLS MariaDB and the function's environment, as the template sets it."""
    server = make_mariadb(tls=True)
    assert server.tls is not None
    for name, value in {
        "DB_HOST": server.host,
        "DB_PORT": str(server.port),
        "DB_USER": "app_iam",
        "DB_NAME": server.database,
        "DB_SSL_CA": server.tls.ca,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "dummy-secret-access-key",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    # The examples import the public name; harmless once lambda_conn exports it.
    monkeypatch.setattr(lambda_conn, "RDSConnector", RDSConnector, raising=False)
    yield server


def grant_iam_user(server: MariaDBServer, connector: Any) -> None:
    """Make the token the function's connector will send the user's password."""
    token = connector.iam.token(server.host, server.port, "app_iam")  # cached from now on
    server.query("CREATE USER 'app_iam'@'127.0.0.1' IDENTIFIED BY %s", (token,))
    server.query(f"GRANT SELECT ON {server.database}.* TO 'app_iam'@'127.0.0.1'")


def test_app_handler_runs(example_env: MariaDBServer) -> None:
    app = load_handler_module("app")
    grant_iam_user(example_env, app.rds)
    try:
        first = app.handler({}, FakeContext())
        second = app.handler({}, FakeContext())
    finally:
        app.db.close()
    assert first["user"] == "app_iam@127.0.0.1"
    assert second == first
    assert app.db.reconnects == 0  # one connection for both invocations


def test_bench_handler_runs(example_env: MariaDBServer) -> None:
    bench = load_handler_module("bench")
    grant_iam_user(example_env, bench.rds)
    try:
        result = bench.handler({"repeat": 3}, FakeContext())
    finally:
        bench.kept.close()
    assert result["unit"] == "ms"
    assert [c["n"] for c in result["cases"]] == [3, 3, 3, 3]
    assert min(c["ratio"] for c in result["cases"]) == 1.0
    assert example_env.wait_for_sessions(0, user="app_iam") == 0


def test_postgres_template_requires_tls_and_iam_and_runs_postgres() -> None:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(PG_EXAMPLE / "template.yaml"))
    resources = template["Resources"]
    proxy = resources["Proxy"]["Properties"]
    assert proxy["EngineFamily"] == "POSTGRESQL"
    assert proxy["RequireTLS"] is True
    assert [auth["IAMAuth"] for auth in proxy["Auth"]] == ["REQUIRED"]
    database = resources["Database"]["Properties"]
    assert database["Engine"] == "postgres"
    assert database["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in database
    ports = {
        rule["FromPort"]
        for name in ("ProxySecurityGroup", "DatabaseSecurityGroup")
        for rule in resources[name]["Properties"]["SecurityGroupIngress"]
    }
    assert ports == {5432}


def test_postgres_app_handler_runs(
    make_postgres: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_postgres(tls=True)
    for name, value in {
        "DB_HOST": server.host,
        "DB_PORT": str(server.port),
        "DB_USER": "app_iam",
        "DB_NAME": server.database,
        "DB_SSL_CA": server.tls.ca,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "dummy-secret-access-key",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    spec = importlib.util.spec_from_file_location("rds_proxy_pg_app", PG_EXAMPLE / "src" / "app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    token = app.rds.iam.token(server.host, server.port, "app_iam")  # cached from now on
    literal = server.query("SELECT quote_literal(%s)", (token,))[0][0]
    server.query(f"CREATE ROLE app_iam LOGIN PASSWORD {literal}")
    try:
        first = app.handler({}, FakeContext())
        second = app.handler({}, FakeContext())
        ssl_used = server.query(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = 'app_iam'"
        )[0][0]
    finally:
        app.db.close()
    assert first["user"] == "app_iam" and second == first
    assert ssl_used is True
    assert app.db.reconnects == 0
    assert server.wait_for_sessions(0, user="app_iam") == 0
