"""One execution environment: the runtime process group, its API server, its limits.

Spawn, freeze, thaw, measure, wait and kill live here and nowhere else, so the rules
about which signal goes where are in one screenful.

Waiting is serving: ``wait`` runs the environment's API server in the calling thread
until the invoke (or Init) ends, blocked in one ``poll`` that also holds the runtime's
pidfd, so an exit wakes it at once and no thread of ours runs for an environment nobody
waits on. Measuring is two reads of descriptors opened once per runtime: ``fstat`` of
``/proc/PID/fd`` (its size is the descriptor count since Linux 6.2; listed otherwise)
and a ``pread`` of ``/proc/PID/statm``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Literal

from lambda_conn.local import _reaper
from lambda_conn.local._api_server import RuntimeApiServer
from lambda_conn.local._config import FunctionConfig
from lambda_conn.local._constants import FD_LIMIT, INTERNAL_EXTENSION_GRACE_S, POLL_INTERVAL_S
from lambda_conn.local._records import ShutdownRecord
from lambda_conn.local._state import Invocation, SandboxState

__all__ = ["DescriptorLimitError", "Ending", "EnvironmentThread", "ExecutionEnvironment"]

Ending = Literal["exit", "memory", "timeout"]  # what cut a wait short

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Bound before fork: the child runs no Python of ours between fork and exec but these
# C calls (no lock is taken, so threads in the supervisor cannot deadlock the child).
_LIMIT_FDS = functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _limit_fds_and_die_with_supervisor(supervisor: int) -> None:
    """Pre-exec: Lambda's descriptor limit, and SIGKILL when the supervisor dies.

    Without the second, a supervisor killed or ended by ``os._exit`` leaves a frozen
    runtime stopped for ever, or a running one spinning. Only for a runtime started from
    the main thread or an ``EnvironmentThread``: the kernel sends the signal when the
    *thread* that forked exits. A supervisor that died before the prctl took effect is
    caught by the ppid check.
    """
    _LIMIT_FDS()
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != supervisor:
        os._exit(1)


class DescriptorLimitError(RuntimeError):
    """This process cannot give a runtime Lambda's descriptor limit (its hard
    RLIMIT_NOFILE is lower, and it may not raise it)."""


def _descriptor_limit_error() -> DescriptorLimitError | None:
    """Why the pre-exec step failed, when it is the limit; None for anything else."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= FD_LIMIT:
        return None
    return DescriptorLimitError(
        f"RLIMIT_NOFILE's hard limit here is {hard}, below the {FD_LIMIT} descriptors "
        f"Lambda gives a function, and this process may not raise it: an environment "
        f"cannot be given Lambda's limit, and a leak would fail sooner than on Lambda. "
        f"Raise it before running (`ulimit -Hn {FD_LIMIT}`, or as root)"
    )


class EnvironmentThread(threading.Thread):
    """A thread that promises to outlive every runtime it starts (a fleet soak's caller).

    Runtimes started from it die with the supervisor like those started from the main
    thread; from any other thread they get no death signal, because one sent when a
    short-lived thread ends would SIGKILL a runtime still in use.
    """


def _dies_with_forking_thread() -> bool:
    thread = threading.current_thread()
    return thread is threading.main_thread() or isinstance(thread, EnvironmentThread)


_SETTLE_S = 0.05
Output = IO[bytes] | IO[str] | int | None


# tgkill(2) numbers; elsewhere a process-directed kill(2) is used.
_SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "ppc64le": 250, "s390x": 241}


def _signal_main_thread(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the runtime's main thread.

    Lambda sends a process-directed SIGTERM to a settled process, where the kernel picks
    the idle main thread. Right after a SIGSTOP/SIGCONT another thread may be picked, and
    Python runs signal handlers only on the main thread, so the local runtime aims at it.
    """
    number = _SYS_TGKILL.get(platform.machine())
    if number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, pid, pid, int(sig)) == 0:
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class ExecutionEnvironment:
    """A runtime process (``python -m awslambdaric``) in its own process group.

    The group is what gets frozen and killed, so threads and child processes the handler
    starts stop and die with it, as they do in a Lambda sandbox.
    """

    def __init__(
        self, config: FunctionConfig, generation: int, output: Output = None, spin_s: float = 0.0
    ) -> None:
        self.config = config
        self.generation = generation
        self.state = SandboxState(config.metadata())
        self.server = RuntimeApiServer(self.state, spin_s)
        self._output = output
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._exited = False
        self._pidfd = -1  # readable once the runtime exited (-1: no pidfd, poll waitid)
        self._statm = -1  # /proc/PID/statm, open for the runtime's life
        self._fd_dir = -1  # /proc/PID/fd, open for the runtime's life
        self._fd_dir_counts: bool | None = None  # its st_size is the count (decided once)
        self.last_fds: int | None = None
        self.last_rss: int | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Serve the API, then exec the unmodified runtime with Lambda's limits."""
        self.server.start()
        cfg = self.config
        try:
            self._proc = subprocess.Popen(
                [cfg.python, "-m", "awslambdaric", cfg.spec.lambda_form],
                cwd=cfg.task_root,
                env=cfg.environ(self.server.address),
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=self._output,
                start_new_session=True,
                preexec_fn=functools.partial(_limit_fds_and_die_with_supervisor, os.getpid())
                if _dies_with_forking_thread()
                else _LIMIT_FDS,
            )
        except BaseException as exc:
            self.server.stop()
            limit = (
                _descriptor_limit_error() if isinstance(exc, subprocess.SubprocessError) else None
            )
            if limit is not None:
                raise limit from exc
            raise
        _reaper.watch_group(self._proc.pid)  # its children too, should we be SIGKILLed
        self._open_proc_files(self._proc.pid)

    def _open_proc_files(self, pid: int) -> None:
        """The pidfd (where the kernel has them) and the two /proc files ``sample`` reads;
        while the child is unreaped, its pid (and so these) cannot belong to another."""
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(pid)
            self.server.watch(self._pidfd)
        with contextlib.suppress(OSError):
            self._statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
        with contextlib.suppress(OSError):
            self._fd_dir = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)

    def _close_proc_files(self) -> None:
        for fd in (self._pidfd, self._statm, self._fd_dir):
            if fd >= 0:
                os.close(fd)
        self._pidfd = self._statm = self._fd_dir = -1

    @property
    def pid(self) -> int:
        assert self._proc is not None, "environment not started"
        return self._proc.pid

    def exited(self) -> bool:
        """True once the runtime process ended (it stays unreaped until teardown, so its
        process group id cannot be reused while we may still signal it)."""
        if self._exited:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
            self._exited = True
        if info is not None:
            self._exited = True
        return self._exited

    def freeze(self) -> None:
        """SIGSTOP the whole group: every thread, timer and keep-alive stops."""
        self._signal_group(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        if self._frozen:
            self._signal_group(signal.SIGCONT)
            self._frozen = False

    def sample(self) -> tuple[int | None, int | None]:
        """Descriptor count and RSS of the runtime process; keeps the last live values.

        Descriptors first: a resident size above zero read afterwards proves the process
        had not begun exiting when they were counted (an exiting process reads 0)."""
        try:
            fds = self._count_fds()
            rss = int(os.pread(self._statm, 256, 0).split()[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):
            return self.last_fds, self.last_rss
        if rss:
            self.last_fds, self.last_rss = fds, rss
        return self.last_fds, self.last_rss

    def supervisor_descriptors(self) -> int:
        """The supervisor's descriptors this environment holds (its API's listening socket
        and connections, the pidfd, the two /proc files) plus the one it opens for a
        moment, from the thread that serves it."""
        own = sum(fd >= 0 for fd in (self._pidfd, self._statm, self._fd_dir))
        return 2 + own + self.server.connection_count()

    def _count_fds(self) -> int:
        if self._fd_dir_counts is None:
            size = os.fstat(self._fd_dir).st_size
            self._fd_dir_counts = size > 0 and size == len(os.listdir(self._fd_dir))
        if self._fd_dir_counts:
            return os.fstat(self._fd_dir).st_size
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def dispatch(self, inv: Invocation) -> None:
        """Hand the invocation over, then thaw: the parked ``/next`` is answered from this
        thread while the runtime is still frozen, so SIGCONT finds the event waiting and
        the runtime wakes once, not once for the signal and again for the event."""
        self.state.dispatch(inv)
        self.server.release()
        self.thaw()

    def queue(self, inv: Invocation, limit: int) -> None:
        """Queue ``inv`` for the runtime's next ``/next``: the API answers it at once, in
        the same pass as the request, after measuring the ended invoke (``sample``) and
        only while the resident memory is within ``limit``; see ``SandboxState.queue``."""

        def measured_within_limit() -> bool:
            rss = self.sample()[1]
            return rss is None or rss <= limit

        self.state.queue(inv, int(self.config.timeout_s * 1000), measured_within_limit)

    def wait(self, done: Callable[[], bool], deadline: float, limit: int) -> Ending | None:
        """Serve the API until ``done()``, watching what Lambda watches meanwhile: the
        runtime exiting (its pidfd), its resident memory passing ``limit`` (sampled every
        POLL_INTERVAL_S while it runs: the only poll), the deadline. None when done."""
        server = self.server
        next_sample = time.perf_counter() + POLL_INTERVAL_S
        while not done():
            if self._exited:
                return "exit"
            now = time.perf_counter()
            if now >= next_sample:
                _, rss = self.sample()
                if rss is not None and rss > limit:
                    return "memory"
                next_sample = now + POLL_INTERVAL_S
            if now >= deadline:
                return "timeout"
            if server.pump(min(deadline, next_sample) - now) or self._pidfd < 0:
                self.exited()
        return None

    # ------------------------------------------------------------------ endings
    def kill_now(self) -> None:
        """SIGKILL the group without waiting or reaping, from any thread: an invoke in
        progress then sees the runtime exit and ends as usual (a fleet's Ctrl-C)."""
        self._signal_group(signal.SIGKILL)

    def kill(self, reason: str) -> ShutdownRecord:
        """SIGKILL the group now (the OOM killer, a dead runtime's leftovers)."""
        start = time.perf_counter()
        already = self.exited()
        self._signal_group(signal.SIGKILL)
        return self._finish(reason, start, sigterm_sent=False, exited_within_grace=already)

    def shut_down(self, reason: str) -> ShutdownRecord:
        """Lambda's shutdown: SIGTERM to the runtime only if an extension registered, then
        SIGKILL after the grace period; with no extension, SIGKILL straight away."""
        start = time.perf_counter()
        if self.exited():
            self._signal_group(signal.SIGKILL)
            return self._finish(reason, start, sigterm_sent=False, exited_within_grace=True)
        if self.state.extension_count() == 0:
            self._signal_group(signal.SIGKILL)
            return self._finish(reason, start, sigterm_sent=False, exited_within_grace=False)
        # Thaw first, as Lambda does, and let the main thread go back to sleep: a
        # process-directed signal goes to a thread that has no signal pending, and a
        # thread still busy with SIGSTOP/SIGCONT does. If another thread takes SIGTERM,
        # Python's handler waits for the main thread, which is blocked in a lock.
        self.thaw()
        self._wait_main_thread_asleep(_SETTLE_S)
        _signal_main_thread(self.pid, signal.SIGTERM)
        within = self.wait(self.exited, start + INTERNAL_EXTENSION_GRACE_S, limit=1 << 62) is None
        self._signal_group(signal.SIGKILL)
        return self._finish(reason, start, sigterm_sent=True, exited_within_grace=within)

    def _wait_main_thread_asleep(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        path = f"/proc/{self.pid}/stat"
        while time.perf_counter() < deadline:
            try:
                with open(path, "rb") as fh:
                    state = fh.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state in (b"S", b"D", b"Z"):
                return
            time.sleep(0.0005)

    def _finish(
        self, reason: str, start: float, *, sigterm_sent: bool, exited_within_grace: bool
    ) -> ShutdownRecord:
        status: int | None = None
        if self._proc is not None:
            if self._proc.returncode is None:  # the group was SIGKILLed: unlist it before
                _reaper.forget_group(self._proc.pid)  # the reap frees its id
            try:
                status = self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                status = None
        self._exited = True
        extensions = self.state.extension_count()
        self.server.stop()
        self._close_proc_files()
        return ShutdownRecord(
            environment=self.generation,
            reason=reason,
            extensions=extensions,
            sigterm_sent=sigterm_sent,
            exited_within_grace=exited_within_grace,
            exit_status=status,
            duration_ms=(time.perf_counter() - start) * 1000,
        )

    def exit_status(self) -> int | None:
        """The runtime's exit status once reaped (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        try:  # not contextlib.suppress: this runs twice per invocation
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
