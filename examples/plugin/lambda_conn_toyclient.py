"""A lambda_conn plugin: tracks ``toyclient`` connections (see docs/plugins.md).

lambda_conn imports this module only once ``toyclient`` itself is imported (the entry
point's name says which module), so it may import ``toyclient`` at the top; it must not
import anything costly besides. docs/plugins.md shows the code below it verbatim
(tests/test_registry.py checks that it does).
"""

from __future__ import annotations

from types import ModuleType

from lambda_conn import Integration, Kind, socket_idle_and_open

CONNECTION = Kind(
    "toyclient.Connection",  # how leak reports and close_failed name it
    "toyclient",  # the client it belongs to
    close=lambda conn: conn.close(),  # must be idempotent; never raises for a closed one
    is_open=lambda conn: conn.sock is not None,  # asked after close: a leak if True
    remote=lambda conn: [f"{conn.host}:{conn.port}"],  # host:port for the leak report
    # probe of a reused one, no round trip: an idle socket that is readable = server hung up
    alive=lambda conn: conn.sock is not None and socket_idle_and_open(conn.sock),
)


def _patch(toyclient: ModuleType) -> None:  # runs once `toyclient` is imported
    INTEGRATION.track(toyclient.Connection, CONNECTION)


INTEGRATION = Integration("toyclient", hooks={"toyclient": _patch})
