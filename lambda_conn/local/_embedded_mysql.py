"""An embedded MySQL-protocol server for ``lambda-conn demo`` (no database to install).

mysql-mimic speaks the wire protocol; every query answers one row. It runs on its own
asyncio loop in a thread of the demo process and counts the client sessions open on its
side, so the demo can show what each handler leaves behind on the server.

With ``max_connections`` it refuses a session beyond that many as MySQL does: error 1040
"Too many connections" (SQLSTATE 08004) in place of the greeting, so a client raises what
it raises against a real server (PyMySQL: ``OperationalError(1040, ...)``). It answers
the two queries :class:`~lambda_conn.local._server_sampler.ServerSampler` sends
(``Threads_connected`` and ``@@GLOBAL.max_connections``), so the fan-out demo samples it
as it samples a real MariaDB.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

#: What MySQL's ``max_connections`` is when nobody set it (reported when unlimited here).
_MYSQL_DEFAULT_MAX = 151


class EmbeddedMySQL:
    """``with EmbeddedMySQL() as server: server.dsn`` -> ``mysql://demo@127.0.0.1:PORT/demo``.

    ``max_connections``: at most that many sessions open at once (None: no limit).
    """

    def __init__(self, *, max_connections: int | None = None) -> None:
        if max_connections is not None and (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 1
        ):
            raise ValueError(
                f"max_connections={max_connections!r} is not accepted: expected an integer "
                ">= 1, or None for no limit"
            )
        self.max_connections = max_connections
        self.port = 0
        self.open_sessions = 0
        self.peak_sessions = 0
        self.accepted = 0
        #: Sessions refused with 1040 because ``max_connections`` were open.
        self.refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._writers: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return f"mysql://demo@127.0.0.1:{self.port}/demo"

    def __enter__(self) -> EmbeddedMySQL:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            import mysql_mimic  # noqa: F401
        except ImportError:
            raise ImportError(
                "The embedded demo database needs mysql-mimic: "
                "pip install 'lambda-conn[local]' (or pass --dsn to use a real MySQL)"
            ) from None
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(started))
            except BaseException as exc:  # surfaced to start()
                failure.append(exc)
                started.set()
                return
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="lambda-conn-demo-mysql", daemon=True)
        self._thread.start()
        if not started.wait(30) or failure:
            raise RuntimeError(f"embedded MySQL server did not start: {failure!r}")

    async def _serve(self, started: threading.Event) -> None:
        from mysql_mimic import MysqlServer, Session
        from mysql_mimic.errors import ErrorCode
        from mysql_mimic.packets import make_error
        from mysql_mimic.stream import MysqlStream

        outer = self

        class OneRowSession(Session):  # type: ignore[misc]
            async def handle_query(self, sql: str, attrs: Any) -> Any:
                # No SQL parsing (sqlglot costs ~3 ms a query): SELECTs answer one row,
                # anything else (PyMySQL's SET AUTOCOMMIT at connect) an OK packet; the
                # sampler's two queries get what a MySQL server answers.
                head = sql.lstrip()[:6].upper()
                if head == "SELECT":
                    if "@@GLOBAL.MAX_CONNECTIONS" in sql.upper():
                        return [(outer.max_connections or _MYSQL_DEFAULT_MAX,)], ["max"]
                    return [(1,)], ["1"]
                if head == "SHOW G" and "THREADS_CONNECTED" in sql.upper():
                    return [("Threads_connected", str(outer.open_sessions))], [
                        "Variable_name",
                        "Value",
                    ]
                return [], []

        server = MysqlServer(session_factory=OneRowSession)
        original = server._client_connected_cb

        writers: set[Any] = set()

        async def counting(reader: Any, writer: Any) -> None:
            with outer._lock:
                full = (
                    outer.max_connections is not None
                    and outer.open_sessions >= outer.max_connections
                )
                if full:
                    outer.refused += 1
                else:
                    outer.open_sessions += 1
                    outer.accepted += 1
                    outer.peak_sessions = max(outer.peak_sessions, outer.open_sessions)
            if full:
                # What MySQL sends instead of the greeting when every slot is taken.
                error = make_error(msg="Too many connections", code=ErrorCode.CON_COUNT_ERROR)
                try:
                    await MysqlStream(reader, writer).write(error)
                    await writer.drain()
                except OSError:  # the client gave up first
                    pass
                finally:
                    writer.close()
                return
            writers.add(writer)
            try:
                await original(reader, writer)
            finally:
                writers.discard(writer)
                with outer._lock:
                    outer.open_sessions -= 1

        server._client_connected_cb = counting
        await server.start_server(host="127.0.0.1", port=0, backlog=4096)
        self._server = server
        self._writers = writers
        self.port = server._server.sockets[0].getsockname()[1]
        started.set()

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            # Sessions a leaky handler left open end with an EOF, not a cancellation,
            # so mysql-mimic's own callbacks finish quietly.
            loop.set_exception_handler(lambda loop, context: None)
            server.close()
            for writer in list(self._writers):
                writer.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            if tasks:
                await asyncio.wait(tasks, timeout=2)
            for task in tasks:
                task.cancel()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None
