"""What closing costs per database client: the client's own close against the scope's.

Run: python benchmarks/bench_clients.py [--repeat N]   (starts a private MariaDB and
PostgreSQL; needs their server binaries)

Each sample closes one fresh connection (opened untimed, outside any scope): either with
the client's own close (``close()``; ``await close()`` for asyncpg, ``await
ensure_closed()`` for aiomysql, its only close with COM_QUIT) or by the end of a scope that
tracked it, which is the integration's close plus the check that nothing stayed open.
The two are interleaved in one run; medians and the ratio of scope to manual are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from _common import table


def _manual_close(name: str) -> Any:
    if name == "asyncpg":
        return lambda conn: conn.close()
    if name == "aiomysql":
        return lambda conn: conn.ensure_closed()
    return None


def bench_client_close(repeat: int) -> str:
    from lambda_conn import _tracking
    from lambda_conn._scope import Scope
    from tests.clients import DB_CLIENTS, Driver
    from tests.servers.mariadb import MariaDBServer
    from tests.servers.postgres import PostgresServer

    _tracking.install()  # the clients' close rules, as in a decorated process
    loop = asyncio.new_event_loop()
    rows: list[tuple[str, list[float]]] = []
    summary = []
    with MariaDBServer() as mariadb, PostgresServer() as postgres:
        servers = {"mariadb": mariadb, "postgres": postgres}
        for client in DB_CLIENTS:
            db = Driver(client, servers[client.server], loop)
            by_hand, by_scope = [], []
            manual = _manual_close(client.name)
            for _ in range(repeat):
                conn = db.now(db.connect)
                start = time.perf_counter()
                if client.is_async:
                    loop.run_until_complete(manual(conn) if manual else conn.close())
                else:
                    conn.close()
                by_hand.append((time.perf_counter() - start) * 1e6)

                conn = db.now(db.connect)
                scope = Scope()
                scope.register(conn)
                start = time.perf_counter()
                if client.is_async:
                    loop.run_until_complete(scope.aclose())
                else:
                    scope.close()
                by_scope.append((time.perf_counter() - start) * 1e6)
            rows.append((f"{client}: its own close", by_hand))
            rows.append((f"{client}: closed by the scope", by_scope))
            ratio = statistics.median(by_scope) / statistics.median(by_hand)
            summary.append(f"{client} {ratio:.2f}x")
    loop.close()
    return (
        table("Closing one connection: the client's own close vs the scope's", rows)
        + "\nScope / own close (medians): "
        + ", ".join(summary)
        + ".\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200, help="closes per case")
    args = parser.parse_args()
    import os
    import platform

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores\n")
    print(bench_client_close(args.repeat))


if __name__ == "__main__":
    main()
