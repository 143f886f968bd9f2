"""How many execution environments this machine can hold, from one measured environment.

A fleet of 500 environments on a laptop would push the machine into swap or the OOM
killer, which then kills environments (or the supervisor) at random and makes the soak
say nothing about the function. So the fleet measures its first environment after its
first invocation and refuses a concurrency that does not fit in the memory available
when it started, saying how many do.
"""

from __future__ import annotations

__all__ = ["CapacityError", "available_memory", "check_capacity", "environments_that_fit"]

_MEMINFO = "/proc/meminfo"


class CapacityError(ValueError):
    """The concurrency asked for does not fit in this machine's memory."""


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


def environments_that_fit(per_environment: int, available: int) -> int:
    """Whole environments of ``per_environment`` bytes in ``available`` bytes (at least 1:
    the one measured is already running)."""
    return max(1, available // max(1, per_environment))


def check_capacity(
    concurrency: int, *, per_environment: int | None, available: int | None, handler: str
) -> None:
    """CapacityError naming the concurrency and how many environments fit; nothing when
    either measurement is missing (a first environment that died, no /proc/meminfo)."""
    if per_environment is None or available is None:
        return
    fit = environments_that_fit(per_environment, available)
    if concurrency > fit:
        raise CapacityError(
            f"concurrency={concurrency} is not accepted: one environment of {handler} uses "
            f"{per_environment / 2**20:.1f} MB (resident, measured after its first "
            f"invocation) and {available / 2**20:.0f} MB were available, so at most {fit} "
            f"environments fit in this machine's memory; expected a concurrency from 1 to {fit}"
        )
