"""`lambda-conn demo --fanout`: four designs as fleets against one small max_connections.

At concurrency 8 against a max_connections of 16 (15 for the functions: the sampler holds
one, and a loaded server may still count connections already closed), only the design
that never closes runs the server out; the three protected ones hold at most one
connection per environment and must fail no request. The embedded server's limit must
tell the same story as MariaDB's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers._private import free_port

MAX_CONNECTIONS = 16


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambda_conn.cli", "demo", "--fanout", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.mark.parametrize("server", ["mariadb", "embedded"])
def test_only_the_unprotected_design_runs_the_server_out(tmp_path: Path, server: str) -> None:
    out = _demo(
        "-c", "8", "-n", "40", "--max-connections", str(MAX_CONNECTIONS), "--server", server,
        "--json", str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.svg"), "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = json.loads((tmp_path / "f.json").read_text())
    unprotected, closed, reused, rds = rows.values()

    # the unprotected design fails, and only ever with "too many connections"
    failed = [r for r in unprotected["records"] if r["outcome"] != "ok"]
    assert failed and unprotected["fleet"]["too_many_connections"] == len(failed)
    assert all("1040" in r["error_message"] for r in failed)
    # it filled every slot the server had: each request that got in kept its connection
    # to the end (counted from the records: the sampler's 100 ms may miss a fill and the
    # refusals that follow it within a few tens of ms), and the sampler saw it climb
    succeeded = len(unprotected["records"]) - len(failed)
    assert MAX_CONNECTIONS - 2 <= succeeded <= MAX_CONNECTIONS
    assert unprotected["server"]["peak"] > 0
    # the protected designs fail no request and never fill the server
    for row in (closed, reused, rds):
        assert row["summary"]["failed"] == 0, row["summary"]["first_failures"]
        assert row["server"]["peak"] < MAX_CONNECTIONS - 1
    for row in rows.values():
        assert row["server"]["max_connections"] == MAX_CONNECTIONS
        assert row["fleet"]["concurrency"] == 8
    assert "1. unprotected" in out.stdout and "4. RDSConnector" in out.stdout
    assert (tmp_path / "f.svg").read_text().count(f"max_connections {MAX_CONNECTIONS}") == 4


def test_above_the_servers_limit_only_the_retried_connect_survives(tmp_path: Path) -> None:
    # GIVEN the demo's 16 callers against MariaDB's smallest max_connections, 10 (the
    # sampler holds one), each request holding its connection 100 ms (the default 20 ms
    # is a shorter overload: six attempts' backoff, about 0.8 s, failed 3 or 4 of 96
    # requests here at 100 ms, and none waiting until the time is up)
    out = _demo(
        "-c", "16", "-n", "96", "--hold-ms", "100", "--max-connections", "10",
        "--server", "mariadb",
        "--json", str(tmp_path / "f.json"), "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = json.loads((tmp_path / "f.json").read_text())
    unprotected, _closed, _reused, rds = rows.values()
    # THEN the server ran out (the unprotected design fails, with "too many connections")
    assert unprotected["fleet"]["too_many_connections"] > 0
    # AND RDSConnector, retrying until the invocation's time is up, answered every request:
    # it waited for a slot, as many times as it took
    assert rds["summary"]["failed"] == 0, rds["summary"]["first_failures"]
    assert rds["fleet"]["rds_retries"] > 0
    assert rds["fleet"]["concurrency"] == 16
    [line] = [line for line in out.stdout.splitlines() if line.startswith("4. RDSConnector")]
    assert line.rstrip().endswith("yes")


def test_a_dsn_that_cannot_be_sampled_exits_2_before_any_invocation(tmp_path: Path) -> None:
    dsn = f"mysql://app:s3cret-pw@127.0.0.1:{free_port()}/app"  # nothing listens there
    out = _demo("--dsn", dsn, "-n", "5", cwd=tmp_path)
    assert out.returncode == 2
    assert "mysql://***@127.0.0.1" in out.stdout
    assert "s3cret-pw" not in out.stdout + out.stderr
    assert "invocations in" not in out.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-connections", "5", "--server", "mariadb"], "MariaDB's minimum is 10"),
        (["--dsn", "mysql://u:pw@127.0.0.1:1/d", "--max-connections", "20"], "not accepted with"),
        (["--hold-ms", "-1"], "expected an integer >= 0"),
    ],
)
def test_fanout_options_it_cannot_honour_are_refused(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    out = _demo(*args, cwd=tmp_path)
    assert out.returncode == 2 and expected in out.stderr
    assert "pw@" not in out.stderr


def test_fanout_options_need_fanout(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lambda_conn.cli", "demo", "--concurrency", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "not accepted without --fanout" in out.stderr


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:  # ended meanwhile
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _runtimes(pid: int) -> list[int]:
    """The demo's environments: descendants given the demo's DSN in their environment."""
    found = []
    for child in _descendants(pid):
        try:
            if b"LAMBDA_CONN_DEMO_DSN=" in Path(f"/proc/{child}/environ").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def test_ctrl_c_prints_the_table_so_far_and_leaves_no_process(tmp_path: Path) -> None:
    import signal

    from tests.servers._private import wait_for_count

    # GIVEN a fan-out demo far from done: its private MariaDB and 4 environments running
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambda_conn.cli", "demo", "--fanout", "--server", "mariadb",
         "-c", "4", "-n", "100000", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # Ctrl-C as at a terminal, even when this test runs with SIGINT ignored (a
        # background job): Python then keeps it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert wait_for_count(lambda: min(len(_runtimes(proc.pid)), 4), 4, timeout=120) == 4
        # the server, the runtimes and their children
        started = {pid: _cmdline(pid) for pid in _descendants(proc.pid)}
        # WHEN Ctrl-C reaches the demo (only the demo: environments have their own groups)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # THEN the table so far, exit 130, and nothing it started is left running
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "1. unprotected" in stdout and "interrupted during 1. unprotected" in stdout
    assert "2. per-invocation close" not in stdout
    assert any(b"mariadbd" in cmdline for cmdline in started.values())
    assert [pid for pid in started if _alive(pid)] == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
