"""The PostgreSQL side of ``RDSConnector``: psycopg 3 (or psycopg2) under one deadline.

libpq makes the TCP connection, the TLS handshake and the startup itself, so the watchdog
the MySQL side uses has no socket to cut. With psycopg 3 we drive libpq's non-blocking
connect (``PQconnectStart``/``PQconnectPoll``, psycopg's documented ``pq`` layer) and wait
on its socket against the attempt's own end: the connect timeout bounds TCP, TLS and
startup as a whole, to the millisecond. (libpq's ``connect_timeout`` is whole seconds, at
least 2, and per host address.) psycopg2 exposes no such layer, but runs the same
non-blocking connect when a wait callback is set: ``psycopg2_connect`` sets one for the
connect alone where no other thread could meet it, and waits on the socket against the
attempt's end; with other threads alive it waits for a blocking connect in a helper
thread instead (see there).

libpq does not expose the SQLSTATE of a failed startup (the server's ErrorResponse becomes
a message), so a failure is classified by the server's message text (English, as RDS
sends it) and by libpq's own client-side messages; anything unrecognised is not retried.

TLS: ``verify-full`` against ``ssl_ca`` (the RDS CA bundle) or the system store
(``sslrootcert=system``, libpq 16+). libpq builds its own TLS state per connection from the
CA file, and PostgreSQL servers turn session tickets and their session cache off, so
there is no session to resume (see benchmarks/RESULTS.md for what that costs).

Through RDS Proxy, psycopg 3's default ``prepare_threshold=5`` would server-prepare a
statement after five runs and pin the proxy connection to this client for as long as the
connection lives: the connector sets ``prepare_threshold=None`` there unless told otherwise.
"""

from __future__ import annotations

import re
import selectors
import time
from typing import TYPE_CHECKING, Any

from lambda_conn._errors import ConfigurationError
from lambda_conn._rds.connector import ConnectError
from lambda_conn._rds.deadline import Timeouts

if TYPE_CHECKING:
    from lambda_conn._rds.connector import RDSConnector
    from lambda_conn._rds.resume import ResumingTLS

#: SQLSTATEs worth another attempt at connect time.
RETRYABLE_SQLSTATES: frozenset[str] = frozenset(
    {
        "53300",  # too_many_connections: max_connections, or a role's connection limit
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "57P01",  # admin_shutdown: terminated during startup (restart, failover)
        "08006",  # connection_failure: refused, reset, closed during startup, timed out
    }
)

#: The server's startup messages, as libpq reports them, and their SQLSTATE.
_SERVER_MESSAGES = (
    ("sorry, too many clients already", "53300"),
    ("too many connections for", "53300"),  # role / database connection limits
    ("remaining connection slots are reserved", "53300"),
    ("the database system is starting up", "57P03"),
    ("the database system is shutting down", "57P03"),
    ("the database system is in recovery mode", "57P03"),
    ("the database system is not yet accepting connections", "57P03"),
    ("the database system is not accepting connections", "57P03"),
    ("terminating connection due to administrator command", "57P01"),
    ("password authentication failed", "28P01"),
    ("pam authentication failed", "28P01"),
    ("no pg_hba.conf entry", "28000"),
    ("does not exist", "3D000"),  # database "x" does not exist (a role: 28000 below)
)
_ROLE_MISSING = re.compile(r'role "[^"]*" does not exist')

#: libpq's own messages for a connection that never got going or went away mid-startup.
_TRANSIENT = (
    "connection refused",
    "connection reset",
    "server closed the connection unexpectedly",
    "could not connect to server",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    "timed out",
    "ssl syscall error: eof detected",
    "ssl connection has been closed unexpectedly",
    "could not receive data from server",
    "could not send data to server",
    "could not translate host name",
    "temporary failure in name resolution",
    "broken pipe",
    "unexpected eof",
)
#: ...and the ones no retry can fix: certificates, TLS configuration.
_PERMANENT = (
    "certificate",  # verify failed, does not match host name, could not read root cert
    "ssl error",
    "server does not support ssl",
    "root certificate file",
    "sslmode",
)

#: libpq ``sslmode`` values and what they mean here: (tls, verify).
SSLMODES = {
    "disable": (False, False),
    "allow": None,  # silently falls back to clear text: never with the connector
    "prefer": None,
    "require": (True, False),
    "verify-ca": (True, True),
    "verify-full": (True, True),
}

# libpq / psycopg arguments the connector sets itself.
OWN_OPTIONS = {
    "host": "host",
    "hostaddr": "host",
    "port": "port=",
    "user": "user=",
    "password": "password= or iam=",
    "passfile": "password= or iam=",
    "dbname": "database=",
    "database": "database=",
    "service": "the connector's own options (a service file can set host and password)",
    "connect_timeout": "timeouts=Timeouts(connect=...)",
    "sslcert": "nothing: client certificates are not supported (RDS uses none)",
    "sslkey": "nothing: client certificates are not supported (RDS uses none)",
    "sslpassword": "nothing: client certificates are not supported (RDS uses none)",
    "conninfo": "host=, port=, user=, database= and the other keyword options",
}
SECRET_OPTIONS = frozenset({"password", "sslpassword", "conninfo"})

# Connection attributes psycopg 3 sets itself after connect (the rest go to libpq).
_PSYCOPG3_ATTRIBUTES = ("autocommit", "prepare_threshold", "row_factory", "cursor_factory")
_PSYCOPG2_ATTRIBUTES = ("autocommit",)
_PSYCOPG2_FACTORIES = ("connection_factory", "cursor_factory")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a failed connect: the driver's, else from the server's message."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(code, str) and code:
        return code
    text = str(exc).lower()
    if _ROLE_MISSING.search(text):
        return "28000"
    for message, state in _SERVER_MESSAGES:
        if message in text:
            return state
    if any(marker in text for marker in _TRANSIENT) and not any(
        marker in text for marker in _PERMANENT
    ):
        return "08006"
    return None


def is_retryable(exc: BaseException) -> bool:
    """True for the connect failures another attempt may not meet (``RETRYABLE_SQLSTATES``)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if not _is_driver_error(exc):
        return False
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("psycopg", "psycopg2")


def _driver(driver: str | None) -> str:
    """``driver``, else psycopg 3 when it is installed, else psycopg2."""
    import importlib.util

    for name in (driver,) if driver is not None else ("psycopg", "psycopg2"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise ImportError(
        f"RDSConnector(engine='postgresql', driver={driver!r}) needs "
        + (driver if driver else "psycopg 3 (pip install 'lambda-conn[postgres]') or psycopg2")
    )


class PostgresConnectError(ConnectError):
    """``ConnectError`` for PostgreSQL; the driver's ``OperationalError`` is mixed in per
    driver (see :func:`connect_error_for`)."""


_ERROR_CLASSES: dict[str, type[ConnectError]] = {}


def connect_error_for(driver: str) -> type[ConnectError]:
    """``ConnectError`` that is also ``driver``'s ``OperationalError``."""
    cls = _ERROR_CLASSES.get(driver)
    if cls is None:
        if driver == "psycopg":
            import psycopg

            base: type[Exception] = psycopg.OperationalError
        else:
            import psycopg2  # type: ignore[import-untyped, unused-ignore]

            base = psycopg2.OperationalError
        cls = type("ConnectError", (PostgresConnectError, base), {"__module__": __name__})
        _ERROR_CLASSES[driver] = cls
    return cls


class PostgresEngine:
    """What ``RDSConnector(engine="postgresql")`` does differently from MySQL."""

    name = "postgresql"
    default_port = 5432
    own_options = OWN_OPTIONS
    secret_options = SECRET_OPTIONS
    auth_failed: int | str = "28P01"  # a stale IAM token is refused as a bad password

    def __init__(self, driver: str | None = None) -> None:
        self.driver = _driver(driver)
        self.connect_error = connect_error_for(self.driver)
        self.sslmode = "disable"
        self.sslrootcert: str | None = None
        self.attributes: dict[str, Any] = {}
        self.libpq: dict[str, Any] = {}
        self.factories: dict[str, Any] = {}

    # ------------------------------------------------------------------ configuration

    def configure(self, rds: RDSConnector, options: dict[str, Any]) -> dict[str, Any]:
        """Translate libpq's TLS spellings, split psycopg's own options from libpq's."""
        self._tls_options(rds, options)
        if rds.timeouts.read is not None or rds.timeouts.write is not None:
            raise ConfigurationError(
                "timeouts",
                rds.timeouts,
                "Timeouts(connect=...) only for PostgreSQL: libpq has no read or write "
                "timeout (bound queries with options='-c statement_timeout=5s')",
            )
        own = _PSYCOPG3_ATTRIBUTES if self.driver == "psycopg" else _PSYCOPG2_ATTRIBUTES
        self.attributes = {name: options.pop(name) for name in own if name in options}
        if self.driver == "psycopg2":
            self.factories = {n: options.pop(n) for n in _PSYCOPG2_FACTORIES if n in options}
        elif "prepare_threshold" not in self.attributes and rds.proxy:
            # Server-side prepares pin an RDS Proxy connection to this client.
            self.attributes["prepare_threshold"] = None
        options.setdefault("gssencmode", "disable")  # RDS offers no GSSAPI encryption
        self.libpq = options
        return options

    def _tls_options(self, rds: RDSConnector, options: dict[str, Any]) -> None:
        sslmode = options.pop("sslmode", None)
        sslrootcert = options.pop("sslrootcert", None)
        if sslmode is not None:
            meaning = SSLMODES.get(sslmode) if isinstance(sslmode, str) else None
            if meaning is None:
                raise ConfigurationError(
                    "sslmode",
                    sslmode,
                    "'verify-full' (the default with ssl_ca), 'verify-ca', 'require' or "
                    "'disable' ('allow' and 'prefer' fall back to clear text silently)",
                )
            tls, verify = meaning
            if rds.auth == "iam" and not verify:
                raise ConfigurationError(
                    "sslmode",
                    sslmode,
                    "'verify-full' or 'verify-ca' with iam: the token is the password and "
                    "must only go to a server whose certificate was verified",
                )
            if rds.tls is False and tls:
                raise ConfigurationError("tls", False, f"True with sslmode={sslmode!r}")
            if rds.verify is not None and rds.verify != verify:
                raise ConfigurationError("verify", rds.verify, f"{verify} (sslmode={sslmode!r})")
            rds.tls, rds.verify = tls, verify
        if sslrootcert is not None:
            if rds.ssl_ca is not None and rds.ssl_ca != sslrootcert:
                raise ConfigurationError("sslrootcert", sslrootcert, "the same path as ssl_ca")
            if sslrootcert != "system":
                rds.ssl_ca = sslrootcert
            elif rds.verify is None:
                rds.verify = True
        tls = rds.tls
        verify = (rds.ssl_ca is not None if rds.verify is None else rds.verify) if tls else False
        if not tls:
            self.sslmode = "disable"
        elif not verify:
            self.sslmode = "require"
        else:
            self.sslmode = "verify-ca" if sslmode == "verify-ca" else "verify-full"
            if rds.ssl_ca is not None:
                self.sslrootcert = rds.ssl_ca
            else:
                self.sslrootcert = "system"
                self._check_system_store()

    def _check_system_store(self) -> None:
        version = _libpq_version(self.driver)
        if version is not None and version < 160000:
            raise ConfigurationError(
                "ssl_ca",
                None,
                "the path of the RDS CA bundle: this libpq "
                f"({version // 10000}) cannot verify against the system store "
                "(sslrootcert=system needs libpq 16+)",
            )

    # ------------------------------------------------------------------ errors

    def code(self, exc: BaseException) -> str | None:
        return sqlstate(exc)

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    # ------------------------------------------------------------------ connecting

    def params(self, rds: RDSConnector, credential: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": rds.host,
            "port": rds.port,
            "user": rds.user,
            "dbname": rds.database,
            "sslmode": self.sslmode,
            **self.libpq,
        }
        if self.sslrootcert is not None:
            params["sslrootcert"] = self.sslrootcert
        if credential is not None:
            params["password"] = credential
        return {k: v for k, v in params.items() if v is not None}

    def attempt(
        self,
        rds: RDSConnector,
        limits: Timeouts,
        credential: str | None,
        tls: ResumingTLS | None,
    ) -> Any:
        params = self.params(rds, credential)
        if self.driver == "psycopg":
            return self._psycopg(params, limits.connect)
        return self._psycopg2(params, limits.connect)

    def _psycopg(self, params: dict[str, Any], limit: float) -> Any:
        import psycopg
        from psycopg import pq
        from psycopg.conninfo import make_conninfo

        ends = time.monotonic() + limit
        pgconn = pq.PGconn.connect_start(make_conninfo("", **params).encode())
        try:
            _poll(pgconn, pq, ends, limit)
        except BaseException:
            pgconn.finish()
            raise
        pgconn.nonblocking = 1
        conn = psycopg.Connection(pgconn)  # tracked by the scope, like psycopg.connect()
        conn._autocommit = bool(self.attributes.get("autocommit", False))
        conn.prepare_threshold = self.attributes.get("prepare_threshold", 5)
        for name in ("row_factory", "cursor_factory"):
            if self.attributes.get(name) is not None:
                setattr(conn, name, self.attributes[name])
        return conn

    def _psycopg2(self, params: dict[str, Any], limit: float) -> Any:
        from psycopg2.extensions import make_dsn  # type: ignore[import-untyped, unused-ignore]

        from lambda_conn._rds.psycopg2_connect import connect

        conn = connect(make_dsn(**params), limit, self.factories)
        if "autocommit" in self.attributes:
            conn.autocommit = bool(self.attributes["autocommit"])
        return conn

    def apply_timeouts(self, conn: Any, limits: Timeouts) -> None:
        """Nothing to set: libpq has no client-side query timeout (see ``configure``)."""


def _poll(pgconn: Any, pq: Any, ends: float, limit: float) -> None:
    """Drive ``PQconnectPoll`` until the connection is up, failed, or ``ends`` passed."""
    import psycopg

    ok, failed = pq.PollingStatus.OK, pq.PollingStatus.FAILED
    reading = pq.PollingStatus.READING
    with selectors.DefaultSelector() as selector:
        while True:
            if pgconn.status == pq.ConnStatus.BAD:
                raise psycopg.OperationalError(f"connection is bad: {_message(pgconn)}")
            status = pgconn.connect_poll()
            if status == ok:
                return
            if status == failed:
                raise psycopg.OperationalError(f"connection failed: {_message(pgconn)}")
            event = selectors.EVENT_READ if status == reading else selectors.EVENT_WRITE
            # The socket may change between polls (libpq tries each address in turn).
            fd = pgconn.socket
            selector.register(fd, event)
            try:
                left = ends - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise psycopg.OperationalError(
                        f"connection timeout expired: the connect (TCP, TLS and startup) "
                        f"did not finish within {limit * 1000:.0f} ms (the connect timeout, "
                        "cut to the invocation's deadline)"
                    )
            finally:
                selector.unregister(fd)


def _message(pgconn: Any) -> str:
    raw = pgconn.error_message
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text.strip()


def _libpq_version(driver: str) -> int | None:
    try:
        if driver == "psycopg":
            from psycopg import pq

            return int(pq.version())
        import psycopg2.extensions  # type: ignore[import-untyped, unused-ignore]

        return int(psycopg2.extensions.libpq_version())
    except Exception:  # pragma: no cover - a build without the call
        return None
