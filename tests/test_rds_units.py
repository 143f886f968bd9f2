"""RDS connector building blocks without a server: value objects, backoff, errors, tokens.

Clocks, sleeps and random draws are injected, so nothing here waits or depends on timing.
"""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
from typing import Any

import pymysql
import pytest

from lambda_conn._errors import ConfigurationError, LambdaConnError
from lambda_conn._rds.connector import ConnectError, RDSConnector
from lambda_conn._rds.deadline import Deadline, Timeouts, earliest
from lambda_conn._rds.iam import TOKEN_LIFETIME, IAMTokenProvider, resolve_region
from lambda_conn._rds.retry import NO_RETRY, RETRYABLE_CODES, Retry, is_retryable
from lambda_conn._rds.secret import Secret, redact


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeContext:
    """What a handler receives from Lambda, as far as deadlines go."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def dummy_credentials() -> Any:
    import botocore.credentials

    return botocore.credentials.Credentials("AKIDEXAMPLE", "dummy-secret-key")


# --------------------------------------------------------------------------- Deadline


def test_deadline_from_context_keeps_the_margin_back() -> None:
    # GIVEN 3 s left in the invocation and a 0.5 s margin
    clock = FakeClock()
    deadline = Deadline.from_context(FakeContext(3000), margin=0.5, clock=clock)
    # THEN the connect may take 2.5 s, and the deadline moves with the clock
    assert deadline.remaining() == pytest.approx(2.5)
    clock.now += 2.5
    assert deadline.expired
    assert "left" in repr(deadline)


def test_deadline_after_and_earliest() -> None:
    clock = FakeClock()
    short, long = Deadline.after(1, clock=clock), Deadline.after(5, clock=clock)
    assert earliest(long, None, short) is short
    assert earliest(None, None) is None
    assert Deadline.after(-1, clock=clock).expired  # computed budgets may already be spent


@pytest.mark.parametrize("value", [True, "2", float("nan"), float("inf"), None])
def test_deadline_after_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="deadline="):
        Deadline.after(value)


def test_deadline_from_something_that_is_not_a_context() -> None:
    with pytest.raises(ConfigurationError) as info:
        Deadline.from_context({"aws_request_id": "x"})
    assert info.value.setting == "context"
    assert "get_remaining_time_in_millis" in str(info.value)


@pytest.mark.parametrize("margin", [-0.1, True, "1"])
def test_deadline_margin_validated(margin: Any) -> None:
    with pytest.raises(ConfigurationError, match="margin="):
        Deadline.from_context(FakeContext(1000), margin=margin)


# --------------------------------------------------------------------------- Timeouts


def test_timeouts_without_deadline_are_unchanged() -> None:
    timeouts = Timeouts(connect=5, read=30)
    assert timeouts.within(None) is timeouts


def test_timeouts_are_cut_to_the_deadline() -> None:
    clock = FakeClock()
    deadline = Deadline.after(2.0, clock=clock)
    cut = Timeouts(connect=5, read=30, write=None).within(deadline)
    # connect and read are cut to what is left; "write=None" means "until the deadline"
    assert cut == Timeouts(connect=2.0, read=2.0, write=2.0)
    assert Timeouts(connect=0.5, read=1).within(deadline) == Timeouts(0.5, 1.0, 2.0)


def test_timeouts_never_zero_for_pymysql() -> None:
    # PyMySQL rejects a zero timeout; an exhausted deadline is caught before an attempt.
    cut = Timeouts().within(Deadline.after(-5, clock=FakeClock()))
    assert cut.connect > 0 and cut.read is not None and cut.read > 0


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"connect": 0}, "timeouts.connect"),
        ({"connect": None}, "timeouts.connect"),
        ({"read": -1}, "timeouts.read"),
        ({"write": True}, "timeouts.write"),
    ],
)
def test_timeouts_validated(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Timeouts(**kwargs)
    assert info.value.setting == setting


# --------------------------------------------------------------------------- Retry


def test_full_jitter_backoff_grows_and_is_capped() -> None:
    retry = Retry(base_delay=0.1, max_delay=1.0, random=lambda: 1.0)
    assert [retry.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    half = Retry(base_delay=0.1, max_delay=1.0, random=lambda: 0.5)
    assert half.delay(3) == pytest.approx(0.2)  # a random share of the ceiling


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"attempts": 0}, "retry.attempts"),
        ({"attempts": 2.5}, "retry.attempts"),
        ({"attempts": True}, "retry.attempts"),
        ({"base_delay": -1}, "retry.base_delay"),
        ({"base_delay": 2, "max_delay": 1}, "retry.max_delay"),
        ({"sleep": 3}, "retry.sleep"),
    ],
)
def test_retry_validated(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Retry(**kwargs)
    assert info.value.setting == setting


def test_retry_is_a_value() -> None:
    assert Retry() == Retry(sleep=lambda s: None)  # injected callables do not count
    assert NO_RETRY.attempts == 1
    assert repr(Retry()) == "Retry(attempts=6, base_delay=0.05, max_delay=2.0)"


def _wrapped_oserror(original: OSError) -> pymysql.err.OperationalError:
    """What PyMySQL raises for an OSError during connect (TLS errors included)."""
    exc = pymysql.err.OperationalError(2003, f"Can't connect to MySQL server ({original})")
    exc.original_exception = original
    return exc


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (pymysql.err.OperationalError(1040, "Too many connections"), True),
        (pymysql.err.OperationalError(1203, "max_user_connections"), True),
        (pymysql.err.OperationalError(1053, "Server shutdown in progress"), True),
        (pymysql.err.OperationalError(2003, "Can't connect ([Errno 111])"), True),
        (pymysql.err.OperationalError(2013, "Lost connection (timed out)"), True),
        (pymysql.err.OperationalError(1045, "Access denied"), False),
        (pymysql.err.OperationalError(1049, "Unknown database"), False),
        (pymysql.err.OperationalError(2026, "SSL is required"), False),
        (_wrapped_oserror(ssl.SSLCertVerificationError("certificate verify failed")), False),
        (_wrapped_oserror(ssl.SSLEOFError("EOF in violation of protocol")), True),
        (_wrapped_oserror(ConnectionRefusedError(111, "refused")), True),
        (ConnectionResetError(104, "reset"), True),
        (ValueError("not a network error"), False),
    ],
)
def test_which_errors_are_retried(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_retryable_codes_are_the_documented_ones() -> None:
    assert {1040, 2003, 2013} <= RETRYABLE_CODES
    assert 1045 not in RETRYABLE_CODES


# --------------------------------------------------------------------------- Secret


def test_secret_never_shows() -> None:
    secret = Secret("hunter2-password")
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret}" + repr([secret])
    assert secret.reveal() == "hunter2-password"
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(secret)
    assert redact("pw hunter2 and hunter2", ["hunter2", ""]) == "pw *** and ***"


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        # a short secret inside a word is not the secret: the message stays readable
        ("token expired for x", "x", "token expired for ***"),
        ("password=pass;", "pass", "password=***;"),
        ("login 'ab1' failed: ab1x", "ab1", "login '***' failed: ab1x"),
        ("pass", "pass", "***"),
        # a long one is masked wherever it occurs, glued to other text or not
        ("errhunter2hunter2!", "hunter2hunter2", "err***!"),
        ("user:correcthorse@db", "correcthorse", "user:***@db"),
    ],
)
def test_redact_masks_a_short_secret_only_where_it_stands_alone(
    text: str, secret: str, expected: str
) -> None:
    assert redact(text, [secret]) == expected


# --------------------------------------------------------------------------- RDSConnector options


def test_connector_repr_names_the_endpoint_never_the_password() -> None:
    rds = RDSConnector("db.example", user="app", password="s3cret-pw", database="app", tls=False)
    assert repr(rds) == (
        "RDSConnector(engine='mysql', host='db.example', port=3306, user='app', database='app', "
        "auth='password', tls='off')"
    )
    assert "s3cret" not in repr(rds)


def test_connector_verifies_tls_by_default_when_given_a_ca(tmp_path: Any) -> None:
    from tests.servers.mariadb import generate_tls_files

    files = generate_tls_files(tmp_path)
    assert RDSConnector("h", user="u", ssl_ca=files.ca).verify is True
    assert RDSConnector("h", user="u", ssl_ca=files.ca, verify=False).verify is False
    assert RDSConnector("h", user="u").verify is False  # encrypted, unverified
    assert RDSConnector("h", user="u", verify=True).verify is True  # the system trust store


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"host": ""}, "host"),
        ({"user": ""}, "user"),
        ({"port": 0}, "port"),
        ({"port": "3306"}, "port"),
        ({"tls": "yes"}, "tls"),
        ({"verify": 1}, "verify"),
        ({"tls": False, "verify": True}, "tls"),
        ({"margin": -1}, "margin"),
        ({"retry": 3}, "retry"),
        ({"timeouts": 5}, "timeouts"),
        ({"iam": "yes"}, "iam"),
        ({"region": "us-east-1"}, "region"),
        ({"ssl_ca": "/nonexistent/ca.pem"}, "ssl_ca"),
        ({"connect_timeout": 3}, "connect_timeout"),
        ({"ssl_disabled": True}, "ssl_disabled"),
        ({"unix_socket": "/tmp/x"}, "unix_socket"),
        ({"ssl_cert": "/tmp/cert.pem"}, "ssl_cert"),
        ({"read_default_file": "~/.my.cnf"}, "read_default_file"),
    ],
)
def test_connector_options_validated(kwargs: dict[str, Any], setting: str) -> None:
    options: dict[str, Any] = {"host": "db.example", "user": "app", **kwargs}
    host = options.pop("host")
    with pytest.raises(ConfigurationError) as info:
        RDSConnector(host, **options)
    assert info.value.setting == setting


def test_connector_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        RDSConnector("db.example", "app")  # type: ignore[call-arg]


def test_a_password_passed_the_wrong_way_is_not_echoed() -> None:
    # GIVEN a password given as PyMySQL's passwd= (the connector owns credentials)
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", user="app", passwd="s3cret-pw")
    # THEN the error names the fix, and not the value
    assert "s3cret" not in str(info.value)
    assert "password= or iam=" in str(info.value)


def test_iam_needs_tls_and_no_password() -> None:
    creds = dummy_credentials()
    provider = IAMTokenProvider("us-east-1", credentials=creds)
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", user="app", iam=provider, tls=False)
    assert info.value.setting == "tls"
    assert "clear text" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", user="app", iam=provider, password="s3cret-pw")
    assert info.value.setting == "password" and "s3cret" not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", user="app", iam=provider, region="eu-west-1")
    assert info.value.setting == "region"


def test_iam_region_comes_from_the_lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert resolve_region(None) == "eu-central-1"
    assert RDSConnector("h", user="u", iam=True).iam is not None
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("h", user="u", iam=True)
    assert info.value.setting == "region"


def test_iam_without_verification_warns(caplog: pytest.LogCaptureFixture) -> None:
    provider = IAMTokenProvider("us-east-1", credentials=dummy_credentials())
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        RDSConnector("db.example", user="app", iam=provider)
    events = [json.loads(r.getMessage())["event"] for r in caplog.records]
    assert events == ["rds_tls_unverified"]


def test_deadline_combines_context_and_explicit() -> None:
    clock = FakeClock()
    rds = RDSConnector("h", user="u", tls=False, margin=0.5, clock=clock)
    assert rds.deadline() is None
    from_context = rds.deadline(FakeContext(10_000))
    assert from_context is not None and from_context.remaining() == pytest.approx(9.5)
    both = rds.deadline(FakeContext(10_000), 2.0)
    assert both is not None and both.remaining() == pytest.approx(2.0)  # the earlier wins
    explicit = Deadline.after(1.0, clock=clock)
    assert rds.deadline(None, explicit) is explicit


def test_no_time_left_fails_before_any_attempt() -> None:
    # GIVEN an invocation with less time left than the margin
    rds = RDSConnector("192.0.2.1", user="u", tls=False, retry=Retry(sleep=_no_sleep))
    # WHEN connecting THEN nothing is attempted: the error says why, at once
    with pytest.raises(ConnectError) as info:
        rds.connect(FakeContext(100))
    assert info.value.reason == "deadline" and info.value.attempts == 0
    assert isinstance(info.value, pymysql.err.OperationalError)
    assert isinstance(info.value, LambdaConnError)
    assert "no time left" in str(info.value)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds}")


# --------------------------------------------------------------------------- IAM tokens


def test_token_is_what_botocore_generate_db_auth_token_returns() -> None:
    # GIVEN botocore's own RDS client and our provider, both with dummy credentials: no network
    import botocore.session

    client = botocore.session.get_session().create_client(
        "rds",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="dummy-secret-key",
    )
    provider = IAMTokenProvider("us-east-1", credentials=dummy_credentials())
    try:
        for _ in range(5):  # SigV4 signs the second: retry if one fell across a boundary
            expected = client.generate_db_auth_token(
                DBHostname="proxy.example", Port=3306, DBUsername="app", Region="us-east-1"
            )
            # WHEN our provider signs the same request
            provider.invalidate("proxy.example", 3306, "app")
            token = provider.token("proxy.example", 3306, "app")
            if _amz_date(token) == _amz_date(expected):
                break
    finally:
        client.close()
    # THEN the token is identical, byte for byte
    assert token == expected
    assert token.startswith("proxy.example:3306/?Action=connect&DBUser=app&")
    assert "X-Amz-Expires=900" in token


def _amz_date(token: str) -> str:
    return token.split("X-Amz-Date=", 1)[1].split("&", 1)[0]


def test_token_cached_until_shortly_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_700_000_000.0)
    provider = IAMTokenProvider(
        "us-east-1", credentials=dummy_credentials(), refresh_margin=60, clock=clock
    )
    signed: list[tuple[str, int, str]] = []
    real_sign = IAMTokenProvider._sign

    def counting_sign(self: IAMTokenProvider, host: str, port: int, user: str) -> str:
        signed.append((host, port, user))
        return real_sign(self, host, port, user)

    monkeypatch.setattr(IAMTokenProvider, "_sign", counting_sign)
    first = provider.token("h", 3306, "app")
    clock.now += TOKEN_LIFETIME - 61  # still more than the margin left
    assert provider.token("h", 3306, "app") == first
    assert provider.cached("h", 3306, "app")
    assert len(signed) == 1
    clock.now += 2  # within the margin: signed again
    provider.token("h", 3306, "app")
    assert len(signed) == 2
    provider.token("h", 3306, "other")  # per user (and host, port)
    assert len(signed) == 3
    clock.now -= 3600  # the wall clock moved back (a restored snapshot): not trusted
    provider.token("h", 3306, "app")
    assert len(signed) == 4
    provider.invalidate("h", 3306, "app")
    assert not provider.cached("h", 3306, "app")
    assert repr(provider) == "IAMTokenProvider(region='us-east-1', cached_tokens=1)"  # 'other'


def test_provider_options_validated() -> None:
    with pytest.raises(ConfigurationError) as info:
        IAMTokenProvider("us-east-1", refresh_margin=900)
    assert info.value.setting == "refresh_margin"
    with pytest.raises(ConfigurationError) as info:
        IAMTokenProvider("us-east-1", credentials="AKIDEXAMPLE:secret")
    assert info.value.setting == "credentials" and "secret" not in str(info.value)


def test_botocore_signing_debug_lines_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    # botocore.auth logs the canonical request and the signature at DEBUG: together they
    # rebuild the token. Our signing keeps them out; other botocore logging is untouched.
    provider = IAMTokenProvider("us-east-1", credentials=dummy_credentials())
    with caplog.at_level(logging.DEBUG):
        token = provider.token("proxy.example", 3306, "app")
        logging.getLogger("botocore.auth").debug("someone else's line")
    signature = token.rsplit("X-Amz-Signature=", 1)[1]
    assert signature not in caplog.text
    assert "someone else's line" in caplog.text


# --------------------------------------------------------------------------- laziness


def test_nothing_of_rds_loads_with_lambda_conn_and_botocore_only_for_iam() -> None:
    code = """
import sys, json
import lambda_conn
before = sorted(m for m in sys.modules if m.startswith(("lambda_conn._rds", "botocore", "pymysql")))
from lambda_conn._rds.connector import RDSConnector
rds = RDSConnector("h", user="u", password="p", tls=False)
after_password = "botocore" in sys.modules
print(json.dumps([before, after_password]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    before, botocore_loaded = json.loads(out)
    assert before == []
    assert botocore_loaded is False


def test_watchdog_runs_what_is_not_disarmed_and_only_that() -> None:
    import threading

    from lambda_conn._rds.watchdog import Watchdog

    dog = Watchdog()
    # A disarmed action never runs, and disarm says it was in time.
    ran: list[str] = []
    handle = dog.arm(0.05, lambda: ran.append("disarmed"))
    assert dog.disarm(handle) is True
    # One that is not disarmed runs at its time, even if armed after a later one.
    fired = threading.Event()
    later = dog.arm(30.0, lambda: ran.append("later"))
    soon = dog.arm(0.01, fired.set)
    assert fired.wait(5.0)
    assert dog.disarm(soon) is False  # it ran: the attempt was cut off
    assert dog.disarm(later) is True
    assert ran == []


def test_watchdog_heap_stays_small_when_every_attempt_is_disarmed() -> None:
    from lambda_conn._rds.watchdog import Watchdog

    dog = Watchdog()
    for _ in range(10_000):  # a burst of connects, each well inside its time
        assert dog.disarm(dog.arm(60.0, lambda: True))
    assert len(dog._heap) <= 65
