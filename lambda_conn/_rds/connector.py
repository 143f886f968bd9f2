"""``RDSConnector``: MySQL and PostgreSQL connections that are safe to open inside a Lambda
invocation.

One validated value object holds everything a connect needs (engine, endpoint, auth, TLS,
retry, timeouts) and produces connections on demand:

    rds = RDSConnector("proxy.example", user="app", database="app", iam=True, verify=True)
    conn = rds.connect(context)      # per invocation (closed by @managed_connection)
    db = rds.reused()                # or one connection kept across invocations
    conn = db(context)

Every connect is bounded by the invocation's remaining time less a margin: attempts,
backoff sleeps and socket timeouts all fit inside it, so a hung server or a burst of
"too many connections" ends in an error the handler can report instead of a Lambda
timeout. What differs per engine (the driver call, its error codes, its timeouts) lives in
``mysql`` (PyMySQL) and ``postgres`` (psycopg 3 or psycopg2); the drivers load only there.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from lambda_conn._errors import ConfigurationError, LambdaConnError
from lambda_conn._log import log_event
from lambda_conn._rds.deadline import (
    DEFAULT_MARGIN,
    Clock,
    Deadline,
    Timeouts,
    earliest,
    seconds,
)
from lambda_conn._rds.iam import IAMTokenProvider
from lambda_conn._rds.retry import Retry
from lambda_conn._rds.secret import Secret, redact, scrub_chain
from lambda_conn._reuse import ReusedConnection

if TYPE_CHECKING:
    import ssl

    from lambda_conn._rds.resume import ResumingTLS

#: Below this much time left there is no point starting (or sleeping before) an attempt:
#: a TLS login to RDS Proxy takes longer.
MIN_ATTEMPT_TIME = 0.05

#: ``engine=`` values and the module that implements each.
ENGINES = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora-mysql": "mysql",
    "postgresql": "postgres",
    "postgres": "postgres",
    "aurora-postgresql": "postgres",
}

#: The drivers each engine can use (None: the first one installed).
DRIVERS = {"mysql": ("pymysql",), "postgres": ("psycopg", "psycopg2")}

# What a host name or address may look like: no scheme, credentials, path or libpq
# keywords (a DSN passed as the host would carry its password into every log line).
_HOST = re.compile(r"^[A-Za-z0-9_.:\-\[\]%]+$")


class ConnectError(LambdaConnError):
    """Every attempt failed with a retryable error, or the deadline left no time for another.

    Also the driver's own connect error, so existing ``except`` clauses keep working: a
    ``pymysql.err.OperationalError`` (``args`` ``(code, message)``) for MySQL, a
    ``psycopg.OperationalError`` (or psycopg2's) for PostgreSQL. ``code`` is the last
    attempt's error code (MySQL number, PostgreSQL SQLSTATE or None); ``__cause__`` is that
    last error. Errors no retry can fix (a bad password, an unknown database, a
    certificate that does not verify) are raised unchanged instead.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None,
        attempts: int,
        elapsed: float,
        reason: str,
        last_error: BaseException | None,
    ) -> None:
        super().__init__(*self._driver_args(code, message))
        self.code = code
        self.attempts = attempts
        self.elapsed = elapsed
        self.reason = reason  # "attempts" or "deadline"
        self.last_error = last_error

    def _driver_args(self, code: int | str | None, message: str) -> tuple[Any, ...]:
        return (message,)


class Engine(Protocol):
    """What one database engine supplies to the connector (see ``mysql``, ``postgres``)."""

    name: str
    default_port: int
    own_options: dict[str, str]
    secret_options: frozenset[str]
    auth_failed: int | str
    connect_error: type[ConnectError]

    def configure(self, connector: RDSConnector, options: dict[str, Any]) -> dict[str, Any]: ...

    def code(self, exc: BaseException) -> int | str | None: ...

    def is_retryable(self, exc: BaseException) -> bool: ...

    def attempt(
        self,
        rds: RDSConnector,
        limits: Timeouts,
        credential: str | None,
        tls: ResumingTLS | None,
    ) -> Any: ...

    def apply_timeouts(self, conn: Any, limits: Timeouts) -> None: ...


class RDSConnector:
    """Opens MySQL (PyMySQL) or PostgreSQL (psycopg) connections with TLS, IAM auth,
    retries and a deadline.

    Options are keyword-only and validated here, at Init, so a misconfiguration never
    reaches a request. Extra keyword ``options`` go to the driver: for MySQL
    ``pymysql.connect`` (``autocommit``, ``charset``, ``init_command``, ...); for
    PostgreSQL the connection's ``autocommit``, ``prepare_threshold``, ``row_factory`` and
    any libpq parameter (``application_name``, ``options``, ``sslmode``, ...).
    """

    __slots__ = (
        "_clock",
        "_engine",
        "_iam",
        "_password",
        "_ssl",
        "database",
        "driver_options",
        "engine",
        "host",
        "margin",
        "pinning_check",
        "port",
        "proxy",
        "resume_tls",
        "retry",
        "ssl_ca",
        "timeouts",
        "tls",
        "user",
        "verify",
    )

    def __init__(
        self,
        host: str,
        *,
        user: str,
        engine: str = "mysql",
        driver: str | None = None,
        port: int | None = None,
        database: str | None = None,
        password: str | None = None,
        iam: bool | IAMTokenProvider = False,
        region: str | None = None,
        tls: bool = True,
        ssl_ca: str | None = None,
        verify: bool | None = None,
        resume_tls: bool = True,
        proxy: bool | None = None,
        pinning_check: bool = False,
        retry: Retry | None = None,
        timeouts: Timeouts | None = None,
        margin: float = DEFAULT_MARGIN,
        clock: Clock = time.monotonic,
        **options: Any,
    ) -> None:
        self._engine = _engine(engine, driver)
        self.engine = self._engine.name
        _check_host(host)
        if not isinstance(user, str) or not user:
            raise ConfigurationError("user", user, "a database user name")
        if port is None:
            port = self._engine.default_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError("port", port, "a TCP port number (1-65535)")
        if database is not None and not isinstance(database, str):
            raise ConfigurationError("database", database, "a database name or None")
        if not isinstance(tls, bool):
            raise ConfigurationError("tls", tls, "True or False")
        if verify is not None and not isinstance(verify, bool):
            raise ConfigurationError("verify", verify, "True, False or None")
        if not isinstance(resume_tls, bool):
            raise ConfigurationError("resume_tls", resume_tls, "True or False")
        for name, value in options.items():
            if name in self._engine.own_options:
                raise ConfigurationError(
                    name,
                    value,
                    f"no value here: use {self._engine.own_options[name]}",
                    secret=name in self._engine.secret_options,
                )
        self.host, self.user, self.port, self.database = host, user, port, database
        self._iam = _iam_provider(iam, region, password)
        if password is not None and not isinstance(password, str):
            raise ConfigurationError("password", password, "a string or None", secret=True)
        self._password = Secret(password) if password is not None else None
        self.tls, self.ssl_ca, self.verify = tls, ssl_ca, verify
        self.resume_tls = resume_tls
        if proxy is not None and not isinstance(proxy, bool):
            raise ConfigurationError("proxy", proxy, "True, False or None (from host)")
        self.proxy = behind_proxy(host) if proxy is None else proxy
        if not isinstance(pinning_check, bool):
            raise ConfigurationError("pinning_check", pinning_check, "True or False")
        self.pinning_check = pinning_check
        if pinning_check:
            from lambda_conn._pinning import enable_pinning_check

            enable_pinning_check()
        self.retry = _typed("retry", retry, Retry, Retry())
        self.timeouts = _typed("timeouts", timeouts, Timeouts, Timeouts())
        self.margin = seconds("margin", margin)
        if not callable(clock):
            raise ConfigurationError("clock", clock, "a callable returning seconds")
        self._clock = clock
        # The engine may translate its own TLS spellings (libpq's sslmode) first.
        self.driver_options = self._engine.configure(self, dict(options))
        tls, ssl_ca, verify = self.tls, self.ssl_ca, self.verify
        if not tls:
            if self._iam is not None:
                raise ConfigurationError(
                    "tls",
                    False,
                    "True with iam: the token is sent in clear text and must only travel over TLS",
                )
            if ssl_ca is not None or verify:
                raise ConfigurationError("tls", False, "True when ssl_ca or verify is given")
        self.verify = (ssl_ca is not None if verify is None else verify) if tls else False
        self._ssl = (
            _ssl_context(ssl_ca, self.verify)
            if tls and (self.engine == "mysql" or ssl_ca is not None)
            else None
        )
        if self._iam is not None and not self.verify:
            log_event(
                logging.WARNING,
                "rds_tls_unverified",
                host=host,
                why="the server's certificate is not verified: pass verify=True (RDS Proxy) "
                "or ssl_ca= (the RDS CA bundle) so the IAM token cannot be read by an impostor",
            )

    # ------------------------------------------------------------------ describing

    @property
    def auth(self) -> str:
        return "iam" if self._iam is not None else "password"

    @property
    def iam(self) -> IAMTokenProvider | None:
        return self._iam

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The shared SSLContext (MySQL; PostgreSQL: the CA bundle checked at Init)."""
        return self._ssl

    def __repr__(self) -> str:
        tls = ("verified" if self.verify else "unverified") if self.tls else "off"
        return (
            f"RDSConnector(engine={self.engine!r}, host={self.host!r}, port={self.port}, "
            f"user={self.user!r}, database={self.database!r}, auth={self.auth!r}, "
            f"tls={tls!r})"
        )

    # ------------------------------------------------------------------ deadlines

    def deadline(
        self, context: Any = None, deadline: Deadline | float | None = None
    ) -> Deadline | None:
        """The deadline for a connect: the context's less ``margin``, ``deadline`` (a
        ``Deadline`` or seconds from now), or the earlier of both; None without either."""
        from_context = (
            Deadline.from_context(context, margin=self.margin, clock=self._clock)
            if context is not None
            else None
        )
        explicit: Deadline | None
        if deadline is None or isinstance(deadline, Deadline):
            explicit = deadline
        else:
            explicit = Deadline.after(deadline, clock=self._clock)
        return earliest(from_context, explicit)

    # ------------------------------------------------------------------ connecting

    def connect(self, context: Any = None, *, deadline: Deadline | float | None = None) -> Any:
        """A new, logged-in connection (``pymysql.connections.Connection``,
        ``psycopg.Connection`` or a psycopg2 connection).

        ``context``: the handler's Lambda context; the connect then ends before the
        invocation's remaining time less ``margin``. ``deadline`` bounds it explicitly (a
        ``Deadline`` or seconds from now); with both, the earlier wins; with neither, only
        ``retry.attempts`` and ``timeouts.connect`` bound it. Read and write timeouts of the
        new connection (MySQL) default to the time left.
        """
        return self.connect_within(self.deadline(context, deadline))

    def connect_within(self, budget: Deadline | None) -> Any:
        """``connect()`` with the deadline already worked out (None: no deadline)."""
        started = self._clock()
        failures = 0
        iam_refreshed = False
        last: BaseException | None = None
        engine = self._engine
        while True:
            if budget is not None and budget.remaining() < MIN_ATTEMPT_TIME:
                raise self._give_up("deadline", failures, started, budget, last) from last
            cached_token = self._iam is not None and self._iam.cached(
                self.host, self.port, self.user
            )
            try:
                conn = self._attempt(budget)
            except Exception as exc:
                scrub_chain(exc, self._secrets())  # before it is logged, kept or raised
                if not engine.is_retryable(exc):
                    if (
                        cached_token
                        and engine.code(exc) == engine.auth_failed
                        and not iam_refreshed
                    ):
                        assert self._iam is not None
                        # A cached token the server refused (clock skew, or signed for a
                        # rotated role): sign a fresh one and try once more at once.
                        iam_refreshed = True
                        self._iam.invalidate(self.host, self.port, self.user)
                        last = exc
                        continue
                    raise
                failures += 1
                last = exc
                if failures >= self.retry.attempts:
                    raise self._give_up("attempts", failures, started, budget, exc) from exc
                delay = self.retry.delay(failures)
                if budget is not None and budget.remaining() - delay < MIN_ATTEMPT_TIME:
                    raise self._give_up("deadline", failures, started, budget, exc) from exc
                log_event(
                    logging.WARNING,
                    "rds_connect_retry",
                    host=self.host,
                    port=self.port,
                    attempt=failures,
                    code=engine.code(exc),
                    error=self._scrub(str(exc)),
                    delay_ms=round(delay * 1000, 1),
                    remaining_ms=_ms(budget),
                )
                self.retry.sleep(delay)
                continue
            if failures:
                log_event(
                    logging.INFO,
                    "rds_connected_after_retries",
                    host=self.host,
                    port=self.port,
                    attempts=failures + 1,
                    elapsed_ms=round((self._clock() - started) * 1000, 1),
                )
            return conn

    def _attempt(self, budget: Deadline | None) -> Any:
        limits = self.timeouts.within(budget)
        tls: ResumingTLS | None = None
        if self._ssl is not None and self.engine == "mysql":
            if self.resume_tls:
                from lambda_conn._rds.resume import resuming

                tls = resuming(self._ssl, self.host, self.port)
            else:
                from lambda_conn._rds.resume import ResumingTLS

                tls = ResumingTLS(self._ssl, self.host, self.port, keep=False)
        conn = self._engine.attempt(self, limits, self._credential(), tls)
        self._engine.apply_timeouts(conn, limits)
        if self.pinning_check:
            from lambda_conn._pinning import watch

            watch(conn)
        return conn

    def _credential(self) -> str | None:
        if self._iam is not None:
            return self._iam.token(self.host, self.port, self.user)
        return self._password.reveal() if self._password is not None else None

    def apply_timeouts(self, conn: Any, budget: Deadline | None) -> None:
        """Set ``conn``'s query timeouts for this invocation (MySQL: read/write timeouts;
        PostgreSQL has none client-side, see ``postgres``)."""
        self._engine.apply_timeouts(conn, self.timeouts.within(budget))

    def _give_up(
        self,
        reason: str,
        failures: int,
        started: float,
        budget: Deadline | None,
        last: BaseException | None,
    ) -> ConnectError:
        elapsed = self._clock() - started
        code = self._engine.code(last) if last is not None else None
        if reason == "deadline":
            why = f"{failures} attempt(s), no time left before the deadline ({_ms(budget)} ms)"
        else:
            why = f"{failures} attempts (retry.attempts={self.retry.attempts})"
        last_text = f"; last error: {self._scrub(repr(last))}" if last is not None else ""
        message = (
            f"connect to {self.host}:{self.port} as {self.user!r} gave up after "
            f"{elapsed:.2f} s: {why}{last_text}"
        )
        log_event(
            logging.WARNING,
            "rds_connect_failed",
            host=self.host,
            port=self.port,
            reason=reason,
            attempts=failures,
            code=code,
            elapsed_ms=round(elapsed * 1000, 1),
        )
        return self._engine.connect_error(
            message,
            code=code,
            attempts=failures,
            elapsed=elapsed,
            reason=reason,
            last_error=last,
        )

    def _secrets(self) -> Iterator[str]:
        if self._password is not None:
            yield self._password.reveal()
        if self._iam is not None:
            for token, _signed_at in list(self._iam._cache.values()):
                yield token

    def _scrub(self, text: str) -> str:
        # Drivers do not put passwords in their messages today; we do not rely on it.
        return redact(text, self._secrets())

    # ------------------------------------------------------------------ reuse

    def reused(
        self,
        *,
        max_age: float | None = 3600.0,
        name: str | None = None,
        release_above: float | None = None,
        sample_every: float = 5.0,
    ) -> ReusedRDSConnection:
        """One connection kept across invocations (behind RDS Proxy, what AWS recommends):
        ``db = rds.reused()`` at module level, ``conn = db(context)`` in the handler.
        ``release_above``/``sample_every``: as for ``reused_connection``."""
        return ReusedRDSConnection(
            self,
            max_age=max_age,
            name=name,
            release_above=release_above,
            sample_every=sample_every,
        )


class ReusedRDSConnection(ReusedConnection[Any]):
    """A ``ReusedConnection`` whose (re)connects and query timeouts follow the invocation.

    ``db(context)`` validates the kept connection once per invocation, as every
    ``ReusedConnection`` does; when it must reconnect, the connect is bounded by this
    invocation's deadline, and the kept connection's read/write timeouts are reset to it.
    """

    def __init__(
        self,
        connector: RDSConnector,
        *,
        max_age: float | None = 3600.0,
        name: str | None = None,
        release_above: float | None = None,
        sample_every: float = 5.0,
    ) -> None:
        if not isinstance(connector, RDSConnector):
            raise ConfigurationError("connector", connector, "an RDSConnector")
        self.connector = connector
        self._budgets = threading.local()  # per thread: each may (re)connect at once
        super().__init__(
            self._open,
            max_age=max_age,
            name=name or f"rds:{connector.host}:{connector.port}",
            release_above=release_above,
            sample_every=sample_every,
            clock=connector._clock,  # one clock for its deadlines, age and samples
        )

    def _open(self) -> Any:
        return self.connector.connect_within(getattr(self._budgets, "budget", None))

    def get(self, context: Any = None, *, deadline: Deadline | float | None = None) -> Any:
        """A live connection for this invocation (see ``RDSConnector.connect``)."""
        budget = self.connector.deadline(context, deadline)
        self._budgets.budget = budget
        try:
            conn = super().get()
        finally:
            self._budgets.budget = None
        self.connector.apply_timeouts(conn, budget)
        return conn

    __call__ = get


def _engine(engine: object, driver: object) -> Engine:
    module = ENGINES.get(engine) if isinstance(engine, str) else None
    if module is None:
        accepted = ", ".join(repr(name) for name in ENGINES)
        raise ConfigurationError("engine", engine, f"one of {accepted}")
    drivers = DRIVERS[module]
    if driver is not None and driver not in drivers:
        accepted = " or ".join(repr(name) for name in drivers)
        raise ConfigurationError("driver", driver, f"None or {accepted} for {engine}")
    if module == "mysql":
        from lambda_conn._rds.mysql import MySQLEngine

        return MySQLEngine()
    from lambda_conn._rds.postgres import PostgresEngine

    return PostgresEngine(driver)


_PROXY_HOST = re.compile(r"\.proxy-[a-z0-9]+\.[a-z0-9-]+\.rds\.amazonaws\.com(\.cn)?$")


def behind_proxy(host: str) -> bool:
    """Whether ``host`` is an RDS Proxy endpoint (``name.proxy-<id>.<region>.rds...``)."""
    return bool(_PROXY_HOST.search(host.lower()))


def _check_host(host: object) -> None:
    if not isinstance(host, str) or not host or not _HOST.match(host):
        raise ConfigurationError(
            "host",
            host,
            "a host name or IP address only (no scheme, user, password, path or DSN: "
            "pass those as user=, password=, database=)",
        )


def _iam_provider(
    iam: bool | IAMTokenProvider, region: str | None, password: str | None
) -> IAMTokenProvider | None:
    if isinstance(iam, IAMTokenProvider):
        if region is not None and region != iam.region:
            raise ConfigurationError("region", region, f"None or {iam.region!r} (the provider's)")
        provider: IAMTokenProvider | None = iam
    elif iam is True:
        provider = IAMTokenProvider(region)
    elif iam is False:
        if region is not None:
            raise ConfigurationError(
                "region", region, "None without iam (it is the token's region)"
            )
        provider = None
    else:
        raise ConfigurationError("iam", iam, "True, False or an IAMTokenProvider")
    if provider is not None and password is not None:
        raise ConfigurationError(
            "password", password, "None with iam (the token is the password)", secret=True
        )
    return provider


def _ssl_context(ca: str | None, verify: bool) -> ssl.SSLContext:
    from lambda_conn._tls import tls_context

    try:
        return tls_context(ca=ca, verify=verify)
    except ConfigurationError as exc:
        if exc.setting != "ca":
            raise
        raise ConfigurationError("ssl_ca", ca, exc.accepted) from None


def _typed(setting: str, value: Any, kind: type[Any], default: Any) -> Any:
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ConfigurationError(setting, value, f"a lambda_conn {kind.__name__} or None")
    return value


def _ms(budget: Deadline | None) -> float | None:
    return None if budget is None else round(budget.remaining() * 1000, 1)
