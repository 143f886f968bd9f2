"""Graceful shutdown: SIGTERM closes connections within the grace, then exits.

Lambda sends SIGTERM only when an extension is registered (hence ``extension``) and
SIGKILLs 500 ms later. The handler closes, with COM_QUIT (so the database sees a clean
quit, not an aborted connection) and under one 300 ms deadline, the connections of the
invocation still running (a timeout's) and the reused ones, calls the SIGTERM
handler that was installed before it, flushes, and exits.

Python runs signal handlers only in the main thread between bytecodes: on runtimes where
awslambdaric blocks the main thread in its native ``/next`` call (before python3.12),
the handler cannot run and the SIGKILL ends the process as if nothing were installed.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from lambda_conn._guard import ending

if TYPE_CHECKING:
    from types import FrameType

    from lambda_conn._guard.config import Platform

CLOSE_DEADLINE_S = 0.3  # of the 500 ms grace; the rest is for the chained handler and exit

_installed = False
_previous: Any = None
_handling = False


def install(platform: Platform) -> bool:
    """Install once per process, and only under a Runtime API. True if installed now."""
    global _installed
    if _installed or not platform.in_lambda:
        return False
    _installed = True
    install_sigterm()
    # In multi-concurrent mode every forked worker imports the handler: one extension name
    # can be registered once, and how SIGTERM reaches workers there is not documented.
    if platform.max_concurrency is None and platform.runtime_api is not None:
        from lambda_conn._guard import extension

        extension.register(platform.runtime_api)
    return True


def install_sigterm() -> bool:
    """Chain our SIGTERM handler in front of the current one (main thread only)."""
    global _previous
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        from lambda_conn._log import WARNING, log_event

        log_event(WARNING, "sigterm_handler_not_installed", reason="not in the main thread")
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if previous is on_sigterm:
        return False
    _previous = previous
    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _handling
    if _handling:  # a second SIGTERM while we close: the first one finishes the job
        return
    _handling = True
    closed_in_time = ending.close_connections(CLOSE_DEADLINE_S)
    from lambda_conn._log import INFO, log_event

    log_event(INFO, "sigterm", pid=os.getpid(), closed_in_time=closed_in_time)
    code = 0
    previous = _previous
    if callable(previous):
        try:
            previous(signum, frame)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            print(f"lambda_conn: chained SIGTERM handler raised {exc!r}", file=sys.stderr)
            code = 1
    ending.flush_output()
    ending._exit(code)
