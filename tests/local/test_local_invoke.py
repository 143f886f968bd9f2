"""The invoke cycle under the real awslambdaric: results, errors, environment, limits."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from lambda_conn.local import LocalLambda

pytestmark = pytest.mark.timeout(60)

ECHO = """
    import os, resource

    def handler(event, context):
        return {
            "event": event,
            "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "function_name": context.function_name,
            "memory_limit": context.memory_limit_in_mb,
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "env": {k: v for k, v in os.environ.items() if k != "PATH"},
        }

    def fail(event, context):
        raise KeyError("missing-" + str(event))
"""


def test_result_reaches_the_caller(write_handler, make_lambda):
    # GIVEN a handler that echoes its event and context
    root = write_handler("app", ECHO)
    fn = make_lambda("app.handler", timeout_s=3.0)
    # WHEN it is invoked twice
    first = fn.invoke({"event": 1})
    second = fn.invoke([2])
    # THEN the decoded responses carry the event and the request id of each invoke
    assert first.outcome == "ok" and first.error_type is None
    assert first.response["event"] == {"event": 1}
    assert first.response["request_id"] == first.request_id
    assert second.response["event"] == [2]
    assert 0 < first.response["remaining_ms"] <= 3000
    assert first.response["cwd"] == str(root)
    # the first invoke started the environment, the second reused it
    assert first.cold_start and first.init_duration_ms is not None
    assert not second.cold_start and second.init_duration_ms is None
    assert first.response["pid"] == second.response["pid"]
    assert fn.records == [first, second]
    assert second.fd_count is not None and second.fd_count > 0
    assert second.rss_bytes is not None and second.rss_bytes > 1_000_000


def test_lambda_form_and_colon_form_name_the_same_handler(write_handler, make_lambda):
    write_handler("app", ECHO)
    assert make_lambda("app:handler").invoke(1).response["event"] == 1


def test_standard_lambda_environment(write_handler, make_lambda):
    root = write_handler("app", ECHO)
    fn = make_lambda("app.handler", memory_mb=256, env={"MY_SETTING": "x"}, function_name="f1")
    env = fn.invoke().response["env"]
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "f1"
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == str(root)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(root)
    assert env["TZ"] == ":UTC"
    assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"]
    for key in (
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
    ):
        assert env[key]
    assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    assert env["MY_SETTING"] == "x"


def test_descriptor_limit_is_1024_soft_and_hard_inside_the_handler(write_handler, make_lambda):
    # GIVEN a test process whose own limit is not 1,024 (the root conftest raises it)
    write_handler("app", ECHO)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) != (1024, 1024)
    # THEN the runtime process has Lambda's limit
    assert make_lambda("app.handler").invoke().response["nofile"] == [1024, 1024]


def test_function_error_has_type_message_and_stack_trace(write_handler, make_lambda):
    root = write_handler("app", ECHO)
    fn = make_lambda("app.fail")
    record = fn.invoke("x")
    assert record.outcome == "function_error"
    assert record.error_type == "KeyError"
    assert record.error_message == "'missing-x'"
    assert record.stack_trace is not None
    trace = "".join(record.stack_trace)
    assert str(root / "app.py") in trace and "in fail" in trace
    assert record.response["errorType"] == "KeyError"
    # a function error does not reset the environment
    assert record.reset_reason is None
    assert not fn.invoke("y").cold_start


def test_import_error_fails_init_and_the_next_invoke_retries_it(write_handler, make_lambda):
    write_handler("app", ECHO)
    fn = make_lambda("nosuchmodule.handler")
    record = fn.invoke()
    assert record.outcome == "function_error"
    assert record.error_type == "Runtime.ImportModuleError"
    assert "nosuchmodule" in (record.error_message or "")
    assert record.reset_reason == "init_error" and record.cold_start
    assert fn.invoke().cold_start


def test_runtime_process_group_is_gone_after_close(write_handler, tmp_path):
    write_handler("app", ECHO)
    with LocalLambda("app.handler", handler_dir=tmp_path) as fn:
        pid = fn.invoke().response["pid"]
        os.kill(pid, 0)  # alive (frozen) while the environment exists
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        fn.invoke()


def test_runtime_dies_with_a_supervisor_that_exits_abruptly(write_handler, tmp_path):
    # GIVEN a supervisor process whose runtime is frozen between invocations
    write_handler("app", ECHO)
    script = (
        "import os, subprocess, sys\n"
        "from lambda_conn.local import LocalLambda\n"
        "fn = LocalLambda('app.handler', handler_dir=sys.argv[1], output=subprocess.DEVNULL)\n"
        "print(fn.invoke().response['pid'], flush=True)\n"
        "os._exit(0)  # no close(), no atexit: as if it were killed\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(out.stdout)
    # THEN the runtime does not outlive it (stopped for ever, or spinning)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != b"Z"  # a zombie is dead, waiting for init to reap it


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"memory_mb": 64}, "memory_mb=64 .* from 128 to 10240"),
        ({"memory_mb": 20_000}, "memory_mb=20000"),
        ({"timeout_s": 0}, "timeout_s=0 .* more than 0"),
        ({"env": {"AWS_LAMBDA_RUNTIME_API": "x"}}, "sets it itself"),
    ],
)
def test_bad_configuration_fails_before_anything_starts(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        LocalLambda("app.handler", handler_dir=tmp_path, **options)


def test_bad_handler_spec_is_named(tmp_path):
    with pytest.raises(ValueError, match="bad handler 'nohandler'"):
        LocalLambda("nohandler", handler_dir=tmp_path)
