"""Cheap measurements of one process: open descriptors and current resident memory.

Both run after every invocation, before the response is posted, so each must cost a few
microseconds, not a hundred:

- descriptors: since Linux 6.2, ``stat("/proc/self/fd").st_size`` is the number of open
  descriptors (about 3 us). Older kernels report 0 there; we then ``listdir`` the directory
  (what psutil's num_fds does; about 0.5-1 us per open descriptor), but only when the fd
  table's size (``FDSize`` in /proc/self/status, an upper bound on the count) does not
  already prove the count under the limit.
- memory: ``pread`` of a /proc/self/statm descriptor kept open for the life of the process
  (about 2-4 us; open+read+close costs about 13-20 us).
"""

from __future__ import annotations

import errno
import os

_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


class ProcFile:
    """A /proc/self file kept open and read with one ``pread``.

    /proc/self is resolved when the file is opened, so after a fork (multi-concurrent
    workers) it is opened again for the new process.
    """

    __slots__ = ("_fd", "_path", "_pid")

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1
        self._pid = 0

    def read(self, size: int = 4096) -> bytes:
        if self._pid != os.getpid():
            self.close()
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            self._pid = os.getpid()
        return os.pread(self._fd, size, 0)

    def close(self) -> None:
        fd, self._fd, self._pid = self._fd, -1, 0
        if fd >= 0:
            os.close(fd)


class FdCounter:
    """Open descriptors, by the cheapest exact means the kernel offers."""

    __slots__ = ("_status", "_use_stat")

    def __init__(self) -> None:
        self._use_stat: bool | None = None  # decided on first use
        self._status = ProcFile("/proc/self/status")

    def __call__(self) -> int:
        if self._use_stat is None:
            self._use_stat = self._stat_counts()
        if self._use_stat:
            return os.stat(_FD_DIR).st_size
        return self._listed()

    @staticmethod
    def _listed() -> int:
        try:
            return len(os.listdir(_FD_DIR)) - 1  # not counting the one listdir itself uses
        except OSError as exc:
            if exc.errno == errno.EMFILE:  # no descriptor left to list with: all are open
                return fd_soft_limit()
            raise

    def _stat_counts(self) -> bool:
        """True where st_size is the descriptor count (Linux >= 6.2), checked against a
        listing once. A thread opening a file in between only costs us the fast path."""
        try:
            size = os.stat(_FD_DIR).st_size
            return size > 0 and size == self._listed()
        except OSError:
            return False

    def upper_bound(self) -> int | None:
        """A cheap bound the count cannot exceed (the fd table's size), or None where the
        exact count is as cheap. For skipping the listing while far under a limit."""
        if self._use_stat is None:
            self._use_stat = self._stat_counts()
        if self._use_stat:
            return None
        try:
            data = self._status.read()
        except OSError:
            return None
        start = data.find(b"FDSize:")
        if start < 0:
            return None
        return int(data[start + 7 : data.find(b"\n", start)])


count_fds = FdCounter()


def fd_soft_limit() -> int:
    """RLIMIT_NOFILE soft limit (1,024 in Lambda): read, never assumed."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class RssReader:
    """Current resident set size in bytes (not the peak: ``ru_maxrss`` never goes down)."""

    __slots__ = ("_page", "_statm")

    def __init__(self) -> None:
        self._statm = ProcFile("/proc/self/statm")
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __call__(self) -> int:
        return int(self._statm.read(128).split()[1]) * self._page

    def close(self) -> None:
        self._statm.close()
