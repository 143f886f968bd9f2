"""Health guard units: settings, decisions, trigger shapes, hooks. No runtime, no real fds.

Probes, clock, random draw, garbage collector and recycler are injected, so a case about
a 512-descriptor limit needs no 512 descriptors. The real thing runs in tests/health/.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambda_conn import ConfigurationError, managed_connection, register
from lambda_conn._guard import ending, factory, probes, recycle, report, shutdown
from lambda_conn._guard.config import (
    ENV_NAMES,
    KEYWORDS,
    HealthConfig,
    Limit,
    Platform,
    load_config,
)
from lambda_conn._guard.decorator import health_guard
from lambda_conn._guard.guard import HealthGuard
from lambda_conn._guard.triggers import ASYNC, BATCH, REQUEST, classify
from lambda_conn._health import guard_for_handler
from lambda_conn._redact import shown

IN_LAMBDA = {"runtime_api": "127.0.0.1:9001", "memory_mb": 128, "function_name": "fn"}


def platform(**overrides: Any) -> Platform:
    options: dict[str, Any] = {"fd_rlimit": 1024, **IN_LAMBDA}
    options.update(overrides)
    return Platform(**options)


def config(env: dict[str, str] | None = None, where: Platform | None = None, **kw: Any) -> Any:
    return load_config(env or {}, kw, where or platform())


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No health variable leaks in from the shell; no env guard leaks between tests."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    factory._reset_for_tests()
    yield
    factory._reset_for_tests()
    recycle.disarm()


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", 512), ("50%", 512), (" 25 % ", 256), ("100%", 1024), ("1", 1), ("12.5%", 128)],
)
def test_fd_limit_accepts_a_count_or_a_share_of_the_soft_limit(text: str, expected: int) -> None:
    assert config({"FD_HEALTH_LIMIT": text}).fd_limit.value == expected


@pytest.mark.parametrize(
    "bad", ["abc", "-1", "150%", "0", "0%", "1025", "5.5", "%", "x%", "50%%", "²", "50²%", "٥١٢"]
)
def test_bad_fd_limit_names_variable_value_and_forms(bad: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        config({"FD_HEALTH_LIMIT": bad})
    message = str(info.value)
    assert message.startswith(f"FD_HEALTH_LIMIT={shown(bad)} is not valid")
    assert "like 512" in message and "like 50%" in message and "(1024)" in message
    assert info.value.setting == "FD_HEALTH_LIMIT"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100MB", 100 << 20),
        ("100 mb", 100 << 20),
        ("100MiB", 100 << 20),
        ("0.1GB", int(0.1 * (1 << 30))),
        ("65536KB", 64 << 20),
        ("70%", int((128 << 20) * 0.7)),
        ("100%", 128 << 20),
    ],
)
def test_memory_limit_accepts_sizes_and_shares_of_function_memory(text: str, expected: int) -> None:
    assert config({"MEMORY_HEALTH_LIMIT": text}).memory_limit.value == expected


@pytest.mark.parametrize(
    "bad",
    ["abc", "-1", "150%", "0", "0MB", "900", "900TB", "900 bytes", "MB", "200MB", "1GB", "²MB"],
)
def test_bad_memory_limit_names_variable_value_and_forms(bad: str) -> None:
    # 128 MB function: 200MB and 1GB could never be reached before the memory kill.
    with pytest.raises(ConfigurationError) as info:
        config({"MEMORY_HEALTH_LIMIT": bad})
    message = str(info.value)
    assert message.startswith(f"MEMORY_HEALTH_LIMIT={shown(bad)} is not valid")
    assert "like 900MB" in message and "like 80%" in message and "(128MB here)" in message


def test_memory_share_without_function_memory_stays_unresolved() -> None:
    # Outside Lambda there is no AWS_LAMBDA_FUNCTION_MEMORY_SIZE: nothing to take 80% of.
    loaded = config({"MEMORY_HEALTH_LIMIT": "80%"}, platform(memory_mb=None, runtime_api=None))
    assert loaded.memory_limit == Limit(None, "80%")
    assert config({"MEMORY_HEALTH_LIMIT": "2GB"}, platform(memory_mb=None)).memory_limit.value


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("HEALTH_MAX_INVOCATIONS", "0"),
        ("HEALTH_MAX_INVOCATIONS", "-1"),
        ("HEALTH_MAX_INVOCATIONS", "abc"),
        ("HEALTH_MAX_INVOCATIONS", "1.5"),
        ("HEALTH_MAX_INVOCATIONS", "²"),
        ("HEALTH_MIN_LIFETIME", "²"),
        ("HEALTH_JITTER", "²%"),
        ("HEALTH_MIN_LIFETIME", "-1"),
        ("HEALTH_MIN_LIFETIME", "abc"),
        ("HEALTH_MIN_LIFETIME", "5m"),
        ("HEALTH_JITTER", "150%"),
        ("HEALTH_JITTER", "-1"),
        ("HEALTH_JITTER", "abc"),
        ("HEALTH_JITTER", "0.1"),
        ("HEALTH_REPORT_ONLY", "maybe"),
        ("HEALTH_RETRYING_TRIGGERS", "retry"),
        ("HEALTH_HARD_CEILING", "0%"),
        ("HEALTH_HARD_CEILING", "0"),
        ("HEALTH_HARD_CEILING", "150%"),
        ("HEALTH_GRACEFUL_SHUTDOWN", "2"),
    ],
)
def test_every_tuning_variable_rejects_bad_values_by_name(name: str, bad: str) -> None:
    from lambda_conn._settings import safe_to_show

    form = shown(bad, safe=safe_to_show(name))  # a word of a boolean or trigger list: shown
    pattern = rf"^{re.escape(f'{name}={form}')} is not valid: expected "
    with pytest.raises(ConfigurationError, match=pattern):
        config({"FD_HEALTH_LIMIT": "50%", name: bad})


def test_defaults_and_valid_tuning_forms() -> None:
    assert config({"FD_HEALTH_LIMIT": "50%"}) == HealthConfig(
        fd_limit=Limit(512, "50%"),
        min_lifetime=60.0,
        jitter=0.1,
        report_only=False,
        retrying_triggers="report",
        hard_ceiling=0.9,
        graceful_shutdown=None,
    )
    loaded = config(
        {
            "HEALTH_MAX_INVOCATIONS": "1000",
            "HEALTH_MIN_LIFETIME": "30s",
            "HEALTH_JITTER": "0",
            "HEALTH_REPORT_ONLY": "Yes",
            "HEALTH_RETRYING_TRIGGERS": "RECYCLE",
            "HEALTH_HARD_CEILING": "95%",
            "HEALTH_GRACEFUL_SHUTDOWN": "off",
        }
    )
    assert (loaded.max_invocations, loaded.min_lifetime, loaded.jitter) == (1000, 30.0, 0.0)
    assert loaded.report_only and loaded.retrying_triggers == "recycle"
    assert (loaded.hard_ceiling, loaded.graceful_shutdown) == (0.95, False)


def test_empty_variables_count_as_unset() -> None:
    assert not config({"FD_HEALTH_LIMIT": "", "MEMORY_HEALTH_LIMIT": "  "}).enabled


def test_keywords_override_the_environment_and_none_turns_a_limit_off() -> None:
    env = {"FD_HEALTH_LIMIT": "50%", "HEALTH_JITTER": "20%", "MEMORY_HEALTH_LIMIT": "64MB"}
    loaded = config(env, fd_limit=100, jitter=0.05, memory_limit=None)
    assert loaded.fd_limit == Limit(100, "100") and loaded.jitter == 0.05
    assert loaded.memory_limit is None


def test_bad_keyword_names_the_keyword_and_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(ConfigurationError, match=r"^fd_limit=True is not valid"):
        config(fd_limit=True)
    with pytest.raises(ConfigurationError, match=r"^memory_limit=900 is not valid"):
        config(memory_limit=900)  # a bare number: bytes or MB? say it with a unit
    with pytest.raises(ConfigurationError, match=r"^jitter=10 is not valid"):
        config(jitter=10)
    with pytest.raises(TypeError, match="unknown health guard option"):
        config(fd_limt=10)


def test_keywords_and_variables_are_one_to_one() -> None:
    assert set(KEYWORDS.values()) == set(ENV_NAMES)
    params = inspect.signature(health_guard).parameters
    assert [name for name in params if name != "handler"] == list(KEYWORDS)


def test_graceful_shutdown_follows_the_guard_unless_set() -> None:
    assert not config().wants_shutdown
    assert config(fd_limit=10).wants_shutdown
    assert not config(fd_limit=10, graceful_shutdown=False).wants_shutdown
    assert config(graceful_shutdown=True).wants_shutdown


def test_platform_from_environ() -> None:
    here = Platform.from_environ(
        {
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_MAX_CONCURRENCY": "4",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        },
        fd_rlimit=1024,
    )
    assert here.in_lambda and here.memory_bytes == 256 << 20
    assert here.max_concurrency == "4" and here.snap_start
    assert not Platform.from_environ({}, fd_rlimit=1024).in_lambda


# -- guard_for_handler and the decorators ------------------------------------------------


def test_unset_means_no_guard_and_managed_connection_adds_nothing() -> None:
    assert guard_for_handler() is None


def test_unset_imports_nothing_of_the_guard() -> None:
    # GIVEN no health variable  WHEN a handler is decorated  THEN no guard module is loaded
    code = (
        "import sys, lambda_conn\n"
        "@lambda_conn.managed_connection\n"
        "def handler(event, context):\n"
        "    return 1\n"
        "handler({}, None)\n"
        "print(sorted(m for m in sys.modules if m.startswith('lambda_conn._guard')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # Only the settings table is read (lambda_conn._settings): nothing of the guard.
    assert out.stdout.strip() == "[]"


def test_a_bad_variable_stops_decoration_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_HEALTH_LIMIT", "900XB")
    with pytest.raises(ConfigurationError, match=r"^MEMORY_HEALTH_LIMIT='900XB'"):

        @managed_connection
        def handler(event: Any, context: Any) -> None: ...

    monkeypatch.delenv("MEMORY_HEALTH_LIMIT")
    monkeypatch.setenv("HEALTH_JITTER", "lots")  # a tuning variable alone is checked too
    # a word is shown as its type and length: it could be a secret in the wrong place
    with pytest.raises(ConfigurationError, match=r"^HEALTH_JITTER=<str of 4 characters>"):
        health_guard(lambda event, context: None)


def test_env_guard_is_shared_by_managed_connection_and_bare_health_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FD_HEALTH_LIMIT", "50%")
    guard = guard_for_handler()
    assert isinstance(guard, HealthGuard) and guard.shared_with_managed
    assert guard_for_handler() is guard
    assert factory.env_guard() is guard
    assert factory.build({"fd_limit": 100}) is not guard


def test_bare_health_guard_without_limits_returns_the_handler_itself() -> None:
    def handler(event: Any, context: Any) -> int:
        return 1

    assert health_guard(handler) is handler
    assert health_guard()(handler) is handler


def test_health_guard_keeps_signature_and_coroutine_nature() -> None:
    def handler(event: dict[str, int], context: object) -> int:
        """Doc."""
        return event["x"]

    async def ahandler(event: dict[str, int], context: object) -> int:
        await asyncio.sleep(0)
        return event["x"]

    wrapped = health_guard(fd_limit=1000)(handler)
    awrapped = health_guard(ahandler, max_invocations=10)
    assert wrapped is not handler and wrapped.__name__ == "handler" and wrapped.__doc__ == "Doc."
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert wrapped({"x": 3}, None) == 3
    assert inspect.iscoroutinefunction(awrapped)
    assert asyncio.run(awrapped({"x": 4}, None)) == 4


def test_health_guard_refuses_positional_options_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"did you mean health_guard\(fd_limit='50%'\)"):
        health_guard("50%")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match=r"^fd_limit=<str of 4 characters>"):
        health_guard(fd_limit="lots")  # fails where it is written, before any handler


class CountingGuard(HealthGuard):
    """A real guard that records when it checks and what was still registered then."""

    def __init__(self, seen: list[int], open_now: Callable[[], int]) -> None:
        super().__init__(config(fd_limit=1000), platform(runtime_api=None), count_fds=lambda: 5)
        self.seen, self.open_now = seen, open_now

    def check(self, args: tuple[Any, ...]) -> str | None:
        self.seen.append(self.open_now())
        return super().check(args)


class Thing:
    def __init__(self, opened: list[Thing]) -> None:
        self.opened = opened
        opened.append(self)

    def close(self) -> None:
        self.opened.remove(self)


@pytest.mark.parametrize("order", ["health_outside", "managed_outside"])
def test_stacked_decorators_check_once_after_the_scope_closed(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN one env guard shared by both decorators, stacked either way
    opened: list[Thing] = []
    seen: list[int] = []
    guard = CountingGuard(seen, lambda: len(opened))
    monkeypatch.setattr(factory, "_env_guard", guard)
    monkeypatch.setenv("FD_HEALTH_LIMIT", "1000")

    def handler(event: Any, context: Any) -> str:
        register(Thing(opened))
        return "ok"

    if order == "health_outside":
        decorated = health_guard(managed_connection(handler))
    else:
        decorated = managed_connection(health_guard(handler))
    # WHEN it runs twice  THEN the guard checked once per invocation, with nothing open
    assert decorated({}, None) == "ok" and decorated({}, None) == "ok"
    assert seen == [0, 0] and guard.invocations == 2


# -- the decision ------------------------------------------------------------------------


class Probe:
    def __init__(self, value: int) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRecycler:
    def __init__(self, available: bool = True) -> None:
        self._available = available
        self.armed = False

    def available(self) -> bool:
        return self._available

    def arm(self) -> bool:
        self.armed = self._available
        return self._available

    def is_armed(self) -> bool:
        return self.armed

    def disarm(self) -> None:
        self.armed = False


class Rig:
    """A guard with every dependency injected, and what it emitted."""

    def __init__(
        self,
        where: Platform | None = None,
        *,
        fds: int = 10,
        rss: int = 20 << 20,
        rand: float = 0.0,
        available: bool = True,
        **settings: Any,
    ) -> None:
        settings.setdefault("min_lifetime", 0)
        self.fds, self.rss, self.clock = Probe(fds), Probe(rss), Clock()
        self.recycler = FakeRecycler(available)
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.collections = 0
        self.freed_by_gc = 0
        self.guard = HealthGuard(
            config(where=where or platform(), **settings),
            where or platform(),
            count_fds=self.fds,
            read_rss=self.rss,
            clock=self.clock,
            rand=lambda: rand,
            collect=self._collect,
            recycler=self.recycler,
            emit=lambda action, fields, name, emf: self.emitted.append((action, fields)),
        )

    def _collect(self) -> None:
        self.collections += 1
        self.fds.value -= self.freed_by_gc

    def invoke(self, event: Any = None, leak: int = 0, request_id: str = "req-1") -> str | None:
        self.fds.value += leak
        return self.guard.check((event if event is not None else {}, Context(request_id)))


class Context:
    def __init__(self, request_id: str = "req-1") -> None:
        self.aws_request_id = request_id


def test_fd_leak_recycles_once_over_the_limit_after_a_gc() -> None:
    rig = Rig(fd_limit=20, jitter=0)
    assert rig.invoke() is None  # first invocation: baseline 10
    assert rig.guard.baseline == {"fd": 10} and rig.guard.limits["fd"] == 20
    results = [rig.invoke(leak=1) for _ in range(11)]
    assert results == [None] * 10 + ["recycle"]
    assert rig.recycler.armed and rig.collections == 1
    action, fields = rig.emitted[-1]
    assert action == "recycle"
    assert fields["reason"] == "fd" and fields["measured"] == 21 and fields["limit"] == 20
    assert fields["baseline"] == 10 and fields["invocations"] == 12
    assert fields["request_id"] == "req-1" and fields["trigger"] == REQUEST
    assert "Runtime.ExitError" in fields["expect"] and "deferred_by" not in fields
    # A second check in the same invocation (another guard, a per-record call) leaves the
    # armed recycle alone: the post that ends the process comes after it.
    assert rig.invoke(leak=1) is None and rig.recycler.armed


def test_an_armed_recycle_whose_post_never_came_is_said_once_then_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a recycle armed after an invocation, and a runtime whose post never reached
    # the hook (the process is still alive at the next check)
    rig = Rig(fd_limit=20, jitter=0)
    rig.invoke(request_id="req-1")
    rig.invoke(leak=11, request_id="req-2")
    assert rig.recycler.armed
    # WHEN the next invocations end over the limit (past the one-report-a-minute limit)
    rig.clock.now += 61
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        results = [rig.invoke(leak=1, request_id=f"req-{n}") for n in range(3, 6)]
    # THEN one line says the hook was missed, and the guard reports instead of re-arming
    missed = [r for r in caplog.records if "recycle_hook_missed" in r.getMessage()]
    assert len(missed) == 1
    assert results[0] == "report" and not rig.recycler.armed
    assert rig.emitted[-1][1]["deferred_by"] == "no_runtime_hook"


def test_what_gc_frees_is_no_reason_to_recycle() -> None:
    rig = Rig(fd_limit=20, jitter=0)
    rig.invoke()
    rig.freed_by_gc = 5
    assert rig.invoke(leak=11) is None
    assert rig.collections == 1 and not rig.recycler.armed and rig.emitted == []


def test_memory_limit_uses_current_rss() -> None:
    rig = Rig(memory_limit="64MB", jitter=0)
    rig.invoke()
    rig.rss.value = 64 << 20
    assert rig.invoke() is None  # at the limit is not over it
    rig.rss.value += 1
    assert rig.invoke() == "recycle"
    assert rig.emitted[-1][1]["reason"] == "memory"
    assert rig.fds.calls == 0  # only what is configured is measured


def test_max_invocations_needs_no_gc() -> None:
    rig = Rig(max_invocations=3, jitter=0)
    assert [rig.invoke() for _ in range(3)] == [None, None, "recycle"]
    assert rig.collections == 0 and rig.emitted[-1][1]["reason"] == "max_invocations"


def test_jitter_moves_each_limit_towards_the_baseline_by_a_random_share() -> None:
    rig = Rig(fd_limit=110, max_invocations=1000, jitter=0.2, rand=0.5)
    rig.invoke()
    # 10% of the 100 descriptors of headroom, 10% of the invocations
    assert rig.guard.limits == {"fd": 100, "max_invocations": 900}
    assert Rig(fd_limit=110, jitter=0.2, rand=0.0).invoke() is None


def test_jitter_is_drawn_per_environment_after_restore() -> None:
    draws = iter([0.0, 0.9])
    rig = Rig(fd_limit=110, jitter=0.5)
    rig.guard._rand = lambda: next(draws)
    rig.invoke()
    first = rig.guard.limits["fd"]
    rig.clock.now += 500
    rig.guard.restored()  # SnapStart: every restored copy starts here, with its own draw
    assert rig.guard.invocations == 0 and rig.guard.age == 0
    rig.invoke()
    assert (first, rig.guard.limits["fd"]) == (110, 65)


def test_limit_below_baseline_is_disabled_not_a_recycle_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(fds=30, fd_limit=20, jitter=0)
    with caplog.at_level(logging.WARNING, "lambda_conn"):
        assert rig.invoke() is None and rig.invoke(leak=5) is None
    assert rig.guard.limits["fd"] is None and not rig.recycler.armed
    assert [json.loads(r.message)["event"] for r in caplog.records] == [
        "health_limit_below_baseline"
    ]
    rig.fds.value = 922  # the hard ceiling (90% of 1,024) still applies
    assert rig.invoke() == "recycle" and rig.emitted[-1][1]["at_ceiling"]


@pytest.mark.parametrize(
    ("where", "settings", "why"),
    [
        (platform(runtime_api=None), {}, "outside_lambda"),
        (platform(), {"report_only": True}, "report_only"),
        (platform(max_concurrency="8"), {}, "multi_concurrency"),
    ],
)
def test_where_an_exit_is_wrong_the_guard_reports(
    where: Platform, settings: dict[str, Any], why: str
) -> None:
    rig = Rig(where, fd_limit=20, jitter=0, **settings)
    rig.invoke()
    assert rig.invoke(leak=50) == "report"
    assert not rig.recycler.armed
    action, fields = rig.emitted[-1]
    assert action == "report" and fields["deferred_by"] == why and "expect" not in fields
    rig.fds.value = 1000  # not even at the ceiling
    assert rig.invoke() is None and not rig.recycler.armed


def test_without_a_runtime_hook_the_guard_reports() -> None:
    rig = Rig(fd_limit=20, jitter=0, available=False)
    rig.invoke()
    assert rig.invoke(leak=50) == "report"
    assert rig.emitted[-1][1]["deferred_by"] == "no_runtime_hook"


def test_reports_are_throttled_and_each_one_collects_first() -> None:
    rig = Rig(fd_limit=20, jitter=0, report_only=True)
    rig.invoke()
    assert [rig.invoke(leak=11), rig.invoke(), rig.invoke()] == ["report", None, None]
    assert rig.collections == 1
    rig.clock.now += 60
    assert rig.invoke() == "report" and rig.collections == 2


def test_min_lifetime_defers_until_the_environment_is_old_enough() -> None:
    rig = Rig(fd_limit=20, jitter=0, min_lifetime=60)
    rig.invoke()
    assert rig.invoke(leak=20) == "report"
    assert rig.emitted[-1][1]["deferred_by"] == "min_lifetime"
    rig.clock.now += 30
    assert rig.invoke() is None  # still too young, and reported a moment ago
    rig.clock.now += 30
    assert rig.invoke() == "recycle"


def test_hard_ceiling_overrides_min_lifetime() -> None:
    rig = Rig(fd_limit=20, jitter=0, min_lifetime=3600, hard_ceiling=0.5)
    rig.invoke()
    assert rig.invoke(leak=20) == "report"
    rig.fds.value = 513  # over 50% of 1,024
    assert rig.invoke() == "recycle" and rig.emitted[-1][1]["at_ceiling"]


SQS = {"Records": [{"eventSource": "aws:sqs", "messageId": f"m{i}"} for i in range(3)]}


def test_retried_batch_is_reported_and_the_next_request_recycles() -> None:
    # GIVEN the default policy for retrying triggers ("report")
    rig = Rig(fd_limit=20, jitter=0)
    rig.invoke()
    # WHEN an SQS batch leaves the environment over the limit
    assert rig.invoke(SQS, leak=20) == "report"
    fields = rig.emitted[-1][1]
    # THEN it is reported with what identifies the batch, and not recycled
    assert fields["deferred_by"] == "retrying_trigger" and fields["trigger"] == BATCH
    assert fields["event_source"] == "aws:sqs" and fields["records"] == 3
    assert (fields["first_record_id"], fields["last_record_id"]) == ("m0", "m2")
    assert not rig.recycler.armed
    # AND the next synchronous request takes the decision
    assert rig.invoke({"path": "/"}) == "recycle"


def test_retried_batch_recycles_at_the_hard_ceiling_or_by_policy() -> None:
    rig = Rig(fd_limit=20, jitter=0)
    rig.invoke()
    rig.invoke(SQS, leak=20)
    rig.fds.value = 922
    assert rig.invoke(SQS) == "recycle" and rig.emitted[-1][1]["trigger"] == BATCH
    rig = Rig(fd_limit=20, jitter=0, retrying_triggers="recycle")
    rig.invoke()
    assert rig.invoke(SQS, leak=20) == "recycle"


def test_a_broken_probe_never_reaches_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(fd_limit=20)

    def broken() -> int:
        raise OSError("no /proc")

    rig.guard._count_fds = broken
    with caplog.at_level(logging.WARNING, "lambda_conn"):
        assert rig.invoke() is None and rig.invoke() is None
    assert [json.loads(r.message)["event"] for r in caplog.records] == ["health_check_failed"]


def test_outside_lambda_a_real_guard_reports_and_never_exits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the real probes and recycler, no Runtime API, a limit 2 descriptors away
    monkeypatch.setenv("FD_HEALTH_LIMIT", str(probes.count_fds() + 2))
    monkeypatch.setenv("HEALTH_MIN_LIFETIME", "0")
    monkeypatch.setenv("HEALTH_JITTER", "0")
    held: list[int] = []

    def handler(event: Any, context: Any) -> int:
        held.append(os.open(os.devnull, os.O_RDONLY))
        return len(held)

    try:
        with caplog.at_level(logging.INFO, "lambda_conn"):
            guarded = health_guard(handler)
            # WHEN it leaks past the limit
            assert [guarded({}, None) for _ in range(3)] == [1, 2, 3]
    finally:
        for fd in held:
            os.close(fd)
    # THEN it says so, and the process is still here with nothing armed
    events = [json.loads(r.message) for r in caplog.records]
    assert [e["event"] for e in events] == ["health_guard_on", "health_limit_exceeded"]
    assert events[-1]["deferred_by"] == "outside_lambda" and not recycle.is_armed()


# -- triggers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "kind", "source", "first"),
    [
        (SQS, BATCH, "aws:sqs", "m0"),
        (
            {"Records": [{"eventSource": "aws:kinesis", "eventID": "s:1"}]},
            BATCH,
            "aws:kinesis",
            "s:1",
        ),
        (
            {"Records": [{"eventSource": "aws:dynamodb", "eventID": "d1"}]},
            BATCH,
            "aws:dynamodb",
            "d1",
        ),
        (
            {"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "n1"}}]},
            ASYNC,
            "aws:sns",
            "n1",
        ),
        ({"Records": [{"eventSource": "aws:s3", "s3": {}}]}, ASYNC, "aws:s3", None),
        ({"Records": [{"eventSource": "aws:unknown"}]}, ASYNC, "aws:unknown", None),
        ({"eventSource": "aws:kafka", "records": {"t-0": [{}, {}]}}, BATCH, "aws:kafka", None),
        ({"eventSource": "aws:mq", "messages": [{}]}, BATCH, "aws:mq", None),
        ({"source": "aws.ec2", "detail-type": "x", "id": "e1"}, ASYNC, "aws:events", "e1"),
        ({"awslogs": {"data": "..."}}, ASYNC, "aws:logs", None),
        ({"httpMethod": "GET", "path": "/"}, REQUEST, None, None),
        ({"Records": []}, REQUEST, None, None),
        ([1, 2], REQUEST, None, None),
        (None, REQUEST, None, None),
    ],
)
def test_event_shapes(event: Any, kind: str, source: str | None, first: str | None) -> None:
    trigger = classify(event)
    assert (trigger.kind, trigger.source, trigger.first_id) == (kind, source, first)
    assert trigger.retrying == (kind != REQUEST)


def test_kafka_batch_counts_records_across_partitions() -> None:
    event = {"eventSource": "aws:kafka", "records": {"a-0": [{}, {}], "a-1": [{}]}}
    assert classify(event).records == 3


# -- report, recycle hook, SIGTERM, probes -----------------------------------------------


def test_emf_record_is_a_count_metric_with_low_cardinality_dimensions() -> None:
    fields = {"reason": "fd", "request_id": "r", "measured": 9, "limit": 8, "trigger": BATCH}

    def record_of(action: str, function_name: str | None, now_ms: int) -> dict[str, Any]:
        from lambda_conn._metrics import emf_record

        dimensions, properties = report.metric_parts(action, fields, function_name)
        return emf_record(
            report.METRIC,
            1,
            dimensions=dimensions,
            properties=properties,
            namespace=report.NAMESPACE,
            timestamp_ms=now_ms,
        )

    record = record_of("recycle", "fn", 1234)
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert record["_aws"]["Timestamp"] == 1234
    assert directive["Dimensions"] == [["FunctionName", "Action"]]
    assert directive["Metrics"] == [{"Name": "HealthLimitExceeded", "Unit": "Count"}]
    assert record["HealthLimitExceeded"] == 1 and record["FunctionName"] == "fn"
    assert record["RequestId"] == "r" and record["Trigger"] == BATCH
    assert record_of("report", None, 0)["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["Action"]
    ]


class Exited(BaseException):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(ending, "_exit", fake_exit)
    return codes


def test_post_hook_exits_only_after_the_original_post_returned(exits: list[int]) -> None:
    calls: list[str] = []

    class Client:
        def post_invocation_result(self, invoke_id: str, data: bytes, *rest: Any) -> None:
            calls.append(f"result {invoke_id}")

        def post_invocation_error(self, invoke_id: str, *rest: Any) -> None:
            if invoke_id == "fail":
                raise ConnectionError("post failed")
            calls.append(f"error {invoke_id}")

    recycle.install(Client)
    recycle.install(Client)  # idempotent: one wrapper, not two
    client = Client()
    client.post_invocation_result("a", b"{}")  # not armed: nothing happens
    recycle._armed = True
    with pytest.raises(ConnectionError):
        client.post_invocation_error("fail", "{}", "")  # not delivered: no exit
    assert exits == []
    with pytest.raises(Exited):
        client.post_invocation_error("b", "{}", "")
    assert calls == ["result a", "error b"] and exits == [0]
    assert Client.post_invocation_result.__name__ == "post_invocation_result"


def test_recycle_hooks_only_a_running_awslambdaric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, recycle.CLIENT_MODULE, raising=False)
    assert not recycle.available() and not recycle.arm() and not recycle.is_armed()


def test_sigterm_closes_then_chains_then_exits(
    exits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []

    def close_connections(deadline: float) -> bool:
        steps.append(f"close within {deadline}s")
        return True

    monkeypatch.setattr(ending, "close_connections", close_connections)
    monkeypatch.setattr(shutdown, "_previous", lambda signum, frame: steps.append("previous"))
    monkeypatch.setattr(shutdown, "_handling", False)
    with pytest.raises(Exited):
        shutdown.on_sigterm(signal.SIGTERM, None)
    assert steps == ["close within 0.3s", "previous"] and exits == [0]


def test_sigterm_exit_code_comes_from_a_chained_sys_exit(
    exits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def previous(signum: int, frame: Any) -> None:
        sys.exit(3)

    monkeypatch.setattr(ending, "close_connections", lambda deadline: True)
    monkeypatch.setattr(shutdown, "_previous", previous)
    monkeypatch.setattr(shutdown, "_handling", False)
    with pytest.raises(Exited):
        shutdown.on_sigterm(signal.SIGTERM, None)
    assert exits == [3]


def test_close_connections_gives_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from lambda_conn import _reuse

    release = threading.Event()
    monkeypatch.setattr(_reuse, "close_reused_connections", lambda: release.wait(5))
    try:
        assert ending.close_connections(0.05) is False
    finally:
        release.set()
    monkeypatch.setattr(_reuse, "close_reused_connections", lambda: 0)
    assert ending.close_connections(1.0) is True


class FakeExtensionsApi:
    """Just enough of the Extensions API to answer register and event/next."""

    def __init__(self, register_status: int) -> None:
        import http.server

        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.next_called = threading.Event()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None: ...

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.requests.append(("POST", self.path, dict(self.headers), body))
                if register_status == 200:
                    self._reply(200, {"Lambda-Extension-Identifier": "ext-1"}, b"{}")
                else:
                    error = {"errorType": "Extension.RegistrationClosed", "errorMessage": "x"}
                    self._reply(register_status, {}, json.dumps(error).encode())

            def do_GET(self) -> None:
                api.requests.append(("GET", self.path, dict(self.headers), b""))
                api.next_called.set()
                api.release.wait(5)  # blocks like /event/next with events []
                self._reply(500, {}, b"")

        self.release = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_noop_extension_registers_for_no_event_and_waits_in_next() -> None:
    from lambda_conn._guard import extension

    api = FakeExtensionsApi(200)
    try:
        assert extension.register(api.address) == "ext-1"
        assert api.next_called.wait(5)
        method, path, headers, body = api.requests[0]
        assert (method, path) == ("POST", "/2020-01-01/extension/register")
        assert headers["Lambda-Extension-Name"] == "lambda_conn"
        assert json.loads(body) == {"events": []}
        method, path, headers, _ = api.requests[1]
        assert (method, path) == ("GET", "/2020-01-01/extension/event/next")
        assert headers["Lambda-Extension-Identifier"] == "ext-1"
    finally:
        api.close()
        for thread in threading.enumerate():  # it gives up once the API is gone
            if thread.name == "lambda_conn-extension":
                thread.join(5)


def test_refused_or_absent_registration_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    from lambda_conn._guard import extension

    api = FakeExtensionsApi(403)
    try:
        with caplog.at_level(logging.INFO, "lambda_conn"):
            assert extension.register(api.address) is None
            assert extension.register("127.0.0.1:1") is None  # no Runtime API there
    finally:
        api.close()
    events = [json.loads(r.message) for r in caplog.records]
    assert [e["event"] for e in events] == ["extension_not_registered"] * 2
    assert events[0]["status"] == 403 and events[0]["reason"] == "Extension.RegistrationClosed"


def test_graceful_shutdown_is_only_installed_under_a_runtime_api() -> None:
    assert shutdown.install(platform(runtime_api=None)) is False
    assert signal.getsignal(signal.SIGTERM) is not shutdown.on_sigterm


def test_a_cheap_fd_bound_under_the_threshold_skips_the_count() -> None:
    rig = Rig(fd_limit=300, jitter=0)
    bound = Probe(256)  # FDSize: the fd table's size, which the count cannot exceed
    rig.guard._fd_upper_bound = bound
    rig.invoke()  # the baseline is always counted
    calls = rig.fds.calls
    rig.invoke(leak=200)
    assert rig.fds.calls == calls and bound.calls == 1  # 256 <= 300: no count needed
    bound.value = 512
    assert rig.invoke(leak=100) == "recycle"  # 310 > 300, counted because 512 > 300
    assert rig.fds.calls == calls + 2  # before and after the gc


def test_fd_counter_agrees_with_a_listing_in_both_modes() -> None:
    counter = probes.FdCounter()
    listed = len(os.listdir("/proc/self/fd")) - 1
    assert counter() == listed
    fallback = probes.FdCounter()
    fallback._use_stat = False  # a kernel before 6.2: st_size is 0
    assert fallback() == listed
    bound = fallback.upper_bound()
    fallback._status.close()
    assert bound is not None and bound >= listed
    if counter._use_stat:  # Linux >= 6.2 here: the exact count is the cheap one
        assert counter.upper_bound() is None


def test_snapstart_closes_reused_connections_and_reopens_them_after_restore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a SnapStart Init with a reused connection opened during Init and a guard
    import snapshot_restore_py  # type: ignore[import-untyped]
    from awslambdaric import lambda_runtime_hooks_runner

    from lambda_conn._guard import snapstart
    from lambda_conn._reuse import ReusedConnection

    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    monkeypatch.setattr(snapstart, "_installed", False)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    monkeypatch.setenv("HEALTH_GRACEFUL_SHUTDOWN", "off")  # no SIGTERM handler in pytest
    opened: list[Thing] = []
    db = ReusedConnection(lambda: Thing(opened), name="db")
    first = db.get()
    guard = factory.build({"max_invocations": 5})
    assert guard is not None
    guard.invocations, guard.started = 3, True
    # WHEN awslambdaric runs the hooks around the snapshot
    lambda_runtime_hooks_runner.run_before_snapshot()
    # THEN nothing is open in the snapshot
    assert opened == [] and not db.connected
    lambda_runtime_hooks_runner.run_after_restore()
    # AND after restore the connection is open again, a new one, and the guard starts over
    assert db.connected and opened == [db.get()] and opened[0] is not first
    assert (guard.invocations, guard.started) == (0, False)
    db.close()


def test_probes_count_fds_and_read_current_rss() -> None:
    before = probes.count_fds()
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert probes.count_fds() == before + 1
    finally:
        os.close(fd)
    reader = probes.RssReader()
    try:
        first = reader()
        block = b"\x01" * (32 << 20)
        assert reader() - first > 16 << 20
        del block
    finally:
        reader.close()
    assert probes.fd_soft_limit() > 0


def test_event_and_context_are_found_for_functions_and_methods() -> None:
    from lambda_conn._guard.guard import event_and_context

    class Context:
        aws_request_id = "req-1"

    sqs = {"Records": [{"eventSource": "aws:sqs"}]}
    context = Context()
    handler_self = object()
    assert event_and_context((sqs, context)) == (sqs, context)
    assert event_and_context((handler_self, sqs, context)) == (sqs, context)  # a method
    assert event_and_context((handler_self, sqs, None)) == (sqs, None)
    assert event_and_context((sqs,)) == (sqs, None)
