"""A lambda_conn plugin: tracks ``toyclient`` connections (see docs/plugins.md).

lambda_conn imports this module only once ``toyclient`` itself is imported (the entry
point's name says which module), so it may import ``toyclient`` at the top; it must not
import anything costly besides.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from lambda_conn import Integration, Kind, socket_idle_and_open


def _close(conn: Any) -> None:
    conn.close()  # idempotent, as a Kind's close must be


def _is_open(conn: Any) -> bool:
    return conn.sock is not None


def _remote(conn: Any) -> list[str]:
    return [f"{conn.host}:{conn.port}"]


def _alive(conn: Any) -> bool:
    # No round trip: an idle socket that is readable means the server hung up.
    return conn.sock is not None and socket_idle_and_open(conn.sock)


CONNECTION = Kind(
    "toyclient.Connection",
    "toyclient",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def _patch(toyclient: ModuleType) -> None:
    INTEGRATION.track(toyclient.Connection, CONNECTION)


INTEGRATION = Integration("toyclient", hooks={"toyclient": _patch})
