"""Invoke one story handler N times in this process under Lambda's descriptor limit.

Usage: run_story.py [MODULE:]HANDLER N (decorated|bare); MODULE defaults to story_handlers,
and an async handler runs on one event loop for the life of the process. Prints one JSON
summary line, then waits for stdin to close so the parent can look at the server while our
sockets still exist.
"""

from __future__ import annotations

import json
import os
import resource
import sys

LAMBDA_NOFILE = 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError:  # EMFILE: listing needs a descriptor too
        return LAMBDA_NOFILE


def asyncio_handler(handler: object) -> bool:
    code = getattr(handler, "__code__", None)
    return code is not None and bool(code.co_flags & 0x80)  # CO_COROUTINE


def causes(exc: BaseException) -> list[str]:
    """The messages of the exceptions behind ``exc`` (botocore's hides the errno)."""
    found = []
    seen = {id(exc)}
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen and len(found) < 10:
        seen.add(id(current))
        found.append(f"{type(current).__name__}: {str(current)[:300]}")
        current = current.__cause__ or current.__context__
    return found


def main() -> None:
    name, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    resource.setrlimit(resource.RLIMIT_NOFILE, (LAMBDA_NOFILE, LAMBDA_NOFILE))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    module_name, _, name = name.rpartition(":")
    module = __import__(module_name or "story_handlers")
    handler = getattr(module, name)
    if mode == "decorated":
        from lambda_conn import managed_connection

        handler = managed_connection(handler)
    if asyncio_handler(handler):
        # An async handler, as Mangum or Powertools run one: one event loop for the life
        # of the container, each invocation run to completion on it.
        import asyncio

        loop = asyncio.new_event_loop()
        coroutine_function = handler

        def handler(event: dict[str, object], context: object) -> object:
            return loop.run_until_complete(coroutine_function(event, context))

    expect_raise = name.startswith("raising")
    baseline = open_fds()
    summary: dict[str, object] = {"baseline_fds": baseline, "succeeded": 0, "raised": 0}
    max_delta = 0
    for i in range(count):
        try:
            handler({"i": i}, None)
            summary["succeeded"] = int(summary["succeeded"]) + 1  # type: ignore[call-overload]
        except Exception as exc:
            if expect_raise and isinstance(exc, RuntimeError) and str(i) in str(exc):
                summary["raised"] = int(summary["raised"]) + 1  # type: ignore[call-overload]
            else:
                summary["failure"] = {
                    "invocation": i,
                    "type": type(exc).__name__,
                    "message": str(exc)[:500],
                    "causes": causes(exc),
                    "fds": open_fds(),
                }
                break
        delta = open_fds() - baseline
        max_delta = max(max_delta, delta)
    summary["max_fd_delta"] = max_delta
    summary["final_fds"] = open_fds()
    print(json.dumps(summary), flush=True)
    sys.stdin.read()  # hold our sockets until the parent has counted the server's sessions


if __name__ == "__main__":
    main()
