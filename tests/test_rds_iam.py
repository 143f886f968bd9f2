"""IAM auth end to end: a token presigned locally by botocore (dummy credentials, no
network) is the password, and it travels only inside TLS.

Two servers, because no one server shows both halves:

- The private **MariaDB** accepts the token as an ordinary password (``CREATE USER ...
  IDENTIFIED BY '<token>'``; a 300-character password works, MariaDB stores only its
  hash). It proves the token is the password and that verified TLS works with it. But its
  client then sends a mysql_native_password *scramble*, not the token itself.
- RDS's IAM plugin instead asks the client to switch to **mysql_clear_password** and
  receives the token as is, which is why TLS must be required. MariaDB does that only
  through its PAM plugin (``pam_use_cleartext_plugin``), which needs a service file in
  /etc/pam.d: too intrusive for a test suite. So an **RDS-like endpoint** built on
  mysql-mimic (already a dependency of the local runtime) plays that part: it greets with
  mysql_native_password, switches the IAM user to mysql_clear_password exactly as RDS
  does, and checks the token.

A recording TCP relay in front of either server keeps every byte the client sends: the
proof that the token never crosses the wire in clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from lambda_conn._errors import ConfigurationError
from lambda_conn._rds.connector import RDSConnector
from lambda_conn._rds.iam import IAMTokenProvider
from lambda_conn._rds.retry import Retry
from tests.servers import MariaDBNotInstalled, MariaDBServer
from tests.servers.mariadb import TLSFiles, generate_tls_files

IAM_USER = "iam_app"
REGION = "us-east-1"


class FakeContext:
    def get_remaining_time_in_millis(self) -> int:
        return 5000


class FrozenClock:
    """Wall time for the token cache: fixed, so the token the server knows stays cached."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"retried a non-retryable error (slept {seconds})")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials in the environment, as botocore's default chain reads them."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy-secret-access-key")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def provider(aws_env: None) -> IAMTokenProvider:
    return IAMTokenProvider(clock=FrozenClock())  # credentials and region from the env


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return generate_tls_files(tmp_path_factory.mktemp("iam-tls"))


# --------------------------------------------------------------------------- wire capture


_SSL_REQUEST_SIZE = 4 + 32  # packet header + SSLRequest (capabilities, size, charset, filler)


def _starts_tls(data: bytes) -> bool:
    """An SSLRequest packet (sequence 1, 32 bytes): the TLS ClientHello comes next."""
    return (
        len(data) >= _SSL_REQUEST_SIZE
        and int.from_bytes(data[:3], "little") == 32
        and (data[3] == 1)
    )


class RecordingRelay:
    """A TCP relay on 127.0.0.1 that forwards to ``target`` and keeps what clients send."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = bytearray()  # everything client -> server, all connections
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, tuple[socket.socket, bool]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="RecordingRelay", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    client, _ = self._listener.accept()
                    upstream = socket.create_connection(self.target)
                    self._peers[client] = (upstream, True)
                    self._peers[upstream] = (client, False)
                    self._selector.register(client, selectors.EVENT_READ)
                    self._selector.register(upstream, selectors.EVENT_READ)
                    continue
                if sock not in self._peers:
                    continue  # dropped earlier in this same batch of events
                other, from_client = self._peers[sock]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)
                    continue
                if from_client:
                    self.sent += data
                with contextlib.suppress(OSError):
                    if from_client and _starts_tls(data):
                        # mysql-mimic drops TLS bytes that arrive in the same read as the
                        # SSLRequest (its StreamReader has buffered them when it upgrades),
                        # and a relay coalesces exactly those two writes: pace them apart.
                        other.sendall(data[:_SSL_REQUEST_SIZE])
                        time.sleep(0.2)
                        data = data[_SSL_REQUEST_SIZE:]
                    if data:
                        other.sendall(data)

    def _drop(self, sock: socket.socket) -> None:
        other, _ = self._peers.pop(sock, (None, False))
        for s in (sock, other):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in list(self._peers):
            self._drop(sock)
        self._selector.close()
        self._listener.close()

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- RDS-like endpoint


class RDSLikeEndpoint:
    """mysql-mimic server whose IAM users log in the way RDS's IAM plugin makes them.

    The greeting offers mysql_native_password; for ``IAM_USER`` the server then sends an
    auth switch to mysql_clear_password and compares what arrives with ``token``.
    ``logins`` records (user, accepted) for every login attempt.
    """

    def __init__(self, token: str, tls: TLSFiles | None) -> None:
        self.token = token
        self.tls = tls
        self.logins: list[tuple[str, bool]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._writers: set[Any] = set()
        self._transports: list[Any] = []
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RDSLikeEndpoint:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="RDSLikeEndpoint", daemon=True)
        self._thread.start()
        assert started.wait(10), "endpoint did not start"
        return self

    async def _serve(self) -> None:
        from mysql_mimic import MysqlServer, Session
        from mysql_mimic.auth import (
            AbstractClearPasswordAuthPlugin,
            IdentityProvider,
            NativePasswordAuthPlugin,
            User,
        )

        endpoint = self

        class IAMPlugin(AbstractClearPasswordAuthPlugin):  # type: ignore[misc]
            name = "rds_iam"  # the client sees only mysql_clear_password

            async def check(self, username: str, password: str) -> str | None:
                accepted = password == endpoint.token
                endpoint.logins.append((username, accepted))
                return username if accepted else None

        class Identities(IdentityProvider):  # type: ignore[misc]
            def get_plugins(self) -> list[Any]:
                return [NativePasswordAuthPlugin(), IAMPlugin()]

            async def get_user(self, username: str) -> Any:
                return User(name=username, auth_plugin="rds_iam")

        class OneRow(Session):  # type: ignore[misc]
            async def handle_query(self, sql: str, attrs: Any) -> Any:
                if sql.lstrip()[:6].upper() == "SELECT":
                    return [(self.username,)], ["user"]
                return [], []

        context = None
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
        server = MysqlServer(session_factory=OneRow, identity_provider=Identities(), ssl=context)
        original = server._client_connected_cb
        writers = self._writers

        raw_transports = self._transports

        async def tracked(reader: Any, writer: Any) -> None:
            writers.add(writer)
            raw_transports.append(writer.transport)  # before any TLS upgrade replaces it
            try:
                await original(reader, writer)
            finally:
                writers.discard(writer)

        server._client_connected_cb = tracked
        await server.start_server(host="127.0.0.1", port=0)
        self._server = server
        self.port = server._server.sockets[0].getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        assert loop is not None

        async def shutdown() -> None:
            # Sessions end with an EOF rather than a cancellation, so mysql-mimic closes
            # its transports itself (a cancelled one is left unclosed).
            loop.set_exception_handler(lambda loop, context: None)
            self._server._server.close()
            for writer in list(self._writers):
                writer.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            for task in tasks:
                task.cancel()
            # A TLS transport closes its socket only after the close_notify exchange;
            # stopping the loop first would leave sockets behind: abort what is left.
            for transport in self._transports:
                transport.abort()
            for _ in range(3):
                await asyncio.sleep(0)  # connection_lost callbacks close the sockets
            await self._server._server.wait_closed()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        assert self._thread is not None
        self._thread.join(10)


@contextlib.contextmanager
def endpoint_behind_relay(
    provider: IAMTokenProvider, tls: TLSFiles | None
) -> Iterator[tuple[RDSLikeEndpoint, RecordingRelay, str]]:
    """An RDS-like endpoint that knows the token the provider will send through a relay."""
    with RecordingRelay(("127.0.0.1", 0)) as relay:
        token = provider.token("127.0.0.1", relay.port, IAM_USER)
        with RDSLikeEndpoint(token, tls) as endpoint:
            relay.target = ("127.0.0.1", endpoint.port)
            yield endpoint, relay, token


def iam_connector(port: int, provider: IAMTokenProvider, ca: str | None, **kw: Any) -> RDSConnector:
    return RDSConnector(
        "127.0.0.1",
        port=port,
        user=IAM_USER,
        iam=provider,
        ssl_ca=ca,
        retry=Retry(sleep=no_sleep),
        **kw,
    )


# --------------------------------------------------------------------------- tests


def test_token_sent_by_mysql_clear_password_inside_tls_only(
    provider: IAMTokenProvider, tls_files: TLSFiles
) -> None:
    with endpoint_behind_relay(provider, tls_files) as (endpoint, relay, token):
        # WHEN the connector logs in through the relay
        conn = iam_connector(relay.port, provider, tls_files.ca).connect(FakeContext())
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone() == (IAM_USER,)
        conn.close()
        # THEN the endpoint got the exact token through mysql_clear_password ...
        assert endpoint.logins == [(IAM_USER, True)]
        # ... and none of it crossed the wire readable (not even the signature)
        signature = token.rsplit("X-Amz-Signature=", 1)[1]
        assert relay.sent  # the relay did see the session
        assert token.encode() not in relay.sent
        assert signature.encode() not in relay.sent


def test_the_wire_capture_would_see_a_clear_text_token(
    provider: IAMTokenProvider, tls_files: TLSFiles
) -> None:
    # The control for the test above: plain PyMySQL without TLS does what RDS asks and
    # sends the token in clear text, and the relay sees it. This is what the connector
    # refuses to do.
    with endpoint_behind_relay(provider, tls_files) as (endpoint, relay, token):
        conn = pymysql.connect(
            host="127.0.0.1", port=relay.port, user=IAM_USER, password=token, ssl_disabled=True
        )
        conn.close()
        assert endpoint.logins == [(IAM_USER, True)]
        assert token.encode() in relay.sent


def test_iam_refused_when_the_server_offers_no_tls(provider: IAMTokenProvider) -> None:
    # GIVEN an endpoint without TLS (or a man in the middle stripping it)
    with endpoint_behind_relay(provider, None) as (endpoint, relay, token):
        rds = iam_connector(relay.port, provider, None, verify=False)
        # WHEN connecting THEN the connector stops before sending any credential
        with pytest.raises(pymysql.err.OperationalError) as info:
            rds.connect(FakeContext())
        assert info.value.args[0] == 2026  # SSL required but not offered
        assert endpoint.logins == []
        assert token.encode() not in relay.sent


def test_iam_cannot_be_configured_without_tls(provider: IAMTokenProvider) -> None:
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("127.0.0.1", user=IAM_USER, iam=provider, tls=False)
    assert info.value.setting == "tls"


def test_iam_token_is_the_password_at_mariadb_over_verified_tls(
    make_mariadb: Any, provider: IAMTokenProvider
) -> None:
    try:
        server: MariaDBServer = make_mariadb(tls=True)
    except MariaDBNotInstalled as exc:  # pragma: no cover - the fixture fails first
        pytest.fail(str(exc))
    assert server.tls is not None
    # GIVEN a user whose password is the token botocore presigned (dummy credentials)
    token = provider.token(server.host, server.port, IAM_USER)
    assert len(token) > 250
    server.query(f"CREATE USER '{IAM_USER}'@'127.0.0.1' IDENTIFIED BY %s", (token,))
    server.query(f"GRANT SELECT ON {server.database}.* TO '{IAM_USER}'@'127.0.0.1'")
    rds = iam_connector(server.port, provider, server.tls.ca, database=server.database)
    # WHEN the connector logs in with iam=True
    conn = rds.connect(FakeContext())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            user = cur.fetchone()[0]
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            version = cur.fetchone()[1]
    finally:
        conn.close()
    # THEN it is that user, over TLS verified against the generated CA
    assert user == f"{IAM_USER}@127.0.0.1"
    assert version.startswith("TLSv1.")


def test_a_refused_cached_token_is_replaced_once(
    provider: IAMTokenProvider, tls_files: TLSFiles
) -> None:
    with endpoint_behind_relay(provider, tls_files) as (endpoint, relay, _token):
        # GIVEN a cached token the endpoint no longer accepts (say, signed before a
        # clock correction), and a fresh one it does
        endpoint.token = "the-next-token"
        signed: list[str] = []

        def sign(host: str, port: int, user: str) -> str:
            signed.append(user)
            return "the-next-token"

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(IAMTokenProvider, "_sign", lambda self, h, p, u: sign(h, p, u))
            conn = iam_connector(relay.port, provider, tls_files.ca).connect(FakeContext())
        conn.close()
    # THEN the refused token was dropped and one new token signed, without a backoff
    assert endpoint.logins == [(IAM_USER, False), (IAM_USER, True)]
    assert signed == [IAM_USER]
