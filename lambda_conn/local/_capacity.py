"""How many execution environments this machine, and the supervisor, can hold.

Memory: a fleet of 500 environments on a laptop would push the machine into swap or the
OOM killer, which then kills environments (or the supervisor) at random and makes the
soak say nothing about the function. When ``concurrency`` environments at the function's
memory size would not fit in the memory available at the start, the fleet runs its first
invocation alone and refuses a concurrency that does not fit, saying how many do; then
it keeps the largest resident size any environment reached and refuses as soon as that
no longer fits (an environment that grows after its first invocation, one that differs).

Descriptors: each environment holds some of the supervisor's own descriptors (its API's
socket and connections, the runtime's pidfd, two /proc files). A soft RLIMIT_NOFILE of
1,024 holds about 200 environments; the fleet raises its soft limit up to the hard limit
when it needs to (and puts it back at the end), and refuses before the first invocation
a concurrency the hard limit cannot hold; then, again, whenever an environment measured
holds more than any before (an extension's parked connection).
"""

from __future__ import annotations

import os
import resource

__all__ = [
    "ASSUMED_CONNECTIONS",
    "FD_HEADROOM",
    "FIXED_FDS",
    "Capacity",
    "CapacityError",
    "available_memory",
    "open_descriptors",
]

_MEMINFO = "/proc/meminfo"
#: The supervisor's descriptors an environment holds besides its API connections: the
#: listening socket, the runtime's pidfd, ``/proc/PID/statm`` and ``/proc/PID/fd`` (open
#: for the runtime's life), and one it opens for a moment (``/proc/PID/stat`` while it
#: shuts down; a listing of ``/proc/PID/fd`` on kernels before 6.2).
FIXED_FDS = 5
#: Connections to an environment's API before one is measured: the runtime's keep-alive
#: one (each registered extension parks one more in ``/event/next``).
ASSUMED_CONNECTIONS = 1
#: Descriptors kept free for the supervisor's own use beyond what it had open and what
#: its environments hold: a ``--json`` or ``--plot`` file, an import, a ``/proc`` read.
FD_HEADROOM = 16


class CapacityError(ValueError):
    """The concurrency asked for does not fit in this machine's memory, or in the
    supervisor's descriptors."""


def available_memory(path: str = _MEMINFO) -> int | None:
    """``MemAvailable`` in bytes (what can be used without swapping); None if unknown."""
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_descriptors() -> int | None:
    """How many descriptors this process has open (None without ``/proc``)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own
    except OSError:
        return None


class Capacity:
    """The fleet's two limits for ``concurrency`` environments of ``handler``.

    ``check_descriptors()`` before the first environment starts; ``observe()`` after each
    invocation (its environment's resident size and, for a new environment, the
    descriptors it holds) returns a ``CapacityError`` once the largest measured no longer
    fits; ``restore()`` puts back the soft descriptor limit it raised.
    """

    def __init__(self, concurrency: int, *, handler: str, memory_bytes: int) -> None:
        self.concurrency = concurrency
        self.handler = handler
        available = available_memory()
        # Environments are killed above memory_bytes: if that many of them fit, they do,
        # and memory need not be measured.
        self.available = (
            available if available is not None and concurrency * memory_bytes > available else None
        )
        self.base_fds = open_descriptors()
        self.per_environment_fds = FIXED_FDS + ASSUMED_CONNECTIONS
        self.max_rss = 0
        self._rss_at: tuple[int, int] = (0, 0)  # (environments, invocations) when measured
        self._environments = 0
        self._invocations = 0
        self._raised_from: int | None = None

    @property
    def measures_memory(self) -> bool:
        """True when memory may not hold the fleet: its first invocation runs alone."""
        return self.available is not None

    # ---------------------------------------------------------------- descriptors
    def check_descriptors(self, measured: str = "") -> None:
        """Raise the soft RLIMIT_NOFILE up to the hard one if the fleet needs more than
        it; CapacityError when even the hard limit cannot hold it."""
        if self.base_fds is None:
            return
        per = self.per_environment_fds
        need = self.base_fds + self.concurrency * per + FD_HEADROOM
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if need <= soft:
            return
        ceiling = need if hard == resource.RLIM_INFINITY else hard
        if need <= ceiling:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            except (ValueError, OSError):
                ceiling = soft
            else:
                if self._raised_from is None:
                    self._raised_from = soft
                return
        fit = max(0, (ceiling - self.base_fds - FD_HEADROOM) // per)
        what = measured or (
            "its API's listening socket and the runtime's connection to it, the runtime's "
            "pidfd, two /proc files and one opened for a moment"
        )
        limit = (
            f"RLIMIT_NOFILE's hard limit is {hard} (the soft limit is raised up to it)"
            if ceiling == hard
            else f"the soft RLIMIT_NOFILE of {soft} could not be raised"
        )
        expected = (
            f"expected a concurrency from 1 to {fit}, or a higher hard limit (ulimit -Hn)"
            if fit
            else "expected a higher hard limit (ulimit -Hn)"
        )
        raise CapacityError(
            f"concurrency={self.concurrency} is not accepted: each environment of "
            f"{self.handler} holds {per} of the supervisor's descriptors ({what}), "
            f"{self.base_fds} were open before the first, {FD_HEADROOM} are kept free and "
            f"{limit}, so at most {fit} environments fit in the supervisor's descriptors; "
            f"{expected}"
        )

    def restore(self) -> None:
        """Put the soft descriptor limit back where it was before the fleet raised it."""
        if self._raised_from is None:
            return
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self._raised_from, hard))
        self._raised_from = None

    # --------------------------------------------------------------------- both
    def observe(self, rss: int | None, descriptors: int | None) -> CapacityError | None:
        """After one invocation: ``rss`` its environment's resident size, ``descriptors``
        what a new environment holds of the supervisor's (None for a warm one). The
        error once the most measured of either no longer fits ``concurrency``."""
        self._invocations += 1
        if descriptors is not None:
            self._environments += 1
            if descriptors > self.per_environment_fds:
                self.per_environment_fds = descriptors
                measured = (
                    f"the most measured, in {_environments(self._environments)}: its API's "
                    "socket and connections, the runtime's pidfd, two /proc files and one "
                    "opened for a moment"
                )
                try:
                    self.check_descriptors(measured)
                except CapacityError as exc:
                    return exc
        if self.available is None or rss is None or rss <= self.max_rss:
            return None
        self.max_rss = rss
        self._rss_at = (max(1, self._environments), self._invocations)
        fit = max(1, self.available // rss)  # at least the one measured: it is running
        if self.concurrency <= fit:
            return None
        environments, invocations = self._rss_at
        if invocations == 1:
            how = f"uses {rss / 2**20:.1f} MB (resident, measured after its first invocation)"
        else:
            how = (
                f"uses up to {rss / 2**20:.1f} MB (resident, the most measured in "
                f"{_environments(environments)} after {invocations} invocations)"
            )
        return CapacityError(
            f"concurrency={self.concurrency} is not accepted: one environment of "
            f"{self.handler} {how} and {self.available / 2**20:.0f} MB were available, so "
            f"at most {fit} environments fit in this machine's memory; expected a "
            f"concurrency from 1 to {fit}"
        )


def _environments(count: int) -> str:
    return f"{count} environment" + ("" if count == 1 else "s")
