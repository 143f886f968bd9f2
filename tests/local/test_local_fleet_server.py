"""``lambda-conn soak --dsn`` at concurrency 8 against the private MariaDB: the fan-out
outage shown from the server's side, and a DSN that cannot connect refused up front."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.servers.mariadb import DATABASE, HOST, PASSWORD, USER, MariaDBServer

pytestmark = pytest.mark.timeout(240)

#: The server's limit: 8 environments each holding one connection at a time fit (with
#: the sampler's own one, the test server's admin session, and room for closes the server
#: has not processed yet on a loaded machine); a leak of one per invocation does not.
MAX_CONNECTIONS = 16

HANDLERS = """
    import os
    import time

    import pymysql

    from lambda_conn import managed_connection

    KEPT = []

    def _connect():
        return pymysql.connect(
            host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"],
            database=os.environ["DB_NAME"], ssl_disabled=True, connect_timeout=5,
        )

    def _work(conn):
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        time.sleep(0.02)  # the request's queries: the connection is held meanwhile

    def leaky(event, context):
        conn = _connect()
        KEPT.append(conn)  # a module-level cache: the connection is never closed
        _work(conn)

    @managed_connection
    def protected(event, context):
        conn = _connect()
        KEPT.append(conn)  # the same code; the scope closes it when the handler returns
        _work(conn)
"""


def _dsn(port: int, password: str = PASSWORD) -> str:
    return f"mysql://{USER}:{quote(password, safe='')}@{HOST}:{port}/{DATABASE}"


def _soak(root: Path, handler: str, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env_args = [
        f"DB_HOST={HOST}",
        f"DB_PORT={port}",
        f"DB_USER={USER}",
        f"DB_PASSWORD={PASSWORD}",
        f"DB_NAME={DATABASE}",
    ]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_conn.cli",
            "soak",
            handler,
            "-n",
            "200",
            "--concurrency",
            "8",
            *(arg for pair in env_args for arg in ("--env", pair)),
            "--json",
            "out.json",
            "--quiet",
            *extra,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


@pytest.fixture
def small_server(make_mariadb: Callable[..., MariaDBServer]) -> MariaDBServer:
    return make_mariadb(max_connections=MAX_CONNECTIONS)


def test_fan_out_fails_unprotected_and_holds_protected(
    write_handler: Callable[[str, str], Path], small_server: MariaDBServer, tmp_path: Path
) -> None:
    root = write_handler("app", HANDLERS)
    port = small_server.port

    # WITHOUT protection: every environment keeps every connection, the server runs out
    leaky = _soak(root, "app.leaky", port, "--dsn", _dsn(port))
    assert leaky.returncode == 1, leaky.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    fleet = data["fleet"]
    assert fleet["too_many_connections"] > 0
    assert fleet["server_max_connections"] == MAX_CONNECTIONS
    # the server was full: every slot but the sampler's own held by the function (the
    # test server's root admin session may take the extra slot MariaDB keeps for SUPER)
    assert fleet["peak_server_connections"] >= MAX_CONNECTIONS - 1
    assert data["server"]["max_connections"] == MAX_CONNECTIONS
    assert "OperationalError (too many connections)" in data["summary"]["failures_by_type"]
    assert "peak server connections" in leaky.stdout
    assert f"{fleet['peak_server_connections']} / {MAX_CONNECTIONS} max_connections" in (
        leaky.stdout
    )
    assert "(1040, 'Too many connections')" in leaky.stdout
    assert PASSWORD not in leaky.stdout + leaky.stderr
    small_server.wait_threads_connected(0, timeout=15)

    # WITH protection: the same code under @managed_connection, no request fails
    protected = _soak(root, "app.protected", port, "--dsn", _dsn(port))
    assert protected.returncode == 0, protected.stdout + protected.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    fleet = data["fleet"]
    assert data["summary"]["failed"] == 0
    assert fleet["too_many_connections"] == 0
    assert fleet["peak_environments"] == 8
    # one per request in flight (and the test server's admin session): never full
    assert 1 <= fleet["peak_server_connections"] < MAX_CONNECTIONS - 1


IDLE_HANDLERS = """
    import os

    import pymysql

    from lambda_conn import managed_connection, reused_connection

    def _connect():
        return pymysql.connect(
            host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"],
            database=os.environ["DB_NAME"], ssl_disabled=True, connect_timeout=5,
            read_timeout=5,
        )

    CONN = None

    def kept_by_hand(event, context):
        global CONN
        if CONN is None:  # connected once per environment, never checked
            CONN = _connect()
        with CONN.cursor() as cursor:
            cursor.execute("SELECT 1")

    db = reused_connection(_connect)

    @managed_connection
    def kept_and_validated(event, context):
        with db().cursor() as cursor:  # checked after every thaw, replaced when dead
            cursor.execute("SELECT 1")
"""


def test_idle_shows_connections_dying_while_frozen(
    write_handler: Callable[[str, str], Path],
    make_mariadb: Callable[..., MariaDBServer],
    tmp_path: Path,
) -> None:
    # The server drops a session idle for 1 s; --idle keeps every environment frozen 3 s
    server = make_mariadb(wait_timeout=1)
    root = write_handler("idle", IDLE_HANDLERS)
    port = server.port

    by_hand = _soak(root, "idle.kept_by_hand", port, "--idle", "3", "--dsn", _dsn(port))
    assert by_hand.returncode == 1, by_hand.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    failed = [r for r in data["records"] if r["outcome"] != "ok"]
    # nothing failed before the freeze; after it, the connections kept across it were dead
    assert failed
    assert min(r["index"] for r in failed) >= 100
    # PyMySQL: gone away (2006) or lost (2013) on each environment's first query after
    # the thaw, then InterfaceError on the connection it closed
    assert {r["error_type"] for r in failed} <= {"OperationalError", "InterfaceError"}
    assert any(r["error_message"].startswith(("(2006,", "(2013,")) for r in failed)
    assert data["fleet"]["idle_after"] == 100
    start, end = data["idle_window_s"]
    assert end - start >= 3
    # the server saw the 8 environments' sessions go while every one was frozen
    samples = list(zip(data["server"]["t"], data["server"]["connections"], strict=True))
    peak = data["fleet"]["peak_server_connections"]
    frozen = min(c for t, c in samples if start + 2 < t < end)  # wait_timeout passed
    assert peak - frozen >= 8, (peak, frozen)

    validated = _soak(root, "idle.kept_and_validated", port, "--idle", "3", "--dsn", _dsn(port))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["summary"]["failed"] == 0
    assert data["fleet"]["idle_after"] == 100


def test_the_peak_counts_what_the_environments_held_when_the_work_ended(
    write_handler: Callable[[str, str], Path],
    small_server: MariaDBServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fleet shorter than one sampling interval: the sampler's first sample (before
    any invocation) and its last (after teardown closed everything) both read 0, so the
    peak must come from the sample taken when the callers finished."""
    from lambda_conn.local import fleet_soak
    from lambda_conn.local._server_sampler import ServerSampler

    monkeypatch.setitem(ServerSampler.__init__.__kwdefaults__, "interval_s", 60.0)
    small_server._close_admin()  # the sampler and the function are the only clients
    root = write_handler("app", HANDLERS)
    env = {
        "DB_HOST": HOST,
        "DB_PORT": str(small_server.port),
        "DB_USER": USER,
        "DB_PASSWORD": PASSWORD,
        "DB_NAME": DATABASE,
    }
    report = fleet_soak(
        "app.leaky",
        6,
        concurrency=2,
        handler_dir=root,
        env=env,
        output=subprocess.DEVNULL,
        dsn=_dsn(small_server.port),
    )
    assert report.summary.failed == 0
    series = report.server
    assert series is not None and len(series.counts) == 3  # start, work's end, stop
    assert series.counts[0] == 0
    assert series.peak == 6  # every leaked connection, still open when the work ended


def test_a_dsn_that_cannot_connect_exits_2_before_the_first_invocation(
    write_handler: Callable[[str, str], Path], tmp_path: Path
) -> None:
    root = write_handler(
        "app",
        """
        import os

        def handler(event, context):
            open(os.path.join(os.path.dirname(__file__), "invoked"), "w").close()
        """,
    )
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    secret = "not-this-one-pw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_conn.cli",
            "soak",
            "app.handler",
            "-n",
            "5",
            "--dsn",
            _dsn(port, secret),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "argument --dsn: cannot connect to mysql://***@127.0.0.1" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "invoked")
    assert result.stdout == ""


def test_a_dsn_of_another_scheme_is_a_usage_error(
    write_handler: Callable[[str, str], Path],
) -> None:
    root = write_handler("app", "def handler(event, context):\n    pass\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_conn.cli",
            "soak",
            "app.handler",
            "-n",
            "5",
            "--dsn",
            "redis://user:pw-secret@127.0.0.1:1/0",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "argument --dsn: DSN" in result.stderr and "is not accepted" in result.stderr
    assert "pw-secret" not in result.stderr


BUDGET_HANDLERS = """
    import logging
    import os
    import time

    import pymysql

    from lambda_conn import managed_connection, reused_connection

    logging.getLogger("lambda_conn").setLevel(logging.INFO)  # the budget's INFO line

    def _connect():
        return pymysql.connect(
            host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"],
            database=os.environ["DB_NAME"], ssl_disabled=True, connect_timeout=5,
        )

    db = reused_connection(_connect, name="db")

    @managed_connection
    def handler(event, context):
        for reused in (db, audit):
            with reused().cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        time.sleep(0.02)

    audit = reused_connection(_connect, name="audit")  # declared after the handler
"""


def test_the_budget_logged_at_init_is_what_the_fleet_holds_on_the_server(
    write_handler: Callable[[str, str], Path], small_server: MariaDBServer, tmp_path: Path
) -> None:
    # GIVEN a function keeping two reused connections per environment (one declared
    # after its handler), told its reserved concurrency (4) and the server's maximum
    root = write_handler("budget_app", BUDGET_HANDLERS)
    port = small_server.port
    logs = tmp_path / "function.log"
    # the test server's admin session (kept open from here on) is the only other client
    assert small_server.threads_connected() == 0
    # WHEN 4 concurrent callers soak it, the server's connections sampled meanwhile
    out = _soak(
        root, "budget_app.handler", port, "--dsn", _dsn(port), "--logs", str(logs),
        "--env", "LAMBDA_CONN_RESERVED_CONCURRENCY=4",
        "--env", f"LAMBDA_CONN_MAX_CONNECTIONS={MAX_CONNECTIONS}",
        "--concurrency", "4",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    fleet = json.loads((tmp_path / "out.json").read_text())["fleet"]
    assert fleet["environments_created"] == fleet["peak_environments"] == 4
    # THEN each environment's last budget line counts both connections: 4 x 2 = 8 of 16
    budgets = []
    for line in logs.read_text(errors="replace").splitlines():
        start = line.find('{"logger": "lambda_conn"')
        if start >= 0 and json.loads(line[start:])["event"] == "connection_budget":
            budgets.append(json.loads(line[start:]))
    final = [b for b in budgets if b.get("recounted")]
    assert len(final) == 4, budgets  # once per environment, after the second declaration
    assert {(b["connections_per_environment"], b["budget"], b["within"]) for b in final} == {
        (2, 8, True)
    }
    # AND the server saw exactly that many sessions of the function at the peak, beside
    # the admin session: the budget is what the fleet holds (the sampler's own excluded)
    assert fleet["peak_server_connections"] == 8 + 1
