"""An embedded MySQL-protocol server for ``lambda-conn demo`` (no database to install).

mysql-mimic speaks the wire protocol; every query answers one row. It runs on its own
asyncio loop in a thread of the demo process and counts the client sessions open on its
side, so the demo can show what each handler leaves behind on the server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class EmbeddedMySQL:
    """``with EmbeddedMySQL() as server: server.dsn`` -> ``mysql://demo@127.0.0.1:PORT/demo``."""

    def __init__(self) -> None:
        self.port = 0
        self.open_sessions = 0
        self.accepted = 0
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

        class OneRowSession(Session):  # type: ignore[misc]
            async def handle_query(self, sql: str, attrs: Any) -> Any:
                # No SQL parsing (sqlglot costs ~3 ms a query): SELECTs answer one row,
                # anything else (PyMySQL's SET AUTOCOMMIT at connect) an OK packet.
                if sql.lstrip()[:6].upper() == "SELECT":
                    return [(1,)], ["1"]
                return [], []

        server = MysqlServer(session_factory=OneRowSession)
        outer = self
        original = server._client_connected_cb

        writers: set[Any] = set()

        async def counting(reader: Any, writer: Any) -> None:
            with outer._lock:
                outer.open_sessions += 1
                outer.accepted += 1
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
