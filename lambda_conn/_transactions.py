"""Is a transaction open on this connection? Read from the client's own state, no round trip.

A reused connection outlives the invocation that used it: a transaction it left open
would be committed by the next invocation's ``commit()``. Every client tracks the
transaction state the server reports with each reply, so the check is an attribute read.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# MySQL protocol: SERVER_STATUS_IN_TRANS, sent in every OK/EOF packet (PyMySQL keeps it in
# ``server_status``).
_MYSQL_IN_TRANS = 1
# libpq PQtransactionStatus (psycopg 2 and 3 ``info.transaction_status``).
_PG_IDLE, _PG_ACTIVE, _PG_UNKNOWN = 0, 1, 4

OPEN = "open"  # a transaction is open: roll it back
BROKEN = "broken"  # the client cannot take a rollback (a query in flight, a lost link)


def transaction_state(conn: Any) -> str | None:
    """``OPEN``, ``BROKEN``, or None: no transaction open, closed, or a client we cannot read."""
    server_status = getattr(conn, "server_status", None)
    if isinstance(server_status, int):  # PyMySQL
        if getattr(conn, "_sock", None) is None:
            return None  # closed: the next use reconnects
        return OPEN if server_status & _MYSQL_IN_TRANS else None
    status = getattr(getattr(conn, "info", None), "transaction_status", None)
    if status is not None:  # psycopg 3 and psycopg2
        if conn.closed:
            return None
        code = int(status)
        if code == _PG_IDLE:
            return None
        return BROKEN if code in (_PG_ACTIVE, _PG_UNKNOWN) else OPEN
    in_transaction = getattr(conn, "in_transaction", None)  # SQLAlchemy Connection, sqlite3
    if callable(in_transaction):
        in_transaction = in_transaction()
    if isinstance(in_transaction, bool):
        return OPEN if in_transaction else None
    return None
