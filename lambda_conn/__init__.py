"""lambda_conn: connection-safe AWS Lambda handlers.

``import lambda_conn`` stays light (it is cold-start time for every user): it imports no
client, no asyncio, no wrapt. Names other than the decorator load on first use.
"""

# No `from __future__ import annotations` here: it would export `annotations`, and the
# annotations below need no typing at run time anyway.
from lambda_conn._errors import (
    ClosedByScopeError,
    ConfigurationError,
    LambdaConnError,
    LeakError,
)
from lambda_conn._managed import ManagedConnection, managed_connection
from lambda_conn._scope import Scope, current_scope, register, untracked
from lambda_conn._stats import stats
from lambda_conn._version import __version__

TYPE_CHECKING = False  # not typing's: `typing` is not imported at run time
if TYPE_CHECKING:
    from lambda_conn._budget import connection_budget
    from lambda_conn._guard.decorator import health_guard
    from lambda_conn._guard.factory import enable_graceful_shutdown
    from lambda_conn._kinds import Kind, reconnects
    from lambda_conn._liveness import connection_alive, socket_idle_and_open
    from lambda_conn._pinning import enable_pinning_check
    from lambda_conn._rds.connector import ConnectError, RDSConnector, ReusedRDSConnection
    from lambda_conn._rds.deadline import Deadline, Timeouts
    from lambda_conn._rds.iam import IAMTokenProvider
    from lambda_conn._rds.retry import Retry
    from lambda_conn._registry import CLIENTS, Integration, Statements, register_client
    from lambda_conn._reuse import ReusedConnection, close_reused_connections, reused_connection
    from lambda_conn._tls import connect_mysql, tls_context
    from lambda_conn.middleware import (
        ManagedConnectionASGIMiddleware,
        ManagedConnectionWSGIMiddleware,
    )
del TYPE_CHECKING

__all__ = [
    "CLIENTS",
    "ClosedByScopeError",
    "ConfigurationError",
    "ConnectError",
    "Deadline",
    "IAMTokenProvider",
    "Integration",
    "Kind",
    "LambdaConnError",
    "LeakError",
    "ManagedConnection",
    "ManagedConnectionASGIMiddleware",
    "ManagedConnectionWSGIMiddleware",
    "RDSConnector",
    "Retry",
    "ReusedConnection",
    "ReusedRDSConnection",
    "Scope",
    "Statements",
    "Timeouts",
    "__version__",
    "close_reused_connections",
    "connect_mysql",
    "connection_alive",
    "connection_budget",
    "current_scope",
    "enable_graceful_shutdown",
    "enable_pinning_check",
    "health_guard",
    "managed_connection",
    "reconnects",
    "register",
    "register_client",
    "reused_connection",
    "socket_idle_and_open",
    "stats",
    "tls_context",
    "untracked",
]

_LAZY = {
    "RDSConnector": "lambda_conn._rds.connector",
    "ReusedRDSConnection": "lambda_conn._rds.connector",
    "ConnectError": "lambda_conn._rds.connector",
    "IAMTokenProvider": "lambda_conn._rds.iam",
    "Retry": "lambda_conn._rds.retry",
    "Timeouts": "lambda_conn._rds.deadline",
    "Deadline": "lambda_conn._rds.deadline",
    "ManagedConnectionASGIMiddleware": "lambda_conn.middleware",
    "ManagedConnectionWSGIMiddleware": "lambda_conn.middleware",
    "health_guard": "lambda_conn._guard.decorator",
    "enable_graceful_shutdown": "lambda_conn._guard.factory",
    "ReusedConnection": "lambda_conn._reuse",
    "close_reused_connections": "lambda_conn._reuse",
    "reused_connection": "lambda_conn._reuse",
    "connect_mysql": "lambda_conn._tls",
    "tls_context": "lambda_conn._tls",
    "connection_alive": "lambda_conn._liveness",
    "connection_budget": "lambda_conn._budget",
    "enable_pinning_check": "lambda_conn._pinning",
    "socket_idle_and_open": "lambda_conn._liveness",
    "Integration": "lambda_conn._registry",
    "Statements": "lambda_conn._registry",
    "register_client": "lambda_conn._registry",
    "Kind": "lambda_conn._kinds",
    "reconnects": "lambda_conn._kinds",
}
_UNCACHED = {"CLIENTS": "lambda_conn._registry"}  # plugins may register later


def __getattr__(name: str) -> object:
    module = _LAZY.get(name) or _UNCACHED.get(name)
    if module is None:
        raise AttributeError(f"module 'lambda_conn' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    if name in _LAZY:
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
