"""The MySQL side of ``RDSConnector``: one PyMySQL login under a watchdog, TLS resumed.

PyMySQL's own timeouts apply per socket operation, so the connector opens the TCP socket
itself and a watchdog cuts the whole login (TCP, TLS handshake, auth) off at the attempt's
end. With TLS, the handshake goes through :class:`~lambda_conn._rds.resume.ResumingTLS`,
which offers the server the session of the previous connect to the same endpoint: MySQL
and MariaDB issue session tickets, so a per-invocation connect skips the full handshake.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

import pymysql

from lambda_conn._rds.connector import ConnectError
from lambda_conn._rds.deadline import Timeouts
from lambda_conn._rds.retry import error_code, is_retryable
from lambda_conn._rds.watchdog import WATCHDOG

if TYPE_CHECKING:
    from lambda_conn._rds.connector import RDSConnector
    from lambda_conn._rds.resume import ResumingTLS

# PyMySQL arguments the connector sets itself: passing them through would bypass TLS,
# auth or the deadline.
OWN_OPTIONS = {
    "host": "host",
    "port": "port=",
    "user": "user=",
    "password": "password= or iam=",
    "passwd": "password= or iam=",
    "database": "database=",
    "db": "database=",
    "ssl": "tls=, ssl_ca= and verify=",
    "ssl_ca": "ssl_ca=",
    "ssl_disabled": "tls=False",
    "ssl_verify_cert": "verify=",
    "ssl_verify_identity": "verify=",
    "connect_timeout": "timeouts=Timeouts(connect=...)",
    "read_timeout": "timeouts=Timeouts(read=...)",
    "write_timeout": "timeouts=Timeouts(write=...)",
    "defer_connect": "nothing (the connector connects)",
    "ssl_cert": "nothing: client certificates are not supported (RDS uses none)",
    "ssl_key": "nothing: client certificates are not supported (RDS uses none)",
    "ssl_key_password": "nothing: client certificates are not supported (RDS uses none)",
    "unix_socket": "host and port (RDS is reached over TCP)",
    # An option file can set the host, credentials and TLS behind the connector's back.
    "read_default_file": "the connector's own options",
    "read_default_group": "the connector's own options",
}
SECRET_OPTIONS = frozenset({"password", "passwd", "ssl", "ssl_key", "ssl_key_password"})


class MySQLConnectError(ConnectError, pymysql.err.OperationalError):  # type: ignore[misc]
    """``ConnectError`` for MySQL: also a ``pymysql.err.OperationalError`` whose ``args``
    are ``(code, message)`` with the last attempt's MySQL error number (1040, 2003, ...)."""

    def _driver_args(self, code: int | str | None, message: str) -> tuple[Any, ...]:
        return (code if isinstance(code, int) else 2003, message)


class MySQLEngine:
    """What ``RDSConnector(engine="mysql")`` does differently from PostgreSQL."""

    name = "mysql"
    default_port = 3306
    own_options = OWN_OPTIONS
    secret_options = SECRET_OPTIONS
    # ER_ACCESS_DENIED_ERROR: a stale IAM token is refused with it.
    auth_failed: int | str = 1045
    connect_error: type[ConnectError] = MySQLConnectError

    def configure(self, connector: RDSConnector, options: dict[str, Any]) -> dict[str, Any]:
        return options

    def code(self, exc: BaseException) -> int | str | None:
        return error_code(exc)

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    def attempt(
        self,
        rds: RDSConnector,
        limits: Timeouts,
        credential: str | None,
        tls: ResumingTLS | None,
    ) -> Any:
        conn = pymysql.connect(
            host=rds.host,
            port=rds.port,
            user=rds.user,
            password=credential,
            database=rds.database,
            ssl=tls.context if tls is not None else None,
            ssl_disabled=tls is None,
            connect_timeout=limits.connect,
            # The whole login (greeting, TLS handshake, auth) under the connect timeout:
            # PyMySQL reads it with the read timeout, writes with the write timeout.
            read_timeout=limits.connect,
            write_timeout=limits.connect,
            defer_connect=True,
            **rds.driver_options,
        )
        if tls is not None:
            # PyMySQL calls ``ctx.wrap_socket``: this one offers the endpoint's last session.
            conn.ctx = tls
        # Per-operation timeouts alone let a server that answers each step just in time
        # hold the login for several of them: the watchdog cuts it off as a whole. It
        # shuts down a duplicate of the socket, which stays valid while PyMySQL's TLS wrap
        # detaches the original and runs the handshake.
        ends = time.monotonic() + limits.connect  # the TCP connect counts too
        sock = self._open_socket(rds, conn, limits.connect)
        try:
            watch = sock.dup()
        except OSError as exc:  # EMFILE, say: nothing may leak
            sock.close()
            raise _cannot_connect(rds.host, exc) from exc
        left = max(ends - time.monotonic(), 0.0)
        handle = WATCHDOG.arm(left, functools.partial(cut_off, watch))
        try:
            try:
                conn.connect(sock)
            finally:
                in_time = WATCHDOG.disarm(handle)
        except Exception as exc:
            if tls is not None:
                tls.forget()  # a session the server may not take again
            if not in_time:
                raise _login_cut_off(rds.host, rds.port, limits.connect) from exc
            raise
        finally:
            watch.close()
        if not in_time:  # cut off as it finished: the socket is gone
            conn._force_close()
            if tls is not None:
                tls.forget()
            raise _login_cut_off(rds.host, rds.port, limits.connect)
        if tls is not None and isinstance(conn._sock, ssl.SSLSocket):
            tls.remember(conn._sock)
        return conn

    @staticmethod
    def _open_socket(rds: RDSConnector, conn: Any, timeout: float) -> socket.socket:
        """The TCP connect PyMySQL would make, with its options and its error."""
        bind = rds.driver_options.get("bind_address")
        try:
            sock = socket.create_connection(
                (rds.host, rds.port), timeout, source_address=(bind, 0) if bind else None
            )
        except OSError as exc:
            raise _cannot_connect(rds.host, exc) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.host_info = f"socket {rds.host}:{rds.port}"
        return sock

    def apply_timeouts(self, conn: Any, limits: Timeouts) -> None:
        """PyMySQL applies ``_read_timeout``/``_write_timeout`` on the next socket operation
        (it compares them with the socket's current timeout on every packet), so a kept
        connection gets each invocation's own deadline."""
        conn._read_timeout = limits.read
        conn._write_timeout = limits.write


def cut_off(watch: socket.socket) -> None:
    """Wake whatever read, write or handshake the login is blocked in."""
    with contextlib.suppress(OSError):  # the login closed it meanwhile
        watch.shutdown(socket.SHUT_RDWR)


def _cannot_connect(host: str, exc: OSError) -> pymysql.err.OperationalError:
    """PyMySQL's own error for a failed TCP connect (2003: retryable)."""
    return pymysql.err.OperationalError(2003, f"Can't connect to MySQL server on {host!r} ({exc})")


def _login_cut_off(host: str, port: int, limit: float) -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(
        2013,  # CR_SERVER_LOST, as PyMySQL reports a handshake that timed out
        f"login to {host}:{port} did not finish within {limit * 1000:.0f} ms "
        "(the connect timeout, cut to the invocation's deadline)",
    )
