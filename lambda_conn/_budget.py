"""The connection budget: what a whole fleet of this function can hold on the database.

Lambda runs one execution environment per concurrent request, up to the reserved
concurrency, and each holds its own connections (a reused one stays open while the
environment is frozen). environments x connections each is the number of sessions the
function can hold at once; above the database's ``max_connections`` the next connect fails
(MySQL 1040, PostgreSQL 53300). Logged once at Init (``connection_budget``), when
``AWS_LAMBDA_FUNCTION_NAME`` and a reserved concurrency are known; nothing is read per
invocation.

In multi-concurrent mode (Lambda Managed Instances, ``AWS_LAMBDA_MAX_CONCURRENCY=M``) an
environment serves M requests at once from M worker processes, each with its own module
state and so its own connections: R concurrent requests need at least ceil(R / M)
environments, and every worker of each holds its connections, busy or not.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RESERVED = "LAMBDA_CONN_RESERVED_CONCURRENCY"
MAXIMUM = "LAMBDA_CONN_MAX_CONNECTIONS"
EACH = "LAMBDA_CONN_CONNECTIONS_PER_ENVIRONMENT"

_logged = False  # the automatic Init log, once per process
#: The reused connections that log counted as connections each (None: it did not count
#: them, or there was no log): one declared later logs the budget again.
_logged_each: int | None = None


def reused_connections_declared() -> int:
    """How many ``reused_connection``s this process has (each holds one per environment)."""
    import sys

    reuse = sys.modules.get("lambda_conn._reuse")  # never imported here: none declared
    if reuse is None:
        return 0
    return sum(1 for ref in reuse._registry if ref() is not None)


def workers_per_environment(environ: Mapping[str, str]) -> int:
    """``AWS_LAMBDA_MAX_CONCURRENCY`` (Lambda's own: set in multi-concurrent mode), else 1.

    ``connections_per_environment`` then counts one worker's connections, as each worker
    sees its own reused connections. A value Lambda would not set counts as 1 and is not
    the user's to fix, so it is not an error."""
    text = (environ.get("AWS_LAMBDA_MAX_CONCURRENCY") or "").strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 1 else 1


def _setting(environ: Mapping[str, str], name: str, keyword: str, value: int | None) -> int | None:
    from lambda_conn._settings import BY_NAME, env_value, parse_whole_number

    if value is not None:
        return parse_whole_number(keyword, value)
    text = env_value(environ, name)
    return None if text is None else parse_whole_number(BY_NAME[name].name, text)


def connection_budget(
    *,
    reserved_concurrency: int | None = None,
    max_connections: int | None = None,
    connections_per_environment: int | None = None,
) -> dict[str, Any] | None:
    """The budget (``environments x connections each`` against ``max_connections``) as a
    dict, logged as ``connection_budget`` (WARNING when over); None without a reserved
    concurrency. Keywords win over the ``LAMBDA_CONN_*`` variables; a bad value of either
    raises ``ConfigurationError``."""
    budget = compute(
        reserved_concurrency=reserved_concurrency,
        max_connections=max_connections,
        connections_per_environment=connections_per_environment,
    )
    if budget is not None:
        log_budget(budget)
    return budget


def compute(
    *,
    reserved_concurrency: int | None = None,
    max_connections: int | None = None,
    connections_per_environment: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """The budget without logging it (see :func:`connection_budget`)."""
    if environ is None:
        import os

        environ = os.environ
    reserved = _setting(environ, RESERVED, "reserved_concurrency", reserved_concurrency)
    maximum = _setting(environ, MAXIMUM, "max_connections", max_connections)
    each = _setting(environ, EACH, "connections_per_environment", connections_per_environment)
    function = environ.get("AWS_LAMBDA_FUNCTION_NAME") or None
    if reserved is None:
        return None
    counted_from = "setting"
    if each is None:
        each, counted_from = max(1, reused_connections_declared()), "reused_connections"
    workers = workers_per_environment(environ)
    environments = -(-reserved // workers)
    budget = environments * workers * each
    return {
        "function": function,
        "reserved_concurrency": reserved,
        "environments": environments,
        "workers_per_environment": workers,
        "connections_per_environment": each,
        "counted_from": counted_from,
        "budget": budget,
        "max_connections": maximum,
        "share": None if maximum is None else round(budget / maximum, 3),
        "within": None if maximum is None else budget <= maximum,
    }


def log_budget(budget: Mapping[str, Any]) -> None:
    from lambda_conn._log import INFO, WARNING, log_event

    if budget["within"] is False:
        log_event(
            WARNING,
            "connection_budget",
            **budget,
            why="at full concurrency the function can hold more sessions than the database "
            "allows: lower the reserved concurrency, hold fewer connections per environment "
            "(release_above=, close per invocation) or put RDS Proxy in front",
        )
    else:
        log_event(INFO, "connection_budget", **budget)


def log_at_init() -> None:
    """At decoration (Init): validate the budget settings; in Lambda, log the budget once
    (again if a reused connection is declared afterwards: ``reused_connection_declared``)."""
    global _logged
    import os

    from lambda_conn._settings import env_value

    if all(env_value(os.environ, name) is None for name in (RESERVED, MAXIMUM, EACH)):
        return  # not configured: nothing more is read
    budget = compute()
    if budget is None or budget["function"] is None or _logged:
        return
    _logged = True
    _remember_count(budget)
    log_budget(budget)


def reused_connection_declared() -> None:
    """A ``reused_connection`` declared after the Init log that counted them (a module
    that decorates its handler before it declares its connections): log the budget again
    with it, ``recounted`` true, rather than leave a count that is too low standing."""
    if _logged_each is None:
        return
    budget = compute()
    if budget is None or budget["counted_from"] != "reused_connections":
        return
    if budget["connections_per_environment"] <= _logged_each:
        return
    _remember_count(budget)
    log_budget({**budget, "recounted": True})


def reset() -> None:
    """Forget the Init log (a test process decorates many handlers)."""
    global _logged, _logged_each
    _logged, _logged_each = False, None


def _remember_count(budget: Mapping[str, Any]) -> None:
    global _logged_each
    counted = budget["counted_from"] == "reused_connections"
    _logged_each = budget["connections_per_environment"] if counted else None
