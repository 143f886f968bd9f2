"""connect_mysql / tls_context: one shared SSLContext, verification against a real TLS server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql
import pytest

from lambda_conn import ConfigurationError, connect_mysql, managed_connection, tls_context
from tests.servers.mariadb import generate_tls_files


@pytest.fixture(scope="module")
def tls_server() -> Any:
    from tests.servers.mariadb import MariaDBServer

    with MariaDBServer(tls=True) as server:
        yield server


def plain_kwargs(server: Any) -> dict[str, Any]:
    kwargs = server.connect_kwargs()
    return {k: kwargs[k] for k in ("host", "port", "user", "password", "database")}


def cipher(conn: Any) -> str:
    with conn.cursor() as cursor:
        cursor.execute("SHOW STATUS LIKE 'Ssl_cipher'")
        return str(cursor.fetchone()[1])


def test_verified_tls_with_the_servers_ca_and_one_shared_context(tls_server: Any) -> None:
    kwargs = {**plain_kwargs(tls_server), "ssl_ca": tls_server.tls.ca}
    first, second = connect_mysql(**kwargs), connect_mysql(**kwargs)
    try:
        assert cipher(first) and cipher(second)
        assert first.ctx.context is second.ctx.context is tls_context(ca=tls_server.tls.ca)
    finally:
        first.close()
        second.close()


def test_a_wrong_ca_is_refused(tls_server: Any, tmp_path: Path) -> None:
    other = generate_tls_files(tmp_path)  # a CA that did not sign the server's certificate
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect_mysql(**plain_kwargs(tls_server), ssl_ca=other.ca)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_tls_preferred_without_options_uses_tls_when_offered(tls_server: Any) -> None:
    conn = connect_mysql(**plain_kwargs(tls_server))
    try:
        assert cipher(conn)
    finally:
        conn.close()


def test_connections_from_connect_mysql_are_tracked(tls_server: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        kept.append(connect_mysql(**plain_kwargs(tls_server)))

    handler({}, None)
    assert not kept[0].open


def test_unreadable_client_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        tls_context(cert=str(tmp_path / "missing.pem"), key_password="key-secret")
    assert info.value.setting == "cert"
    assert "key-secret" not in str(info.value)


def test_connect_mysql_resumes_the_endpoints_tls_session(tls_server: Any) -> None:
    from lambda_conn._rds.resume import forget_all

    forget_all()
    kwargs = {**plain_kwargs(tls_server), "ssl_ca": tls_server.tls.ca}

    def resumed(**overrides: Any) -> bool:
        conn = connect_mysql(**{**kwargs, **overrides})
        try:
            return bool(conn._sock.session_reused)
        finally:
            conn.close()

    assert [resumed() for _ in range(3)] == [False, True, True]
    with pytest.raises(pymysql.err.OperationalError):
        resumed(password="wrong")  # offered the session, failed: the session is dropped
    assert resumed() is False
