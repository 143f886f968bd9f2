"""The database server's own view of its connections, sampled while a soak runs.

Why the server's view: what runs a shared database out of connections is the sum over
every execution environment, which no single environment can see. The server counts
them all (MySQL/MariaDB ``Threads_connected``, PostgreSQL's ``pg_stat_activity``).

Use::

    sampler = ServerSampler("mysql://user:pw@host:3306/db")   # or postgresql://...
    sampler.start()          # connects now: SamplerError if the server cannot be reached
    ...                      # run the soak
    series = sampler.stop()  # ServerSeries: samples, max_connections, peak
    series.samples           # ((t, connections), ...), t in seconds since start()
    series.peak, series.max_connections

or ``with ServerSampler(dsn) as sampler: ...`` then ``sampler.series``.

- One connection of the sampler's own, opened by ``start()`` and closed by ``stop()``,
  excluded from every count (it does take one of the server's ``max_connections``).
- Every ``interval_s`` (0.1 s) a thread reads one number: MySQL/MariaDB
  ``Threads_connected`` minus the sampler, PostgreSQL client backends in
  ``pg_stat_activity`` other than the sampler's (background workers are not clients).
  ``max_connections`` is read once, at ``start()``. ``sample_now()`` adds one between
  ticks: a fleet takes it when its callers finish, before teardown closes anything.
- ``started_at`` is the ``time.monotonic()`` of ``start()``: records timed on that clock
  line up with the samples.
- A sample that fails (the server restarted, killed the sampler) is counted in
  ``failed_samples`` and the sampler reconnects on the next tick; samples never raise.
- The DSN is parsed by lambda_conn/local/_dsn.py (the same as ``demo --dsn``); errors show
  it redacted, never its password. The client (PyMySQL or psycopg) is imported lazily.
"""

from __future__ import annotations

import contextlib
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any

from lambda_conn._redact import redact
from lambda_conn.local._dsn import DSN, connect, parse_dsn
from lambda_conn.local._dsn import TIMEOUT_S as _TIMEOUT_S

__all__ = ["SamplerError", "ServerSampler", "ServerSeries"]

_MYSQL_COUNT = "SHOW GLOBAL STATUS LIKE 'Threads_connected'"
_MYSQL_MAX = "SELECT @@GLOBAL.max_connections"
_PG_COUNT = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)
_PG_MAX = "SELECT current_setting('max_connections')::int"


class SamplerError(RuntimeError):
    """The sampler cannot reach or query the server (the DSN in the message is redacted)."""


@dataclass(frozen=True)
class ServerSeries:
    """What the sampler saw: ``(t, connections)`` pairs, the server's maximum, the peak."""

    flavour: str
    server: str  # the DSN as shown: ``mysql://***@host:port/db``
    max_connections: int
    started_at: float
    interval_s: float
    times: array[float]
    counts: array[int]
    failed_samples: int

    @property
    def samples(self) -> tuple[tuple[float, int], ...]:
        return tuple(zip(self.times, self.counts, strict=True))

    @property
    def peak(self) -> int:
        """The most connections seen at once (the sampler's own excluded); 0 if no sample."""
        return max(self.counts, default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the --json file): samples as two parallel lists."""
        return {
            "flavour": self.flavour,
            "server": self.server,
            "max_connections": self.max_connections,
            "peak": self.peak,
            "interval_s": self.interval_s,
            "failed_samples": self.failed_samples,
            "t": [round(t, 4) for t in self.times],
            "connections": list(self.counts),
        }


class ServerSampler:
    """Sample a server's connection count every ``interval_s`` from one connection."""

    def __init__(self, dsn: str, *, interval_s: float = 0.1) -> None:
        if (
            isinstance(interval_s, bool)
            or not isinstance(interval_s, (int, float))
            or not 0.001 <= interval_s <= 60
        ):
            raise ValueError(
                f"interval_s={interval_s!r} is not accepted: expected seconds from 0.001 to 60"
            )
        self._dsn: DSN = parse_dsn(dsn)  # DSNError (a ValueError) on a bad one
        self.interval_s = float(interval_s)
        self.max_connections = 0
        self.started_at = 0.0
        self._times: array[float] = array("d")
        self._counts: array[int] = array("i")
        self._failed = 0
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn_lock = threading.Lock()  # the thread and sample_now() share _conn
        self._series: ServerSeries | None = None

    @property
    def server(self) -> str:
        return self._dsn.shown

    def start(self) -> ServerSampler:
        """Connect, read ``max_connections``, take the first sample and start the thread.

        Raises :class:`SamplerError` when the server cannot be reached or queried, before
        anything else has started (``soak --dsn`` exits 2 on it).
        """
        if self._thread is not None:
            raise SamplerError(f"sampler for {self.server} already started")
        try:
            self._conn = self._connect()
            self.max_connections = int(self._scalar(self._max_sql))
            self.started_at = time.monotonic()
            self._sample()
        except SamplerError:
            self._close()
            raise
        except Exception as exc:
            self._close()
            raise SamplerError(
                f"cannot sample connections on {self.server}: {redact(str(exc))}"
            ) from None
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="lambda-conn-server-sampler", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> ServerSeries:
        """Take a last sample, stop the thread, close the connection; returns the series."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(_TIMEOUT_S + self.interval_s + 1)  # a sample in flight times out
            with contextlib.suppress(Exception):
                self._sample()
            self._close()
            self._series = self._snapshot()
        if self._series is None:
            raise SamplerError(f"sampler for {self.server} was never started")
        return self._series

    def sample_now(self) -> None:
        """One sample now, between ticks: the moment the work ends, before teardown.

        A fleet that finishes within one interval would otherwise show the server empty
        at both ends and a peak of 0. Like the thread's samples, it never raises: a
        failure is counted in ``failed_samples``.
        """
        if self._thread is None:
            return
        self._tick()

    @property
    def series(self) -> ServerSeries:
        """The samples so far (while running) or the final series (after ``stop()``)."""
        return self._series if self._series is not None else self._snapshot()

    def __enter__(self) -> ServerSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    @property
    def _count_sql(self) -> str:
        return _MYSQL_COUNT if self._dsn.flavour == "mysql" else _PG_COUNT

    @property
    def _max_sql(self) -> str:
        return _MYSQL_MAX if self._dsn.flavour == "mysql" else _PG_MAX

    def _connect(self) -> Any:
        from lambda_conn import untracked

        try:
            with untracked():  # the sampler's connection is its own, even inside a scope
                if self._dsn.flavour == "mysql":
                    return connect(self._dsn, autocommit=True)
                # autocommit: pg_stat_activity is a snapshot per transaction.
                return connect(self._dsn, autocommit=True, application_name="lambda-conn-sampler")
        except ImportError as exc:
            client = "PyMySQL" if self._dsn.flavour == "mysql" else "psycopg"
            raise SamplerError(
                f"sampling {self.server} needs {client} ({exc.name} is not installed)"
            ) from None
        except Exception as exc:
            raise SamplerError(f"cannot connect to {self.server}: {redact(str(exc))}") from None

    def _scalar(self, sql: str) -> Any:
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
        finally:
            cursor.close()
        return row[-1]  # SHOW STATUS answers (name, value)

    def _sample(self) -> None:
        value = int(self._scalar(self._count_sql))
        if self._dsn.flavour == "mysql":
            value -= 1  # Threads_connected counts the sampler's own session
        now = time.monotonic() - self.started_at
        with self._lock:
            self._times.append(now)
            self._counts.append(value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def _tick(self) -> None:
        with self._conn_lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._sample()
            except Exception:
                with self._lock:
                    self._failed += 1
                self._close()  # reconnect on the next tick

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _snapshot(self) -> ServerSeries:
        with self._lock:
            return ServerSeries(
                flavour=self._dsn.flavour,
                server=self.server,
                max_connections=self.max_connections,
                started_at=self.started_at,
                interval_s=self.interval_s,
                times=array("d", self._times),
                counts=array("i", self._counts),
                failed_samples=self._failed,
            )
