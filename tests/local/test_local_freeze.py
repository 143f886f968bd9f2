"""Between invocations the environment is frozen: background threads really stop."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(60)

TICKER = """
    import threading, time

    COUNT = 0

    def _tick():
        global COUNT
        while True:
            time.sleep(0.01)
            COUNT += 1

    threading.Thread(target=_tick, daemon=True).start()

    def handler(event, context):
        return COUNT
"""


def test_background_thread_does_not_advance_while_frozen(write_handler, make_lambda):
    # GIVEN a handler module with a thread that counts every 10 ms
    write_handler("app", TICKER)
    fn = make_lambda("app.handler")
    before = fn.invoke().response
    # WHEN the environment sits idle (frozen) for half a second
    time.sleep(0.5)
    after = fn.invoke().response
    # THEN the counter moved by far less than the 50 ticks an unfrozen thread makes
    assert after - before < 10, (before, after)
    # AND while an invocation runs, the thread does run
    assert fn.invoke().outcome == "ok"
