"""The demo's own private MariaDB (lambda_conn/local/_private_mariadb.py): a real server
whose max_connections refuses the next client with 1040, gone after stop()."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pymysql
import pytest

from lambda_conn.local._dsn import connect
from lambda_conn.local._private_mariadb import PrivateMariaDB
from lambda_conn.local._server_sampler import ServerSampler
from tests.servers._private import wait_for_count


def test_a_client_past_max_connections_gets_1040_and_stop_removes_everything() -> None:
    db = PrivateMariaDB(max_connections=10)
    with db, contextlib.ExitStack() as stack:
        # GIVEN the sampler (one connection) and 9 demo clients: all 10 slots
        sampler = stack.enter_context(ServerSampler(db.dsn, interval_s=0.05))
        assert sampler.max_connections == 10
        conns: list[Any] = []
        for _ in range(9):
            conns.append(connect(db.dsn))
            stack.callback(conns[-1].close)
        assert wait_for_count(lambda: sampler.series.counts[-1], 9, timeout=10) == 9
        # WHEN one more connects, THEN MariaDB refuses it: the demo user takes no extra slot
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(db.dsn)
        assert info.value.args[0] == 1040
        directory, pid = db._dir, db._proc.pid if db._proc else None
        assert directory is not None and directory.is_dir() and pid is not None
    assert sampler.series.peak == 9
    # AND after stop() neither the server process nor its directory is left
    assert not Path(directory).exists()
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert "demo:" in db.dsn and db._password not in repr(sampler.series)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("value", [9, 0, True, "10"])
def test_a_limit_mariadb_would_not_keep_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"max_connections=.* expected an integer >= 10"):
        PrivateMariaDB(max_connections=value)


def test_no_directory_is_made_before_start() -> None:
    before = set(os.listdir("/tmp"))
    PrivateMariaDB(max_connections=10)
    assert {d for d in set(os.listdir("/tmp")) - before if d.startswith("lc-demo-mdb-")} == set()
