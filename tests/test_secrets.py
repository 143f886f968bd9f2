"""Secrets stay secret: a distinctive password on every error path, found nowhere.

Nowhere means: not in the exception's message, repr or args, not in any exception chained
to it (``__cause__``/``__context__``) nor in the rendered traceback, not in a log record
and not on stdout/stderr.
"""

from __future__ import annotations

import socket
import struct
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambda_conn import (
    ConfigurationError,
    ManagedConnectionASGIMiddleware,
    RDSConnector,
    ReusedConnection,
    health_guard,
    managed_connection,
    reused_connection,
)
from lambda_conn._rds.deadline import Deadline, Timeouts
from lambda_conn._rds.retry import Retry

SECRET = "Zq7-UNIQUE-s3cret!pw"


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]


def everything_about(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    for link in chain(exc):
        parts += [str(link), repr(link), repr(link.args), repr(vars(link))]
    return "\n".join(parts)


@pytest.fixture
def nowhere(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Callable[[BaseException], None]:
    caplog.set_level("DEBUG")

    def check(exc: BaseException) -> None:
        out, err = capfd.readouterr()
        assert SECRET not in everything_about(exc)
        assert SECRET not in caplog.text
        assert SECRET not in out + err

    return check


def rds(host: str = "db.example", **options: Any) -> RDSConnector:
    return RDSConnector(host, **{"user": "app", **options})


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        (f"mysql://app:{SECRET}@db.example/app", "'mysql://***@db.example/app'"),
        (f"app:{SECRET}@db.example", "'***@db.example'"),
        (f"db.example/{SECRET}", f"<str of {len(SECRET) + 11} characters>"),
    ],
)
def test_a_dsn_given_as_the_host_is_refused_redacted(
    host: str, shown: str, nowhere: Callable[[BaseException], None]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        rds(host, password="pw")
    assert info.value.setting == "host"
    assert str(info.value).startswith(f"host={shown} is not valid: expected a host name")
    assert "DSN" in str(info.value)
    nowhere(info.value)


MISPLACED: dict[str, Callable[[], object]] = {
    "port": lambda: rds(port=SECRET),
    "tls": lambda: rds(tls=SECRET),
    "verify": lambda: rds(verify=SECRET),
    "region": lambda: rds(region=SECRET),
    "iam": lambda: rds(iam=SECRET),
    "retry": lambda: rds(retry=SECRET),
    "timeouts": lambda: rds(timeouts=SECRET),
    "margin": lambda: rds(margin=SECRET),
    "clock": lambda: rds(clock=SECRET),
    "ssl_ca": lambda: rds(ssl_ca=f"/nonexistent/{SECRET}"),
    "password as bytes": lambda: rds(password=SECRET.encode()),
    "password with iam": lambda: rds(password=SECRET, iam=True, region="us-east-1"),
    "passwd": lambda: rds(passwd=SECRET),
    "ssl": lambda: rds(ssl={"key_password": SECRET}),
    "read_default_file": lambda: rds(read_default_file=SECRET),
    "connector": lambda: __import__("lambda_conn").ReusedRDSConnection(SECRET),
    "reused connect": lambda: reused_connection(SECRET),  # type: ignore[arg-type]
    "max_age": lambda: ReusedConnection(lambda: None, max_age=SECRET),  # type: ignore[arg-type]
    "validate": lambda: ReusedConnection(lambda: None, validate=SECRET),  # type: ignore[arg-type]
    "clients": lambda: managed_connection(clients=SECRET),
    "clients item": lambda: managed_connection(clients=["pymysql", SECRET]),
    "on_leak": lambda: managed_connection(on_leak=SECRET),
    "audit_descriptors": lambda: managed_connection(audit_descriptors=SECRET),  # type: ignore[call-overload]
    "managed_connection positional": lambda: managed_connection(SECRET),  # type: ignore[call-overload]
    "health_guard positional": lambda: health_guard(SECRET),  # type: ignore[call-overload]
    "fd_limit": lambda: health_guard(fd_limit=SECRET),
    "memory_limit": lambda: health_guard(memory_limit=SECRET),
    "jitter": lambda: health_guard(fd_limit=100, jitter=SECRET),
    "retry.attempts": lambda: Retry(attempts=SECRET),  # type: ignore[arg-type]
    "timeouts.connect": lambda: Timeouts(connect=SECRET),  # type: ignore[arg-type]
    "deadline": lambda: Deadline.after(SECRET),  # type: ignore[arg-type]
    "ASGI app": lambda: ManagedConnectionASGIMiddleware(SECRET),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("make", MISPLACED.values(), ids=MISPLACED.keys())
def test_a_secret_in_the_wrong_setting_is_never_echoed(
    make: Callable[[], object], nowhere: Callable[[BaseException], None]
) -> None:
    with pytest.raises((ConfigurationError, TypeError)) as info:
        make()
    nowhere(info.value)


@pytest.mark.parametrize(
    ("variable", "attach"),
    [
        ("FD_HEALTH_LIMIT", managed_connection),
        ("MEMORY_HEALTH_LIMIT", managed_connection),
        ("HEALTH_REPORT_ONLY", lambda fn: health_guard(fn, fd_limit=100)),
        ("LAMBDA_CONN_AUDIT_DESCRIPTORS", managed_connection),
    ],
)
def test_a_secret_in_an_environment_variable_is_never_echoed(
    variable: str,
    attach: Callable[[Any], Any],
    monkeypatch: pytest.MonkeyPatch,
    nowhere: Callable[[BaseException], None],
) -> None:
    monkeypatch.setenv(variable, SECRET)
    with pytest.raises(ConfigurationError) as info:
        attach(lambda event, context: None)
    assert info.value.setting == variable
    assert f"{variable}=<str of {len(SECRET)} characters> is not valid" in str(info.value)
    nowhere(info.value)


class EchoingPeer:
    """A loopback 'server' that answers every connect with a retryable MySQL error whose
    message echoes the password: a buggy proxy, or a hostile one."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        message = f"Too many connections (login 'app' with password '{SECRET}')".encode()
        payload = b"\xff" + struct.pack("<H", 1040) + b"#08004" + message
        packet = struct.pack("<I", len(payload))[:3] + b"\x00" + payload
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                client.sendall(packet)

    def close(self) -> None:
        self.sock.close()


def test_a_peer_that_echoes_the_password_reaches_no_log_message_or_cause(
    nowhere: Callable[[BaseException], None],
) -> None:
    from lambda_conn import ConnectError

    peer = EchoingPeer()
    try:
        connector = rds(
            "127.0.0.1",
            port=peer.port,
            password=SECRET,
            tls=False,
            retry=Retry(attempts=3, base_delay=0.01, max_delay=0.02),
        )
        with pytest.raises(ConnectError) as info:
            connector.connect()
    finally:
        peer.close()
    assert info.value.attempts == 3 and info.value.args[0] == 1040
    cause = info.value.__cause__
    assert cause is not None and "Too many connections" in str(cause)
    assert "***" in str(cause)  # scrubbed in place: the chain stays, the secret goes
    nowhere(info.value)


def test_a_refused_password_and_an_unreachable_host_show_no_password(
    mariadb: Any, nowhere: Callable[[BaseException], None]
) -> None:
    import pymysql

    from lambda_conn import ConnectError

    kwargs = mariadb.connect_kwargs()
    wrong = rds(kwargs["host"], port=kwargs["port"], password=SECRET, tls=False, database="lc")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        wrong.connect()
    assert refused.value.args[0] == 1045
    nowhere(refused.value)

    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    unreachable = rds(
        "127.0.0.1", port=port, password=SECRET, tls=False, retry=Retry(attempts=2, base_delay=0.01)
    )
    with pytest.raises(ConnectError) as gave_up:
        unreachable.connect()
    assert repr(unreachable).count("***") == 0 and SECRET not in repr(unreachable)
    nowhere(gave_up.value)


@pytest.mark.parametrize(
    ("value", "form"),
    [
        (512, "512"),
        ("150%", "'150%'"),
        ("900XB", "'900XB'"),
        ("/opt/rds-ca.pem", "'/opt/rds-ca.pem'"),
        (SECRET, f"<str of {len(SECRET)} characters>"),
        ("explode", "<str of 7 characters>"),
        (f"mysql://app:{SECRET}@db/app", "'mysql://***@db/app'"),
        (f"postgresql://app:{SECRET[:6]}/{SECRET[6:]}@db/app", "'postgresql://***@db/app'"),
        (f"host=db password={SECRET} dbname=app", "'host=db password=*** dbname=app'"),
        (SECRET.encode(), f"<bytes of {len(SECRET)} bytes>"),
        ({"password": SECRET}, "<dict of 1 items>"),
    ],
)
def test_how_a_refused_value_is_shown(value: object, form: str) -> None:
    from lambda_conn._redact import shown

    assert shown(value) == form
    assert shown(value, secret=True).startswith("<")  # a credential's setting: never more


@pytest.mark.parametrize(
    ("make", "form"),
    [
        (lambda: managed_connection(clients=["pymsql"]), "clients='pymsql' is not valid"),
        (lambda: managed_connection(on_leak="rasie"), "on_leak='rasie' is not valid"),
        (lambda: rds(engine="postgress"), "engine='postgress' is not valid"),
    ],
    ids=["clients", "on_leak", "engine"],
)
def test_a_refused_word_in_a_setting_that_holds_no_secret_is_shown(
    make: Callable[[], object], form: str
) -> None:
    # GIVEN a typo in a setting of a fixed vocabulary: it reads as a typo
    with pytest.raises(ConfigurationError) as info:
        make()
    assert form in str(info.value)


def test_a_refused_boolean_variable_is_shown_and_other_settings_stay_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lambda_conn._redact import shown

    monkeypatch.setenv("LAMBDA_CONN_AUDIT_DESCRIPTORS", "maybe")
    with pytest.raises(ConfigurationError) as info:
        managed_connection(lambda event, context: None)
    assert "LAMBDA_CONN_AUDIT_DESCRIPTORS='maybe' is not valid" in str(info.value)
    # a word is hidden where a secret may go (a host, a user, free text), and in a safe
    # setting only a word is shown: the distinctive password stays hidden there too
    assert ConfigurationError("user", "explode", "a str").value == "<str of 7 characters>"
    assert ConfigurationError("clients", SECRET, "a name").value.startswith("<str of")
    assert shown("hunter2", safe=True) == "'hunter2'"
    assert shown("Hunter2", safe=True) == "<str of 7 characters>"  # mixed case: a password?
