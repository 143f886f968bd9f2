"""The pytest plugin, run by pytest's own ``pytester`` in a fresh process against the
suite's private MariaDB: the leak fails the user's test, the connection is closed on the
server, and the plugin does nothing unless enabled."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(180)

# The inner session: test_leaks keeps a reference to an unclosed connection (the leak
# Python makes easy); test_server_side, which runs after it, asks the server whether that
# session still exists, while the object is still referenced.
LEAKY = """
import json, pymysql, pytest

KW = {kw!r}
kept = []


def session_alive(thread_id):
    admin = pymysql.connect(**KW)
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (thread_id,)
            )
            return cursor.fetchone()[0] == 1
    finally:
        admin.close()


{marker}
def test_leaks():
    conn = pymysql.connect(**KW)
    kept.append(conn)


def test_server_side():
    print("SERVER-SIDE-ALIVE=%s" % session_alive(kept[0].thread_id()))
    if kept[0].open:
        kept[0].close()
"""


def leaky(pytester: pytest.Pytester, mariadb: Any, marker: str = "") -> None:
    kw = mariadb.connect_kwargs()
    pytester.makepyfile(test_leaky=textwrap.dedent(LEAKY.format(kw=kw, marker=marker)))


def run(pytester: pytest.Pytester, *args: str, autoload: bool = False) -> pytest.RunResult:
    """A fresh pytest process. Without ``autoload`` only our plugin is loaded (by name): the
    machine's other plugins (hypothesis...) would cost seconds per run."""
    if autoload:
        return pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess(
            "-s", "-p", "no:cacheprovider", "-p", "lambda_conn.pytest_plugin", *args
        )


def test_a_test_that_leaves_a_connection_open_fails_and_the_server_session_is_closed(
    pytester: pytest.Pytester, mariadb: Any
) -> None:
    leaky(pytester, mariadb)
    result = run(pytester, "--lambda-conn", autoload=True)  # found through its entry point
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*SERVER-SIDE-ALIVE=False*",
            "*LeakError: test_leaky.py::test_leaks left 1 connection(s) open: "
            "[[]{'kind': 'pymysql.Connection', 'remote': [[]'127.0.0.1:*'[]]}[]]; lambda-conn "
            "closed them. To fix: *@pytest.mark.lambda_conn_exempt",
        ]
    )
    assert "lambda-conn: every test in a scope, on_leak=raise" in result.stdout.str()


def test_without_the_option_the_plugin_does_nothing(
    pytester: pytest.Pytester, mariadb: Any
) -> None:
    leaky(pytester, mariadb)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*SERVER-SIDE-ALIVE=True*"])  # the leak, as without us
    assert "lambda-conn:" not in result.stdout.str()


def test_report_mode_warns_and_still_closes(pytester: pytest.Pytester, mariadb: Any) -> None:
    leaky(pytester, mariadb)
    result = run(pytester, "--lambda-conn", "--lambda-conn-on-leak=report")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        ["*SERVER-SIDE-ALIVE=False*", "*LeakWarning: test_leaky.py::test_leaks left 1*"]
    )


def test_the_ini_option_enables_it(pytester: pytest.Pytester, mariadb: Any) -> None:
    leaky(pytester, mariadb)
    pytester.makeini("[pytest]\nlambda_conn = true\nlambda_conn_on_leak = raise\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*SERVER-SIDE-ALIVE=False*"])


def test_the_exempt_marker_leaves_a_test_alone(pytester: pytest.Pytester, mariadb: Any) -> None:
    leaky(pytester, mariadb, marker="@pytest.mark.lambda_conn_exempt")
    result = run(pytester, "--lambda-conn", "--strict-markers")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*SERVER-SIDE-ALIVE=True*"])


def test_a_bad_on_leak_setting_is_refused_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlambda_conn = true\nlambda_conn_on_leak = explode\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*lambda_conn_on_leak = 'explode' is not accepted: expected raise or report*"]
    )


def test_a_decorated_handler_under_the_plugin_is_still_one_invocation(
    pytester: pytest.Pytester, mariadb: Any
) -> None:
    # The per-test scope is not an invocation: the handler's own scope is the outermost, so
    # it closes its connection, counts the invocation, and the test passes.
    pytester.makepyfile(
        test_handler=f"""
        import pymysql
        import lambda_conn
        from lambda_conn import managed_connection

        KW = {mariadb.connect_kwargs()!r}
        kept = []

        @managed_connection
        def handler(event, context):
            conn = pymysql.connect(**KW)
            kept.append(conn)  # referenced, but closed with the invocation
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone()[0]

        def test_handler(lambda_context):
            before = lambda_conn.stats()["invocations"]
            assert handler({{}}, lambda_context) == 1
            assert lambda_conn.stats()["invocations"] == before + 1
            assert not kept[0].open
        """
    )
    result = run(pytester, "--lambda-conn")
    result.assert_outcomes(passed=1)


def test_lambda_context_runs_down_and_takes_settings_from_its_marker(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest

        def test_default(lambda_context):
            first = lambda_context.get_remaining_time_in_millis()
            assert 2900 < first <= 3000
            time.sleep(0.05)
            assert lambda_context.get_remaining_time_in_millis() <= first - 40
            assert lambda_context.memory_limit_in_mb == 128
            assert lambda_context.invoked_function_arn.endswith(":function:test-function")
            assert len(lambda_context.aws_request_id) == 36

        @pytest.mark.lambda_context(timeout_s=0.1, memory_mb=1024, function_name="orders")
        def test_marker(lambda_context):
            assert lambda_context.memory_limit_in_mb == 1024
            assert lambda_context.log_group_name == "/aws/lambda/orders"
            time.sleep(0.15)
            assert lambda_context.get_remaining_time_in_millis() == 0
        """
    )
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(passed=2)


def test_local_lambda_runs_the_tests_handler_and_is_closed_after(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        app="""
        from lambda_conn import managed_connection

        @managed_connection
        def handler(event, context):
            return {"echo": event, "remaining": context.get_remaining_time_in_millis() > 0}
        """,
        test_app="""
        import pytest

        kept = []

        @pytest.mark.local_lambda("app.handler", memory_mb=256)
        def test_invoke(local_lambda):
            kept.append(local_lambda)
            record = local_lambda.invoke({"k": 1})
            assert record.outcome == "ok", record
            assert record.response == {"echo": {"k": 1}, "remaining": True}
            assert local_lambda.config.memory_mb == 256

        def test_closed_after():
            with pytest.raises(RuntimeError, match="closed"):
                kept[0].invoke({})
        """,
    )
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(passed=2)


def test_local_lambda_without_a_handler_says_how_to_name_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(local_lambda):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the local_lambda fixture needs a handler*"])


def test_the_ini_handler_is_used_by_local_lambda(pytester: pytest.Pytester) -> None:
    pytester.mkdir("src")
    pytester.path.joinpath("src", "svc.py").write_text(
        "def handler(event, context):\n    return 'pong'\n"
    )
    pytester.makeini("[pytest]\nlambda_conn_handler = svc.handler\nlambda_conn_handler_dir = src\n")
    pytester.makepyfile(
        "def test_x(local_lambda):\n    assert local_lambda.invoke().response == 'pong'\n"
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
