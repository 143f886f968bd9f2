"""The environments' process groups, SIGKILLed if the supervisor dies without cleaning up.

Why: a runtime dies with a SIGKILLed supervisor (``PR_SET_PDEATHSIG``), but what the
handler started (a subprocess, a ``multiprocessing`` worker) gets no death signal. Frozen
by SIGSTOP, it stays stopped for ever, holding its database connections and descriptors.

How: one small process per supervisor, in a session of its own (a Ctrl-C or a kill of
the supervisor's process group does not reach it), reads ``+PGID`` and ``-PGID`` lines
from a pipe only the supervisor can write. At end of file (the supervisor exited,
however it died) it SIGKILLs every group still listed, and exits. A group is listed
from its runtime's spawn until just before the runtime is reaped; until then the
runtime's pid, and so the group's id, cannot belong to anyone else. Children that left
the group (``setsid``) are not covered.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading

__all__ = ["forget_group", "watch_group"]

_SCRIPT = """
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""

_lock = threading.Lock()
_owner = 0  # the pid that started the reaper (a forked child needs its own)
_write = -1
_proc: subprocess.Popen[bytes] | None = None


def _pipe() -> int:
    """The write end of the reaper's pipe, starting the reaper on first use; -1 when it
    cannot be started (the groups are then left to the supervisor's own cleanup)."""
    global _owner, _write, _proc
    if _owner == os.getpid():
        return _write
    with _lock:
        if _owner != os.getpid():
            write = -1
            read, end = os.pipe()  # neither end is inherited by the runtimes
            try:
                _proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _SCRIPT],
                    stdin=read,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError:
                os.close(end)
            else:
                write = end
                atexit.register(_stop)
            finally:
                os.close(read)
            _write = write
            _owner = os.getpid()  # last: a thread that sees it reads the _write above
    return _write


def _stop() -> None:
    """At a clean exit, end the reaper and wait for it: a supervisor that returns leaves
    no process of its own behind, not even for the moment the reaper takes to see EOF."""
    global _write, _proc
    if _owner != os.getpid() or _write < 0 or _proc is None:
        return  # a forked child inherited the hook, not the reaper
    fd, _write = _write, -1  # first: a late _send must not write to a reused fd
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(subprocess.TimeoutExpired):
        _proc.wait(timeout=5)
    _proc = None


def _send(line: bytes) -> None:
    fd = _pipe()
    if fd >= 0:
        with contextlib.suppress(OSError):  # the reaper was killed: nothing to tell
            os.write(fd, line)


def watch_group(pgid: int) -> None:
    """List a runtime's process group, right after it is spawned."""
    _send(b"+%d\n" % pgid)


def forget_group(pgid: int) -> None:
    """Unlist it once it has been SIGKILLed, before the runtime is reaped."""
    _send(b"-%d\n" % pgid)
