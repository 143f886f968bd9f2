"""The last steps of a process we end on purpose: flush, close connections, exit.

Shared by the recycle (after the response is posted) and the SIGTERM handler (within the
platform's 500 ms grace). ``os._exit`` and not ``sys.exit``: a ``SystemExit`` would unwind
through awslambdaric and wait for non-daemon threads, with no bound on either. The price is
that ``atexit`` handlers do not run, so what they would do is done here first.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

_exit = os._exit  # replaced in unit tests


def flush_output() -> None:
    """Push buffered log records and stdout/stderr out before the process disappears."""
    import logging

    for logger in (logging.getLogger(), logging.getLogger("lambda_conn")):
        for handler in list(logger.handlers):
            with contextlib.suppress(Exception):
                handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def close_connections(deadline_s: float) -> bool:
    """Close the connections of the invocation in flight (a timeout's), then every
    ``reused_connection``, with COM_QUIT so the server sees a clean quit; give up after
    ``deadline_s``: a close that hangs on a dead peer must not outlive the grace.
    Returns True when everything was closed in time."""
    from lambda_conn import _scope

    reuse = sys.modules.get("lambda_conn._reuse")  # never imported: nothing kept open
    if not _scope._entered and reuse is None:
        return True
    import threading

    def close_all() -> None:
        with contextlib.suppress(Exception):
            _scope.close_in_flight()
        if reuse is not None:
            with contextlib.suppress(Exception):
                reuse.close_reused_connections()

    worker = threading.Thread(target=close_all, name="lambda_conn-close", daemon=True)
    worker.start()
    worker.join(deadline_s)
    return not worker.is_alive()


def end_process(code: int, close_deadline_s: float) -> NoReturn:
    """Close connections (bounded), flush, and exit now."""
    closed_in_time = close_connections(close_deadline_s)
    if not closed_in_time:
        from lambda_conn._log import WARNING, log_event

        log_event(WARNING, "close_deadline_passed", deadline_s=close_deadline_s)
    flush_output()
    _exit(code)
    raise AssertionError("unreachable")  # only when a test replaced _exit
