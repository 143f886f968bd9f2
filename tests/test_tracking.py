"""Automatic tracking works whatever the import order, and costs nothing for unused clients."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SCRIPT = """
import json, sys
{imports}
kept = []

@managed_connection
def handler(event, context):
    import pymysql
    conn = pymysql.connect(**json.loads(sys.argv[1]))
    kept.append(conn)
    return conn.open

assert handler({{}}, None)
print(json.dumps({{"open_after": kept[0].open, "wrapt": "wrapt" in sys.modules}}))
"""


def run_fresh(code: str, mariadb: Any) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (nothing hooked yet), given the server's kwargs."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), json.dumps(mariadb.connect_kwargs())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize(
    "imports",
    [
        "import pymysql\nfrom lambda_conn import managed_connection",  # client first
        "from lambda_conn import managed_connection",  # client imported inside the handler
    ],
    ids=["client-imported-before", "client-imported-after"],
)
def test_tracking_whatever_the_import_order(mariadb: Any, imports: str) -> None:
    out = run_fresh(SCRIPT.format(imports=imports), mariadb)
    assert json.loads(out.stdout) == {"open_after": False, "wrapt": True}


def test_unused_clients_are_never_imported() -> None:
    code = (
        "import sys\n"
        "from lambda_conn import managed_connection\n"
        "@managed_connection\n"
        "def handler(event, context):\n"
        "    return 1\n"
        "handler({}, None)\n"
        "print(sorted(m for m in ('pymysql', 'sqlalchemy', 'requests', 'httpx', 'urllib3', "
        "'wrapt', 'asyncio') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_module_loader_is_the_real_one_after_hooking() -> None:
    code = (
        "from lambda_conn import managed_connection\n"
        "managed_connection(lambda e, c: None)\n"
        "import pymysql, sqlalchemy\n"
        "print(type(pymysql.__loader__).__name__, type(pymysql.__spec__.loader).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["SourceFileLoader", "SourceFileLoader"]


def test_closing_a_real_connection_twice_before_any_decorator_is_quiet(mariadb: Any) -> None:
    # A fresh interpreter: no decorator has run, so nothing else has installed the
    # PyMySQL close rule (whose second close() would raise "Already closed").
    code = """
        import json, logging, sys
        import pymysql
        import lambda_conn
        from lambda_conn import managed_connection
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        conn = pymysql.connect(**json.loads(sys.argv[1]))
        with managed_connection(conn) as same:
            same.query("SELECT 1")
        with managed_connection(conn):
            pass
        print(json.dumps({"open": conn.open, "close_errors": lambda_conn.stats()["close_errors"]}))
        """
    out = run_fresh(code, mariadb)
    assert json.loads(out.stdout) == {"open": False, "close_errors": 0}
    assert "close_failed" not in out.stderr
