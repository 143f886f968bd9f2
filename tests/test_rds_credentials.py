"""Credentials never show: the whole output of successful and failing connects is grepped.

Every log record (all loggers at DEBUG, botocore's included), everything written to the
process's stdout/stderr, the repr and str of every object the connector hands out, and
every exception (message, args, the formatted traceback with its causes) is searched for
the password, the wrong password, the IAM token and the token's signature.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

import lambda_conn
from lambda_conn import managed_connection
from lambda_conn._errors import ConfigurationError
from lambda_conn._rds.connector import ConnectError, RDSConnector
from lambda_conn._rds.deadline import Deadline, Timeouts
from lambda_conn._rds.iam import IAMTokenProvider
from lambda_conn._rds.retry import Retry
from tests.servers import MariaDBServer, SilentTCPServer

PASSWORD = "grep-me-Pa55word-7f3a"
WRONG_PASSWORD = "grep-me-WRONG-pw-91c2"
APP_USER = "grep_app"
IAM_USER = "grep_iam"


class FakeContext:
    def __init__(self, remaining_ms: int = 5000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class FixedClock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Output:
    """Everything that could carry a credential, as text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, *objects: Any) -> None:
        for obj in objects:
            self.texts += [repr(obj), str(obj)]

    def add_error(self, exc: BaseException) -> None:
        self.add(exc, exc.args)
        self.texts.append("".join(traceback.format_exception(exc)))  # causes included
        for name in ("last_error", "original_exception"):
            if getattr(exc, name, None) is not None:
                self.add_error(getattr(exc, name))

    def expect_error(self, kind: type[BaseException], call: Callable[[], Any]) -> BaseException:
        with pytest.raises(kind) as info:
            call()
        self.add_error(info.value)
        return info.value


def test_no_credential_in_logs_output_reprs_or_errors(
    make_mariadb: Callable[..., MariaDBServer],
    silent_server: SilentTCPServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy-secret-access-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    out = Output()
    server = make_mariadb(tls=True, max_connections=10)
    assert server.tls is not None
    server.query(f"CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY %s", (PASSWORD,))
    server.query(f"GRANT SELECT ON {server.database}.* TO '{APP_USER}'@'127.0.0.1'")
    quick = Retry(attempts=3, sleep=lambda s: None)

    def connector(**kw: Any) -> RDSConnector:
        options: dict[str, Any] = {
            "port": server.port,
            "user": APP_USER,
            "password": PASSWORD,
            "database": server.database,
            "ssl_ca": server.tls.ca if server.tls else None,
            "retry": quick,
            **kw,
        }
        rds = RDSConnector(server.host, **options)
        out.add(rds)
        return rds

    with caplog.at_level(logging.DEBUG):  # root: every logger, botocore's included
        provider = IAMTokenProvider("us-east-1", clock=FixedClock())
        token = provider.token(server.host, server.port, IAM_USER)  # signed under DEBUG
        server.query(f"CREATE USER '{IAM_USER}'@'127.0.0.1' IDENTIFIED BY %s", (token,))

        # 1. success with a password, per invocation under @managed_connection
        rds = connector()

        @managed_connection
        def handler(event: Any, context: Any) -> Any:
            conn = rds.connect(context)
            out.add(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT CURRENT_USER()")
                return cur.fetchone()

        assert handler({}, FakeContext()) == (f"{APP_USER}@127.0.0.1",)

        # 2. success with IAM, reused across invocations
        iam = connector(user=IAM_USER, password=None, iam=provider, database=None)
        db = iam.reused()
        out.add(db, provider, db(FakeContext()), db)
        db.close()

        # 3. wrong password, and an IAM token the server refuses (refreshed once, then raised)
        out.expect_error(
            pymysql.err.OperationalError, lambda: connector(password=WRONG_PASSWORD).connect()
        )
        refused = connector(user=APP_USER, password=None, iam=provider, database=None)
        out.expect_error(pymysql.err.OperationalError, lambda: refused.connect(FakeContext()))

        # 4. too many connections, retried, then given up
        held = []
        while True:
            try:
                held.append(server.connect())
            except pymysql.err.OperationalError:
                break
        out.expect_error(ConnectError, lambda: rds.connect(FakeContext()))
        for conn in held:
            conn.close()

        # 5. a server that never greets, cut by the deadline
        hung = connector(port=silent_server.port, tls=False, ssl_ca=None, retry=Retry())
        out.expect_error(ConnectError, lambda: hung.connect(deadline=0.5))

        # 6. the server down
        server.stop()
        out.expect_error(ConnectError, lambda: rds.connect(FakeContext()))

        # 7. misconfigurations that carry a credential
        out.expect_error(ConfigurationError, lambda: connector(passwd=PASSWORD))
        out.expect_error(ConfigurationError, lambda: connector(iam=provider))
        out.expect_error(ConfigurationError, lambda: connector(ssl=PASSWORD))

        out.add(quick, Timeouts(), Deadline.after(1), lambda_conn.stats())

    captured = capfd.readouterr()
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    everything = "\n".join([logged, captured.out, captured.err, *out.texts])
    # Sanity: the grep looks at real output (the retries and failures were logged) ...
    assert "rds_connect_retry" in logged and "rds_connect_failed" in logged
    assert "Access denied" in everything and IAM_USER in everything
    # ... and finds no credential in any of it
    tokens = [token for token, _signed_at in provider._cache.values()]
    assert token in tokens and len(tokens) == 2  # the refused user's token too
    signatures = [t.rsplit("X-Amz-Signature=", 1)[1] for t in tokens]
    secrets = [PASSWORD, WRONG_PASSWORD, *tokens, *signatures, "dummy-secret-access-key"]
    for secret in secrets:
        assert secret not in everything, f"a credential leaked: {secret[:6]}..."
