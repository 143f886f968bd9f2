"""Extensions API rules and the shutdown signal that depends on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambda_conn.local._extensions import ExtensionRegistry, RegistrationError

pytestmark = pytest.mark.timeout(60)

EXTENSION = """
    import json, os, signal, threading, time, urllib.error, urllib.request

    API = os.environ["AWS_LAMBDA_RUNTIME_API"]

    def register(name, events):
        request = urllib.request.Request(
            f"http://{API}/2020-01-01/extension/register",
            data=json.dumps({"events": events}).encode(),
            headers={"Lambda-Extension-Name": name},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers["Lambda-Extension-Identifier"]
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["errorType"]

    def next_event(identifier):
        request = urllib.request.Request(
            f"http://{API}/2020-01-01/extension/event/next",
            headers={"Lambda-Extension-Identifier": identifier},
        )
        with urllib.request.urlopen(request) as response:  # no timeout: blocks until an event
            return json.loads(response.read())

    EVENTS = []

    def loop(identifier, delay):
        time.sleep(delay)
        while True:
            EVENTS.append(next_event(identifier))

    DONE = []

    def slow_loop(identifier):
        while True:  # 0.3 s of work per INVOKE, after the runtime has answered
            next_event(identifier)
            time.sleep(0.3)
            DONE.append(1)

    MODE = os.environ.get("EXTENSION_MODE", "none")
    AT_IMPORT = []
    if MODE == "slow-invoke":
        STATUS, IDENT = register("slow-worker", ["INVOKE"])
        threading.Thread(target=slow_loop, args=(IDENT,), daemon=True).start()
    elif MODE in ("noop", "invoke"):
        STATUS, IDENT = register("lambda-conn-test", [] if MODE == "noop" else ["INVOKE"])
        AT_IMPORT.append([STATUS, IDENT])
        delay = float(os.environ.get("FIRST_NEXT_DELAY", "0"))
        threading.Thread(target=loop, args=(IDENT, delay), daemon=True).start()
    elif MODE == "shutdown":
        AT_IMPORT.append(register("wants-shutdown", ["SHUTDOWN"]))
    elif MODE == "never-next":
        AT_IMPORT.append(register("stalls-init", []))

    def on_sigterm(signum, frame):
        with open(os.environ["MARKER"], "w") as fh:
            fh.write("sigterm")
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)

    def handler(event, context):
        return {
            "at_import": AT_IMPORT,
            "events": [e["eventType"] for e in EVENTS],
            "done": len(DONE),
        }

    def late_register(event, context):
        return register("too-late", [])

    def sleepy(event, context):
        time.sleep(5)
"""

# SIGTERM reaches Python code in awslambdaric only where /next is polled from a thread
# (AWS_EXECUTION_ENV python3.12 and newer); see test_sigterm_cannot_reach_python_*.
THREAD_POLLING = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}


def _env(tmp_path: Path, mode: str, **extra: str) -> dict[str, str]:
    return {"EXTENSION_MODE": mode, "MARKER": str(tmp_path / "marker"), **extra}


def test_sigterm_is_sent_when_an_extension_is_registered(write_handler, make_lambda, tmp_path):
    # GIVEN a handler module that registers an internal extension for no events
    write_handler("app", EXTENSION)
    fn = make_lambda("app.handler", env=_env(tmp_path, "noop", **THREAD_POLLING))
    assert fn.invoke().response["at_import"][0][0] == 200
    # WHEN the environment is shut down
    shutdown = fn.shutdown()
    # THEN the runtime got SIGTERM, its handler ran, and it exited within the grace period
    assert shutdown is not None and shutdown.sigterm_sent and shutdown.extensions == 1
    assert (tmp_path / "marker").read_text() == "sigterm"
    assert shutdown.exited_within_grace and shutdown.exit_status == 0


def test_timeout_reset_goes_through_sigterm_when_an_extension_is_registered(
    write_handler, make_lambda, tmp_path
):
    # A reset after a timeout uses the same shutdown sequence as a spin-down.
    write_handler("app", EXTENSION)
    fn = make_lambda("app.sleepy", timeout_s=1.0, env=_env(tmp_path, "noop", **THREAD_POLLING))
    record = fn.invoke()
    assert record.outcome == "timeout" and record.sigterm_sent is True
    assert (tmp_path / "marker").read_text() == "sigterm"
    assert record.exit_status == 0  # the SIGTERM handler exited before the SIGKILL


def test_no_extension_means_sigkill_straight_away(write_handler, make_lambda, tmp_path):
    write_handler("app", EXTENSION)
    fn = make_lambda("app.handler", env=_env(tmp_path, "none", **THREAD_POLLING))
    assert fn.invoke().outcome == "ok"
    shutdown = fn.shutdown()
    assert shutdown is not None and not shutdown.sigterm_sent
    assert shutdown.exit_status == -9
    assert not (tmp_path / "marker").exists()


def test_sigterm_cannot_reach_python_while_awslambdaric_blocks_in_native_next(
    write_handler, make_lambda, tmp_path
):
    # awslambdaric before python3.12 calls the native /next on the main thread: the
    # signal arrives, but the Python handler cannot run before SIGKILL.
    write_handler("app", EXTENSION)
    env = _env(tmp_path, "noop", AWS_EXECUTION_ENV="AWS_Lambda_python3.11")
    fn = make_lambda("app.handler", env=env)
    fn.invoke()
    shutdown = fn.shutdown()
    assert shutdown is not None and shutdown.sigterm_sent
    assert not shutdown.exited_within_grace and shutdown.exit_status == -9
    assert not (tmp_path / "marker").exists()
    assert 450 <= shutdown.duration_ms < 2000  # the 500 ms grace, then SIGKILL


def test_registration_is_closed_after_the_first_next(write_handler, make_lambda, tmp_path):
    write_handler("app", EXTENSION)
    fn = make_lambda("app.late_register", env=_env(tmp_path, "none"))
    assert fn.invoke().response == [403, "Extension.RegistrationClosed"]


def test_internal_extension_may_not_register_for_shutdown(write_handler, make_lambda, tmp_path):
    write_handler("app", EXTENSION)
    fn = make_lambda("app.handler", env=_env(tmp_path, "shutdown"))
    assert fn.invoke().response["at_import"] == [[403, "Extension.InvalidEventType"]]


def test_invoke_events_reach_subscribed_extensions(write_handler, make_lambda, tmp_path):
    write_handler("app", EXTENSION)
    fn = make_lambda("app.handler", env=_env(tmp_path, "invoke"))
    # an invoke ends only once the extension asked for the next event, so by the time
    # the k-th handler runs, the extension has processed at least k - 1 INVOKE events
    responses = [fn.invoke().response["events"] for _ in range(3)]
    assert len(responses[1]) >= 1 and len(responses[2]) >= 2
    assert set(responses[2]) == {"INVOKE"}


def test_the_invoke_ends_and_freezes_only_when_every_extension_is_done(
    write_handler, make_lambda, tmp_path
):
    # GIVEN an extension that works 0.3 s on each INVOKE after the runtime has answered
    write_handler("app", EXTENSION)
    fn = make_lambda("app.handler", env=_env(tmp_path, "slow-invoke"))
    records = [fn.invoke() for _ in range(4)]
    # THEN the caller had each response at once, but the invoke (and the freeze) waited
    # for the extension: every earlier INVOKE was fully processed before the next one
    assert [r.response["done"] for r in records] == [0, 1, 2, 3]
    for record in records:
        assert record.outcome == "ok"
        assert record.response_ms is not None
        assert record.duration_ms >= 290 and record.response_ms < record.duration_ms - 200


def test_a_soak_hands_the_next_event_over_only_when_every_extension_is_done(
    write_handler, tmp_path
):
    # GIVEN the same extension, soaked: each next event is ready before the last ends
    from lambda_conn.local import soak

    root = write_handler("app", EXTENSION)
    report = soak(
        "app.handler", 3, handler_dir=root, env=_env(tmp_path, "slow-invoke"), keep_responses=True
    )
    # THEN the runtime got each next event only after the extension finished the last
    assert [r.response["done"] for r in report.records] == [0, 1, 2]
    assert all(r.duration_ms >= 290 for r in report.records)


def test_init_waits_for_every_extension_to_call_event_next(write_handler, make_lambda, tmp_path):
    write_handler("app", EXTENSION)
    env = _env(tmp_path, "noop", FIRST_NEXT_DELAY="0.6")
    record = make_lambda("app.handler", env=env).invoke()
    assert record.outcome == "ok"
    assert record.init_duration_ms is not None and record.init_duration_ms >= 600


def test_extension_that_never_calls_event_next_stalls_init(write_handler, make_lambda, tmp_path):
    write_handler("app", EXTENSION)
    fn = make_lambda("app.handler", env=_env(tmp_path, "never-next"), init_timeout_s=1.0)
    record = fn.invoke()
    assert record.outcome == "timeout" and record.error_type == "Sandbox.Timedout"
    assert record.reset_reason == "init_error"


def test_registry_rules():
    registry = ExtensionRegistry()
    registry.register("a", [])
    with pytest.raises(RegistrationError) as dup:
        registry.register("a", ["INVOKE"])
    assert dup.value.error_type == "Extension.InvalidExtensionState"
    for i in range(9):
        registry.register(f"x{i}", ["INVOKE"])
    with pytest.raises(RegistrationError) as many:
        registry.register("eleventh", [])
    assert many.value.error_type == "Extension.TooManyExtensions"
    with pytest.raises(RegistrationError) as bad:
        ExtensionRegistry().register("b", ["NOPE"])
    assert bad.value.error_type == "Extension.InvalidEventType"
    closed = ExtensionRegistry()
    closed.close()
    with pytest.raises(RegistrationError) as late:
        closed.register("c", [])
    assert late.value.error_type == "Extension.RegistrationClosed"
