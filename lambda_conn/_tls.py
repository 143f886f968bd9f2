"""One process-wide SSLContext per set of TLS options.

PyMySQL 1.2 builds a fresh ``ssl.create_default_context()`` on every connect (it loads the
system CA store: ~30 ms of CPU). An SSLContext is meant to be shared, so a per-invocation
connection can reuse one and pay only the handshake.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from lambda_conn._errors import ConfigurationError

if TYPE_CHECKING:
    import ssl

_contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
_lock = threading.Lock()


def tls_context(
    *,
    ca: str | None = None,
    verify: bool | None = None,
    check_hostname: bool | None = None,
    cert: str | None = None,
    key: str | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """A cached client SSLContext (TLS 1.2+).

    ``verify`` defaults to True when a CA bundle is given (for RDS: the RDS CA bundle) and
    to False without one; ``check_hostname`` follows ``verify``. This is stricter than
    PyMySQL 1.2, which with ``ssl_ca`` alone verifies nothing: a CA you name is a CA you
    mean to check against. Pass ``verify=False`` for PyMySQL's behaviour.
    """
    if verify is None:
        verify = ca is not None
    if check_hostname is None:
        check_hostname = verify
    for setting, value in (("verify", verify), ("check_hostname", check_hostname)):
        if not isinstance(value, bool):
            raise ConfigurationError(setting, value, "True, False or None")
    if check_hostname and not verify:
        raise ConfigurationError("check_hostname", True, "False when verify=False")
    key_ = (ca, verify, check_hostname, cert, key, key_password)
    context = _contexts.get(key_)
    if context is None:
        with _lock:
            context = _contexts.get(key_)
            if context is None:
                context = _build(ca, verify, check_hostname, cert, key, key_password)
                _contexts[key_] = context
    return context


def _build(
    ca: str | None,
    verify: bool,
    check_hostname: bool,
    cert: str | None,
    key: str | None,
    key_password: str | None,
) -> ssl.SSLContext:
    import ssl

    if verify:
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                "ca", ca, f"a readable PEM CA bundle ({_without(exc, ca)})"
            ) from None
    else:
        # No verification: skip loading the system CA store, the expensive part.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.check_hostname = check_hostname
    if verify:
        context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(cert, keyfile=key, password=key_password or "")
        except (OSError, ssl.SSLError) as exc:
            # The paths only: never the key password.
            raise ConfigurationError(
                "cert", cert, f"a readable PEM client certificate and key ({_without(exc, cert)})"
            ) from None
    return context


_TLS_OPTIONS = (
    "ssl_ca",
    "ssl_verify_cert",
    "ssl_verify_identity",
    "ssl_cert",
    "ssl_key",
    "ssl_key_password",
)


def connect_mysql(**kwargs: Any) -> Any:
    """``pymysql.connect(**kwargs)`` with a shared SSLContext instead of a new one each time.

    Accepts PyMySQL's ``ssl_ca`` / ``ssl_verify_cert`` / ``ssl_verify_identity`` /
    ``ssl_cert`` / ``ssl_key`` / ``ssl_key_password``; a CA given alone means verified TLS
    (see :func:`tls_context`). With none of them, TLS stays *preferred* (used when the server
    offers it, unverified), as in PyMySQL 1.2; with any, it is required. ``ssl_disabled=True``
    or an explicit ``ssl=`` are passed through untouched. The TLS session of the last
    connect to the same host and port is offered (resumed by servers that issue tickets,
    MySQL and MariaDB), and dropped when a connect fails.
    """
    import pymysql

    if kwargs.get("ssl_disabled") or kwargs.get("ssl") is not None:
        return pymysql.connect(**kwargs)
    options = {name: kwargs.pop(name) for name in _TLS_OPTIONS if name in kwargs}
    required = any(value is not None and value is not False for value in options.values())
    verify = options.get("ssl_verify_cert")
    identity = options.get("ssl_verify_identity")
    context = tls_context(
        ca=options.get("ssl_ca"),
        verify=(bool(verify) or bool(identity)) if (verify is not None or identity) else None,
        check_hostname=bool(identity) if identity is not None else None,
        cert=options.get("ssl_cert"),
        key=options.get("ssl_key"),
        key_password=options.get("ssl_key_password"),
    )
    defer = kwargs.pop("defer_connect", False)
    conn = pymysql.connect(ssl=context, defer_connect=True, **kwargs)
    if not required:
        conn._ssl_required = False  # TLS preferred, as PyMySQL's own default
    from lambda_conn._rds.resume import resuming

    # PyMySQL calls ``ctx.wrap_socket``: this one offers the endpoint's last TLS session.
    tls = resuming(context, conn.host, conn.port)
    conn.ctx = tls
    if not defer:
        try:
            conn.connect()
        except BaseException:
            tls.forget()  # a session the server may not take again
            raise
        import ssl

        if isinstance(conn._sock, ssl.SSLSocket):
            tls.remember(conn._sock)
    return conn


def _without(exc: BaseException, value: str | None) -> str:
    """An OS/SSL error's text without the value we refuse in it (it names the path)."""
    from lambda_conn._redact import scrub, shown

    return scrub(str(exc), value, shown(value))
