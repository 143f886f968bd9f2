"""``RDSConnector``: PyMySQL connections that are safe to open inside a Lambda invocation.

One validated value object holds everything a connect needs (endpoint, auth, TLS, retry,
timeouts) and produces connections on demand:

    rds = RDSConnector("proxy.example", user="app", database="app", iam=True, verify=True)
    conn = rds.connect(context)      # per invocation (closed by @managed_connection)
    db = rds.reused()                # or one connection kept across invocations
    conn = db(context)

Every connect is bounded by the invocation's remaining time less a margin: attempts,
backoff sleeps and socket timeouts all fit inside it, so a hung server or a burst of 1040s
ends in an error the handler can report instead of a Lambda timeout.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pymysql

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
from lambda_conn._rds.retry import Retry, error_code, is_retryable
from lambda_conn._rds.secret import MASK, Secret, redact
from lambda_conn._rds.watchdog import WATCHDOG
from lambda_conn._reuse import ReusedConnection

if TYPE_CHECKING:
    import ssl

#: Below this much time left there is no point starting (or sleeping before) an attempt:
#: a TLS login to RDS Proxy takes longer.
MIN_ATTEMPT_TIME = 0.05

# PyMySQL arguments the connector sets itself: passing them through would bypass TLS,
# auth or the deadline.
_OWN_OPTIONS = {
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
_SECRET_OPTIONS = {"password", "passwd", "ssl", "ssl_key", "ssl_key_password"}


class ConnectError(LambdaConnError, pymysql.err.OperationalError):  # type: ignore[misc]
    """Every attempt failed with a retryable error, or the deadline left no time for another.

    A ``pymysql.err.OperationalError`` too, so existing ``except`` clauses keep working:
    ``args`` is ``(code, message)`` with the last attempt's MySQL error number (1040,
    2003, ...). ``__cause__`` is that last error. Errors no retry can fix (1045, a
    certificate that does not verify) are raised unchanged instead.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        attempts: int,
        elapsed: float,
        reason: str,
        last_error: BaseException | None,
    ) -> None:
        super().__init__(code, message)
        self.attempts = attempts
        self.elapsed = elapsed
        self.reason = reason  # "attempts" or "deadline"
        self.last_error = last_error


class RDSConnector:
    """Opens PyMySQL connections with TLS, IAM auth, retries and a deadline.

    Options are keyword-only and validated here, at Init, so a misconfiguration never
    reaches a request. Extra keyword ``options`` (``autocommit``, ``charset``,
    ``cursorclass``, ``init_command``, ...) go to ``pymysql.connect``.
    """

    __slots__ = (
        "_clock",
        "_iam",
        "_options",
        "_password",
        "_ssl",
        "database",
        "host",
        "margin",
        "port",
        "retry",
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
        port: int = 3306,
        database: str | None = None,
        password: str | None = None,
        iam: bool | IAMTokenProvider = False,
        region: str | None = None,
        tls: bool = True,
        ssl_ca: str | None = None,
        verify: bool | None = None,
        retry: Retry | None = None,
        timeouts: Timeouts | None = None,
        margin: float = DEFAULT_MARGIN,
        clock: Clock = time.monotonic,
        **options: Any,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigurationError("host", host, "a host name or address")
        if not isinstance(user, str) or not user:
            raise ConfigurationError("user", user, "a database user name")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError("port", port, "a TCP port number (1-65535)")
        if database is not None and not isinstance(database, str):
            raise ConfigurationError("database", database, "a database name or None")
        if not isinstance(tls, bool):
            raise ConfigurationError("tls", tls, "True or False")
        if verify is not None and not isinstance(verify, bool):
            raise ConfigurationError("verify", verify, "True, False or None")
        for name, value in options.items():
            if name in _OWN_OPTIONS:
                shown = MASK if name in _SECRET_OPTIONS else value
                raise ConfigurationError(name, shown, f"no value here: use {_OWN_OPTIONS[name]}")
        self.host, self.user, self.port, self.database = host, user, port, database
        self._iam = _iam_provider(iam, region, password)
        if password is not None and not isinstance(password, str):
            raise ConfigurationError("password", type(password).__name__, "a string or None")
        self._password = Secret(password) if password is not None else None
        if not tls:
            if self._iam is not None:
                raise ConfigurationError(
                    "tls",
                    False,
                    "True with iam: the token is sent in clear text (mysql_clear_password) "
                    "and must only travel over TLS",
                )
            if ssl_ca is not None or verify:
                raise ConfigurationError("tls", False, "True when ssl_ca or verify is given")
        self.tls = tls
        self.verify = (ssl_ca is not None if verify is None else verify) if tls else False
        self._ssl = _ssl_context(ssl_ca, self.verify) if tls else None
        self.retry = _typed("retry", retry, Retry, Retry())
        self.timeouts = _typed("timeouts", timeouts, Timeouts, Timeouts())
        self.margin = seconds("margin", margin)
        if not callable(clock):
            raise ConfigurationError("clock", clock, "a callable returning seconds")
        self._clock = clock
        self._options = options
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

    def __repr__(self) -> str:
        tls = ("verified" if self.verify else "unverified") if self.tls else "off"
        return (
            f"RDSConnector(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"database={self.database!r}, auth={self.auth!r}, tls={tls!r})"
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
        """A new, logged-in ``pymysql.connections.Connection``.

        ``context``: the handler's Lambda context; the connect then ends before the
        invocation's remaining time less ``margin``. ``deadline`` bounds it explicitly (a
        ``Deadline`` or seconds from now); with both, the earlier wins; with neither, only
        ``retry.attempts`` and ``timeouts.connect`` bound it. Read and write timeouts of the
        new connection default to the time left.
        """
        return self.connect_within(self.deadline(context, deadline))

    def connect_within(self, budget: Deadline | None) -> Any:
        """``connect()`` with the deadline already worked out (None: no deadline)."""
        started = self._clock()
        failures = 0
        iam_refreshed = False
        last: BaseException | None = None
        while True:
            if budget is not None and budget.remaining() < MIN_ATTEMPT_TIME:
                raise self._give_up("deadline", failures, started, budget, last) from last
            cached_token = self._iam is not None and self._iam.cached(
                self.host, self.port, self.user
            )
            try:
                conn = self._attempt(budget)
            except Exception as exc:
                if not is_retryable(exc):
                    if cached_token and error_code(exc) == 1045 and not iam_refreshed:
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
                    code=error_code(exc),
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
        conn = pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self._credential(),
            database=self.database,
            ssl=self._ssl,
            ssl_disabled=not self.tls,
            connect_timeout=limits.connect,
            # The whole login (greeting, TLS handshake, auth) under the connect timeout:
            # PyMySQL reads it with the read timeout, writes with the write timeout.
            read_timeout=limits.connect,
            write_timeout=limits.connect,
            defer_connect=True,
            **self._options,
        )
        # Per-operation timeouts alone let a server that answers each step just in time
        # hold the login for several of them: the watchdog cuts it off as a whole. It
        # shuts down a duplicate of the socket, which stays valid while PyMySQL's TLS wrap
        # detaches the original and runs the handshake.
        ends = time.monotonic() + limits.connect  # the TCP connect counts too
        sock = self._open_socket(conn, limits.connect)
        try:
            watch = sock.dup()
        except OSError as exc:  # EMFILE, say: nothing may leak
            sock.close()
            raise _cannot_connect(self.host, exc) from exc
        left = max(ends - time.monotonic(), 0.0)
        handle = WATCHDOG.arm(left, functools.partial(_cut_off, watch))
        try:
            try:
                conn.connect(sock)
            finally:
                in_time = WATCHDOG.disarm(handle)
        except Exception as exc:
            if not in_time:
                raise _login_cut_off(self.host, self.port, limits.connect) from exc
            raise
        finally:
            watch.close()
        if not in_time:  # cut off as it finished: the socket is gone
            conn._force_close()
            raise _login_cut_off(self.host, self.port, limits.connect)
        self.apply_timeouts(conn, budget)
        return conn

    def _open_socket(self, conn: Any, timeout: float) -> socket.socket:
        """The TCP connect PyMySQL would make, with its options and its error."""
        bind = self._options.get("bind_address")
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout, source_address=(bind, 0) if bind else None
            )
        except OSError as exc:
            raise _cannot_connect(self.host, exc) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.host_info = f"socket {self.host}:{self.port}"
        return sock

    def _credential(self) -> str | None:
        if self._iam is not None:
            return self._iam.token(self.host, self.port, self.user)
        return self._password.reveal() if self._password is not None else None

    def apply_timeouts(self, conn: Any, budget: Deadline | None) -> None:
        """Set ``conn``'s read/write timeouts for queries in this invocation.

        PyMySQL applies ``_read_timeout``/``_write_timeout`` on the next socket operation
        (it compares them with the socket's current timeout on every packet), so a kept
        connection gets each invocation's own deadline.
        """
        limits = self.timeouts.within(budget)
        conn._read_timeout = limits.read
        conn._write_timeout = limits.write

    def _give_up(
        self,
        reason: str,
        failures: int,
        started: float,
        budget: Deadline | None,
        last: BaseException | None,
    ) -> ConnectError:
        elapsed = self._clock() - started
        code = error_code(last) if last is not None else None
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
        return ConnectError(
            message,
            code=code if code is not None else 2003,
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
        self, *, max_age: float | None = 3600.0, name: str | None = None
    ) -> ReusedRDSConnection:
        """One connection kept across invocations (behind RDS Proxy, what AWS recommends):
        ``db = rds.reused()`` at module level, ``conn = db(context)`` in the handler."""
        return ReusedRDSConnection(self, max_age=max_age, name=name)


class ReusedRDSConnection(ReusedConnection[Any]):
    """A ``ReusedConnection`` whose (re)connects and query timeouts follow the invocation.

    ``db(context)`` validates the kept connection once per invocation, as every
    ``ReusedConnection`` does; when it must reconnect, the connect is bounded by this
    invocation's deadline, and the kept connection's read/write timeouts are reset to it.
    """

    def __init__(
        self, connector: RDSConnector, *, max_age: float | None = 3600.0, name: str | None = None
    ) -> None:
        if not isinstance(connector, RDSConnector):
            raise ConfigurationError("connector", type(connector).__name__, "an RDSConnector")
        self.connector = connector
        self._budgets = threading.local()  # per thread: each may (re)connect at once
        super().__init__(
            self._open, max_age=max_age, name=name or f"rds:{connector.host}:{connector.port}"
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


def _cut_off(watch: socket.socket) -> None:
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
        raise ConfigurationError("password", MASK, "None with iam (the token is the password)")
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
