"""What is left of the processes a test started, read from ``/proc``: a test proves that
nothing survives (a frozen runtime, a handler's child) by looking, not by trusting the
objects that started them."""

from __future__ import annotations

import os

#: The variable a test puts in the function's environment to find its processes again:
#: every runtime and every child of one inherits it.
MARK = "LAMBDA_CONN_TEST_MARK"


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T for stopped, Z for a zombie); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def marked(mark: str) -> list[tuple[int, str]]:
    """Every live process (zombies left out) whose environment has ``MARK=mark``, with
    its state letter."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if f"{MARK}={mark}".encode() not in fh.read().split(b"\0"):
                    continue
        except OSError:
            continue
        letter = state(int(entry))
        if letter not in ("Z", None):
            found.append((int(entry), letter))
    return found


def in_groups(groups: set[int]) -> list[int]:
    """Live processes in any of these process groups (a runtime's group is its pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) in groups:
            found.append(int(entry))
    return found
