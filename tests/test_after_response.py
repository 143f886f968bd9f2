"""``lambda_conn._after_response``: work run once the runtime has posted the response.

awslambdaric's client classes cannot post without a Runtime API, so stand-ins with the
same two methods are put where awslambdaric's module would be; the real ones are exercised
in tests/local/test_local_release_after_response.py (``LambdaRuntimeClient``) and
tests/local/test_local_release_multi_concurrent.py (``LambdaMultiConcurrentRuntimeClient``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from collections.abc import Iterator
from typing import Any, ClassVar

import pymysql
import pytest

from lambda_conn import _after_response, managed_connection, reused_connection
from lambda_conn._guard import ending, recycle


class Exited(BaseException):
    pass


class Client:
    """Stands in for awslambdaric's LambdaRuntimeClient: records what it posted."""

    posted: ClassVar[list[str]] = []

    def post_invocation_result(self, invoke_id: str, data: bytes, *rest: Any) -> None:
        if invoke_id == "fail":
            raise ConnectionError("post failed: password=hunter2")
        self.posted.append(f"result {invoke_id}")

    def post_invocation_error(self, invoke_id: str, *rest: Any) -> None:
        self.posted.append(f"error {invoke_id}")


class MultiClient(Client):
    """Stands in for LambdaMultiConcurrentRuntimeClient: a failed post is logged, not raised."""

    def post_invocation_result(self, invoke_id: str, data: bytes, *rest: Any) -> None:
        if invoke_id == "fail":
            self.posted.append("failed fail")  # handle_exception: logged, and returns
            return
        self.posted.append(f"result {invoke_id}")


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Client]]:
    """The stand-ins, as if awslambdaric ran us in the standard mode (fresh classes per
    test: unwrapped); ``module.LambdaMultiConcurrentRuntimeClient`` is the other one."""
    cls = type("LambdaRuntimeClient", (Client,), {"posted": []})
    module = types.ModuleType(_after_response.CLIENT_MODULE)
    module.LambdaRuntimeClient = cls  # type: ignore[attr-defined]
    module.LambdaMultiConcurrentRuntimeClient = type(  # type: ignore[attr-defined]
        "LambdaMultiConcurrentRuntimeClient", (MultiClient,), {"posted": []}
    )
    monkeypatch.setitem(sys.modules, _after_response.CLIENT_MODULE, module)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1")
    monkeypatch.delenv("AWS_LAMBDA_MAX_CONCURRENCY", raising=False)
    yield cls
    _after_response._pending.clear()
    recycle.disarm()


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(ending, "_exit", fake_exit)
    return codes


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [r for r in records if r["event"] == name]


def test_hooks_run_after_the_post_in_order_and_a_failing_one_stops_nothing(
    runtime: type[Client], exits: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    steps: list[str] = []

    def first() -> None:
        steps.append(f"first, after {runtime.posted}")

    def broken() -> None:
        raise RuntimeError("secret=hunter2")

    def third() -> None:
        steps.append("third")

    # GIVEN a recycle armed, then work deferred (the exit must still come after the work)
    assert recycle.arm()
    for hook in (first, broken, third):
        assert _after_response.defer(hook)
    assert _after_response.defer(first)  # already pending: not twice
    assert _after_response.pending() == 3
    # WHEN the runtime posts the response
    with caplog.at_level(logging.WARNING, logger="lambda_conn"), pytest.raises(Exited):
        runtime().post_invocation_result("a", b"{}")
    # THEN the work ran after the post, in order, past the broken hook, and the exit last
    assert steps == ["first, after ['result a']", "third"] and exits == [0]
    [failed] = events(caplog, "after_response_hook_failed")
    assert failed["error"] == "RuntimeError" and failed["hook"].endswith("broken")
    assert "hunter2" not in caplog.text  # the type name only, never the message
    assert _after_response.pending() == 0


def test_work_runs_once_then_the_next_post_runs_only_what_came_since(
    runtime: type[Client],
) -> None:
    steps: list[str] = []
    _after_response.defer(lambda: steps.append("one"))
    runtime().post_invocation_error("a", "{}", "")
    runtime().post_invocation_result("b", b"{}")  # nothing pending: nothing runs
    _after_response.defer(lambda: steps.append("two"))
    runtime().post_invocation_result("c", b"{}")
    assert steps == ["one", "two"]
    assert runtime.posted == ["error a", "result b", "result c"]


def test_a_post_that_fails_drops_the_work_and_raises_into_the_runtime(
    runtime: type[Client], exits: list[int]
) -> None:
    steps: list[str] = []
    recycle.arm()
    _after_response.defer(lambda: steps.append("dropped"))
    with pytest.raises(ConnectionError):
        runtime().post_invocation_result("fail", b"{}")
    # not delivered: neither the work nor the exit, and nothing left pending
    assert steps == [] and exits == [] and _after_response.pending() == 0
    recycle.disarm()
    _after_response.defer(lambda: steps.append("next"))
    runtime().post_invocation_result("b", b"{}")
    assert steps == ["next"]


def test_install_is_idempotent(runtime: type[Client]) -> None:
    _after_response.install(runtime)
    wrapped = runtime.post_invocation_result
    _after_response.install(runtime)
    recycle.install(runtime)
    assert runtime.post_invocation_result is wrapped
    assert wrapped.__name__ == "post_invocation_result"
    steps: list[str] = []
    _after_response.defer(lambda: steps.append("once"))
    runtime().post_invocation_result("a", b"{}")
    assert steps == ["once"]  # one wrapper, so one run


def test_nothing_is_deferred_unless_awslambdaric_posts_here(
    runtime: type[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sys.modules[_after_response.CLIENT_MODULE]
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "4")
    monkeypatch.delattr(module, "LambdaMultiConcurrentRuntimeClient")  # an older awslambdaric
    assert not _after_response.defer(print)  # the standard class is there, but never posts
    monkeypatch.delenv("AWS_LAMBDA_MAX_CONCURRENCY")
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")  # a test process that imported it
    assert not _after_response.defer(print)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1")
    monkeypatch.delitem(sys.modules, _after_response.CLIENT_MODULE)
    assert not _after_response.defer(print)
    assert _after_response.pending() == 0


# -- multi-concurrent mode: each worker posts with LambdaMultiConcurrentRuntimeClient -----


def _multi(runtime: type[Client]) -> type[Client]:
    """The fixture's LambdaMultiConcurrentRuntimeClient stand-in."""
    module = sys.modules[_after_response.CLIENT_MODULE]
    cls: type[Client] = module.LambdaMultiConcurrentRuntimeClient
    return cls


@pytest.mark.parametrize("max_concurrency", [None, "2", ""])
def test_only_the_class_that_posts_in_this_mode_is_wrapped(
    runtime: type[Client], monkeypatch: pytest.MonkeyPatch, max_concurrency: str | None
) -> None:
    multi = _multi(runtime)
    unwrapped = {cls: cls.post_invocation_result for cls in (runtime, multi)}
    if max_concurrency is not None:  # set at all, even empty: awslambdaric's own test
        monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", max_concurrency)
    posting, idle = (runtime, multi) if max_concurrency is None else (multi, runtime)
    assert _after_response.posting_client() is posting
    steps: list[str] = []
    assert _after_response.defer(lambda: steps.append(f"after {posting.posted}"))
    assert posting.post_invocation_result is not unwrapped[posting]
    assert idle.post_invocation_result is unwrapped[idle]  # loaded, but never posts here
    posting().post_invocation_result("a", b"{}")
    assert steps == ["after ['result a']"]


def test_a_worker_post_that_failed_without_raising_still_runs_the_work(
    runtime: type[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    # awslambdaric logs a multi-concurrent worker's failed post and goes on to the next
    # event: the work (a release sample) still runs, before that next /next
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "2")
    multi = _multi(runtime)
    steps: list[str] = []
    assert _after_response.defer(lambda: steps.append(f"after {multi.posted}"))
    multi().post_invocation_result("fail", b"{}")
    assert steps == ["after ['failed fail']"] and _after_response.pending() == 0


def test_a_worker_post_never_runs_the_recycle_exit(
    runtime: type[Client], monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "2")
    multi = _multi(runtime)
    # the guard never arms there; and arm itself refuses
    assert not recycle.available() and not recycle.arm() and not recycle.is_armed()
    # even with the exit registered and armed (the standard client's hook installed too)
    recycle.install(runtime)
    recycle._armed = True
    steps: list[str] = []
    assert _after_response.defer(lambda: steps.append("released"))
    multi().post_invocation_result("a", b"{}")
    multi().post_invocation_error("b", "{}", "")
    assert steps == ["released"] and exits == []  # the worker lives on


def test_a_forked_worker_starts_with_nothing_pending(runtime: type[Client]) -> None:
    # deferred in the parent (as if it had served an invocation before forking)
    assert _after_response.defer(print)
    pid = os.fork()
    if pid == 0:  # the worker: the parent's post is not its own
        os._exit(0 if _after_response.pending() == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _after_response.pending() == 1  # the parent's is still there for its post


# -- the reused connection's release, deferred -------------------------------------------


def _reused(mariadb: Any) -> Any:
    # any session of the 2,000 the session server allows puts it above the threshold
    return reused_connection(
        lambda: pymysql.connect(**mariadb.connect_kwargs()),
        name="db",
        release_above=0.0001,
        sample_every=0.001,
    )


def test_the_release_waits_for_the_post_then_closes_the_kept_connection(
    runtime: type[Client], mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = _reused(mariadb)

    @managed_connection
    def handler(event: object, context: object) -> int:
        with db().cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            return int(cur.fetchone()[0])

    try:
        with caplog.at_level(logging.INFO, logger="lambda_conn"):
            session = handler({}, None)
            # the invocation ended: not sampled yet, still kept
            assert db.connected and _after_response.pending() == 1
            assert events(caplog, "reused_connection_released") == []
            runtime().post_invocation_result("a", b"{}")
        # after the post: sampled, released, gone on the server's side
        assert not db.connected
        assert mariadb.wait_session_gone(session)
        [released] = events(caplog, "reused_connection_released")
        assert released["name"] == "db" and released["share"] > released["threshold"]
    finally:
        db.close()


def test_a_connection_taken_again_before_the_post_is_left_alone(
    runtime: type[Client], mariadb: Any
) -> None:
    db = _reused(mariadb)
    try:

        @managed_connection
        def handler(event: object, context: object) -> None:
            db()
            if event == "again":
                runtime().post_invocation_result("a", b"{}")  # the last one's post, now

        handler("first", None)
        kept = db._conn
        handler("again", None)  # took it before the post: the deferred release did nothing
        assert db.connected and db._conn is kept
    finally:
        db.close()


def test_a_deferred_release_that_never_ran_makes_the_next_one_synchronous(
    runtime: type[Client], mariadb: Any
) -> None:
    db = _reused(mariadb)

    @managed_connection
    def handler(event: object, context: object) -> None:
        db()

    try:
        handler({}, None)
        assert db.connected  # deferred; the post never reaches the hook
        handler({}, None)  # the end of this one samples now
        assert not db.connected
    finally:
        db.close()
