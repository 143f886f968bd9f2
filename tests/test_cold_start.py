"""``import lambda_conn`` at cold start: which modules it costs (the time is in benchmarks/).

Each case runs in a fresh interpreter started with ``-I -S``: no ``site``, so no ``.pth``
file of this machine's shared site-packages (or an editable install's path hook) has
imported ``typing`` first and hidden what ``lambda_conn`` itself imports. That is the
situation in a Lambda deployment package, where nothing but the runtime ran before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import awslambdaric
import pytest

import lambda_conn

# Never at ``import lambda_conn``: each costs milliseconds of every cold start (typing pulls
# in re and enum), and clients/wrapt load only when the user imports a tracked client.
FORBIDDEN = (
    "typing",
    "re",
    "enum",
    "inspect",
    "asyncio",
    "dataclasses",
    "warnings",
    "logging",
    "json",
    "ssl",
    "socket",
    "importlib.metadata",
    "wrapt",
    "pymysql",
    "psycopg",
    "sqlalchemy",
    "requests",
    "urllib3",
    "httpx",
    "lambda_conn.local",
    "lambda_conn.cli",
)
# After awslambdaric's bootstrap (what the Lambda runtime has imported), the only modules
# lambda_conn may add are its own and contextvars.
ALLOWED_AFTER_RUNTIME = {"contextvars", "_contextvars"}


def _parent(module_file: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(module_file)))


def _added_by(setup: str, action: str) -> list[str]:
    """Modules ``action`` adds, run after ``setup`` in a fresh interpreter whose path
    starts with this checkout and awslambdaric."""
    paths = [_parent(lambda_conn.__file__), _parent(awslambdaric.__file__)]
    code = (
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
        f"{setup}\n"
        "before = set(sys.modules)\n"
        f"{action}\n"
        "added = sorted(set(sys.modules) - before)\n"
        "import json\n"
        "print(json.dumps(added))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    added: list[str] = json.loads(out)
    return added


def imported_by(first: str | None) -> list[str]:
    """Modules that ``import lambda_conn`` adds in a fresh interpreter after ``first``."""
    return _added_by(
        f"import {first}" if first else "",
        "import lambda_conn\n"
        "assert lambda_conn.__file__.startswith(sys.path[0]), lambda_conn.__file__",
    )


@pytest.mark.parametrize("first", [None, "awslambdaric.bootstrap"])
def test_import_adds_no_typing_nor_heavy_module(first: str | None) -> None:
    added = imported_by(first)
    assert "lambda_conn._managed" in added  # the decorator really was imported
    assert [m for m in added if m in FORBIDDEN or m.startswith("lambda_conn.local")] == []


def test_after_the_lambda_runtime_only_our_own_modules_are_added() -> None:
    added = imported_by("awslambdaric.bootstrap")
    others = [m for m in added if m.split(".")[0] != "lambda_conn"]
    assert set(others) <= ALLOWED_AFTER_RUNTIME, others


def test_typing_stand_ins_keep_generics_and_overloads_working() -> None:
    from lambda_conn._managed import Closing
    from lambda_conn._runtime_typing import Generic

    assert Closing[int] is Closing  # subscription works at run time, records nothing
    assert issubclass(Closing, Generic)
    assert lambda_conn.managed_connection.__name__ == "managed_connection"
    assert lambda_conn.managed_connection.__doc__  # the implementation, not an overload


def _added_by_first_invocation(handler_module: str) -> list[str]:
    """Modules the first invocation of ``handler`` imports, once its module ran (Init)."""
    setup = (
        "import requests\n"  # a tracked client, imported before lambda_conn
        f"from lambda_conn import managed_connection\n{handler_module}"
    )
    return _added_by(setup, "handler({}, None)")


@pytest.mark.parametrize(
    "handler_module",
    [
        "@managed_connection\ndef handler(event, context):\n    requests.Session()\n",
        # a block's object built at module level: `with` it in the handler
        "block = managed_connection()\n"
        "def handler(event, context):\n    with block:\n        requests.Session()\n",
    ],
    ids=["decorator", "module-level-block"],
)
def test_tracking_is_installed_at_init_not_in_the_first_invocation(handler_module: str) -> None:
    # GIVEN a handler module (requests imported first) that uses lambda_conn at module level
    # THEN its first invocation (which opens and closes a tracked Session) imports nothing:
    # the integrations, the plugin scan, wrapt and the patches were all paid at Init
    assert _added_by_first_invocation(handler_module) == []
