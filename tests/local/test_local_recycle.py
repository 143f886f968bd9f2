"""A runtime that exits after posting the response: the caller has it; next invoke is cold."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)

EXIT_AFTER_RESPONSE = """
    import os
    from awslambdaric.lambda_runtime_client import LambdaRuntimeClient

    _post = LambdaRuntimeClient.post_invocation_result

    def _post_then_exit(self, *args, **kwargs):
        _post(self, *args, **kwargs)  # the caller has the body once this returns
        if os.environ.get("EXIT_AFTER_RESPONSE") == "1":
            os._exit(0)

    LambdaRuntimeClient.post_invocation_result = _post_then_exit

    def handler(event, context):
        return {"pid": os.getpid(), "event": event}
"""


def test_exit_after_response_counts_as_ok_and_next_is_cold(write_handler, make_lambda):
    # GIVEN a handler whose runtime exits right after posting each response
    write_handler("app", EXIT_AFTER_RESPONSE)
    fn = make_lambda("app.handler", env={"EXIT_AFTER_RESPONSE": "1"})
    # WHEN it is invoked twice
    first = fn.invoke({"n": 1})
    second = fn.invoke({"n": 2})
    # THEN the caller has each body; the exit is recorded, and the next invoke ran Init
    assert first.outcome == "ok" and first.response["event"] == {"n": 1}
    assert first.exited_after_response and first.reset_reason == "exited_after_response"
    assert first.exit_status == 0 and first.recycled
    assert second.outcome == "ok" and second.response["event"] == {"n": 2}
    assert second.cold_start and second.init_duration_ms is not None
    assert second.response["pid"] != first.response["pid"]
    assert second.environment == first.environment + 1


def test_without_the_exit_the_environment_is_reused(write_handler, make_lambda):
    write_handler("app", EXIT_AFTER_RESPONSE)
    fn = make_lambda("app.handler")
    first, second = fn.invoke(), fn.invoke()
    assert not first.exited_after_response and not second.cold_start
    assert second.response["pid"] == first.response["pid"]
