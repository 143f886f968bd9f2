"""One DSN parser for the local tools (``demo --dsn``, the server sampler, the fan-out demo).

``mysql://user:password@host:port/db[?ssl_ca=FILE]`` connects with PyMySQL,
``postgresql://user:password@host:port/db[?sslmode=...]`` (or ``postgres://``) with
psycopg; each client is imported only when its scheme is used. Anything shown back goes
through :mod:`lambda_conn._redact`: the password never appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from lambda_conn._redact import redact

__all__ = ["DSN", "DSNError", "connect", "parse_dsn"]

Flavour = Literal["mysql", "postgresql"]
_SCHEMES: dict[str, Flavour] = {
    "mysql": "mysql",
    "postgresql": "postgresql",
    "postgres": "postgresql",
}
_DEFAULT_PORTS: dict[Flavour, int] = {"mysql": 3306, "postgresql": 5432}
#: Seconds for connect and (MySQL) each read/write: a sampler or a demo must not hang.
TIMEOUT_S = 5


class DSNError(ValueError):
    """A DSN that is not ``mysql://`` or ``postgresql://`` (the message is redacted)."""


@dataclass(frozen=True)
class DSN:
    """The parts of a DSN; ``password`` is kept out of the repr."""

    flavour: Flavour
    host: str
    port: int
    user: str
    database: str | None
    query: dict[str, str]
    password: str = field(repr=False, default="")

    @property
    def shown(self) -> str:
        """The DSN as it may appear in a message: ``mysql://***@host:port/db``."""
        return f"{self.flavour}://***@{self.host}:{self.port}/{self.database or ''}"


def parse_dsn(dsn: str) -> DSN:
    """``mysql://...`` or ``postgresql://...`` -> :class:`DSN`; :class:`DSNError` otherwise."""
    if not isinstance(dsn, str):
        raise DSNError(
            f"DSN {type(dsn).__qualname__} is not accepted: expected a mysql:// or "
            "postgresql:// URL"
        )
    url = urlsplit(dsn)
    flavour = _SCHEMES.get(url.scheme.lower())
    if flavour is None:
        raise DSNError(
            f"DSN {redact(dsn)!r} is not accepted: expected mysql://user:password@host:port/db "
            "or postgresql://user:password@host:port/db"
        )
    try:
        port = url.port or _DEFAULT_PORTS[flavour]
    except ValueError:
        raise DSNError(
            f"DSN {redact(dsn)!r} is not accepted: the port is not a number from 1 to 65535"
        ) from None
    return DSN(
        flavour=flavour,
        host=url.hostname or "127.0.0.1",
        port=port,
        user=unquote(url.username or ""),
        password=unquote(url.password or ""),
        database=unquote(url.path.lstrip("/")) or None,
        query={key: values[-1] for key, values in parse_qs(url.query).items()},
    )


def connect(dsn: str | DSN, **options: Any) -> Any:
    """A new client connection (PyMySQL or psycopg, autocommit off as the client defaults)."""
    parsed = dsn if isinstance(dsn, DSN) else parse_dsn(dsn)
    if parsed.flavour == "mysql":
        return _connect_mysql(parsed, **options)
    return _connect_postgresql(parsed, **options)


def _connect_mysql(dsn: DSN, **options: Any) -> Any:
    import pymysql

    tls: dict[str, Any] = (
        {"ssl_ca": dsn.query["ssl_ca"], "ssl_verify_cert": True}
        if "ssl_ca" in dsn.query
        else {"ssl_disabled": True}
    )
    return pymysql.connect(
        host=dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        database=dsn.database,
        connect_timeout=TIMEOUT_S,
        read_timeout=TIMEOUT_S,
        write_timeout=TIMEOUT_S,
        **tls,
        **options,
    )


def _connect_postgresql(dsn: DSN, **options: Any) -> Any:
    import psycopg

    return psycopg.connect(
        host=dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        dbname=dsn.database or dsn.user,
        connect_timeout=TIMEOUT_S,
        **{**dsn.query, **options},
    )
