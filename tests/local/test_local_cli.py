"""``lambda-conn soak`` as a user runs it: a subprocess, its exit status, its files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

HANDLERS = """
    import time

    def ok(event, context):
        return {"got": event}

    def boom(event, context):
        raise ValueError("boom")

    def slow(event, context):
        time.sleep(5)

    def not_json(event, context):
        return {1, 2}
"""


def _cli() -> list[str]:
    script = shutil.which("lambda-conn")
    return [script] if script else [sys.executable, "-m", "lambda_conn.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    raw = subprocess.run([*_cli(), *args], cwd=cwd, capture_output=True, timeout=100, check=False)
    # decoded by hand: text=True would turn the progress bar's \r into \n
    return subprocess.CompletedProcess(
        raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode()
    )


def test_soak_all_ok_exits_0_and_writes_json_and_svg(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    (tmp_path / "event.json").write_text('{"k": 1}')
    result = run(
        "soak",
        "app:ok",
        "-n",
        "20",
        "--event",
        "event.json",
        "--env",
        "A=1",
        "--json",
        "out.json",
        "--plot",
        "out.svg",
        "--keep-responses",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    # the table on stdout, headed by the handler and its settings; progress on stderr
    assert result.stdout.splitlines()[:2] == [
        f"lambda-conn soak app:ok (task root {root})",
        "20 invocations, memory 128 MB, timeout 3 s, event event.json, env A",
    ]
    for row in (
        "invocations",
        "succeeded",
        "cold starts",
        "duration p50",
        "duration p99",
        "peak descriptors",
        "peak memory",
    ):
        assert row in result.stdout
    # stderr is not a terminal here: plain lines, never a carriage-return bar
    assert "\r" not in result.stderr
    assert "progress: 100% 20/20  0 failed" in result.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["summary"]["invocations"] == 20 and data["summary"]["failed"] == 0
    assert data["summary"]["cold_starts"] == 1
    assert len(data["records"]) == 20
    assert all(r["outcome"] == "ok" and r["response"] == {"got": {"k": 1}} for r in data["records"])
    assert all(r["fd_count"] > 0 and r["rss_bytes"] > 0 for r in data["records"])
    svg = ET.parse(tmp_path / "out.svg").getroot()
    assert svg.tag.endswith("svg")
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}polyline")) == 2


def test_soak_with_a_raising_handler_exits_1(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    result = run("soak", "app.boom", "-n", "3", "--json", "out.json", cwd=root)
    assert result.returncode == 1, result.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["summary"]["failed"] == 3
    assert data["summary"]["failures_by_type"] == {"ValueError": 3}
    assert data["records"][0]["error_type"] == "ValueError"
    assert data["records"][0]["stack_trace"]
    assert "ValueError" in result.stdout


def test_handler_dir_option_is_the_task_root(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("soak", "app:ok", "-n", "2", "--handler-dir", str(root), cwd=elsewhere)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["soak", "no_function_here", "-n", "1"], ["'no_function_here'", "MODULE:FUNCTION"]),
        (["soak", "missing_mod:handler", "-n", "1"], ["'missing_mod'", "not found"]),
        (["soak", "app:ok", "-n", "0"], ["-n/--invocations", "'0'", "integer >= 1"]),
        (["soak", "app:ok", "-n", "x"], ["-n/--invocations", "'x'"]),
        (["soak", "app:ok", "-n", "1", "--memory", "64"], ["--memory", "'64'", "128 to 10240"]),
        (["soak", "app:ok", "-n", "1", "--memory", "10241"], ["--memory", "'10241'"]),
        (["soak", "app:ok", "-n", "1", "--timeout", "abc"], ["--timeout", "'abc'", "seconds"]),
        (["soak", "app:ok", "-n", "1", "--env", "NOEQUALS"], ["--env", "'NOEQUALS'", "KEY=VALUE"]),
        (["soak", "app:ok", "-n", "1", "--plot", "p.pdf"], ["--plot", "'p.pdf'", ".svg"]),
        (["soak", "app:ok", "-n", "1", "--event", "nope.json"], ["--event", "'nope.json'"]),
        (
            ["soak", "app:ok", "-n", "1", "--env", "AWS_LAMBDA_RUNTIME_API=x"],
            ["--env", "'AWS_LAMBDA_RUNTIME_API'", "--memory", "expected"],
        ),
        (
            ["soak", "app:ok", "-n", "1", "--env", "AWS_LAMBDA_MAX_CONCURRENCY=2"],
            ["--env", "'AWS_LAMBDA_MAX_CONCURRENCY'", "multi-concurrent"],
        ),
        (["soak", "app:ok", "-n", "1", "--json", "/nonexistent/o.json"], ["--json", "no dir"]),
        (["soak", "app:ok", "-n", "1", "--plot", "/nonexistent/o.svg"], ["--plot", "no dir"]),
        (["soak", "app:ok", "-n", "1", "--logs", "/nonexistent/x.log"], ["--logs", "no dir"]),
        (["soak", "app:ok", "-n", "1", "--json", "/tmp"], ["--json", "not a writable file"]),
        ([], ["COMMAND"]),
    ],
)
def test_usage_errors_exit_2_naming_the_bad_value(write_handler, tmp_path, args, expected):
    root = write_handler("app", HANDLERS)
    result = run(*args, cwd=root)
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_png_plot_needs_matplotlib_and_says_so_before_the_soak(write_handler, tmp_path):
    import importlib.util

    root = write_handler("app", HANDLERS)
    result = run("soak", "app:ok", "-n", "1", "--plot", "p.png", cwd=root)
    if importlib.util.find_spec("matplotlib") is None:  # as with the test extra
        assert result.returncode == 2 and "matplotlib" in result.stderr
        assert "invocations" not in result.stdout  # nothing ran
    else:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_existing_writable_outputs_are_accepted_even_in_read_only_directories(
    write_handler, tmp_path
):
    root = write_handler("app", HANDLERS)
    result = run(
        "soak", "app:ok", "-n", "1", "--logs", "/dev/null", "--json", "/dev/null", cwd=root
    )
    assert result.returncode == 0, result.stderr


def test_successful_responses_are_dropped_unless_kept(write_handler, tmp_path):
    root = write_handler("app", HANDLERS)
    run("soak", "app:ok", "-n", "2", "--json", "dropped.json", cwd=root)
    run("soak", "app:ok", "-n", "2", "--json", "kept.json", "--keep-responses", cwd=root)
    dropped = json.loads((tmp_path / "dropped.json").read_text())["records"]
    kept = json.loads((tmp_path / "kept.json").read_text())["records"]
    assert [r["response"] for r in dropped] == [None, None]
    assert [r["response"] for r in kept] == [{"got": None}, {"got": None}]


def test_a_handler_that_cannot_init_stops_the_soak_early(write_handler, tmp_path):
    # A typo in the function's name fails Init on every invocation: 10 in a row end it.
    root = write_handler("app", HANDLERS)
    result = run("soak", "app.nofunc", "-n", "1000", "--json", "out.json", cwd=root)
    assert result.returncode == 1
    assert "stopped early: Init failed 10 times in a row" in result.stderr
    assert "Runtime.HandlerNotFound" in result.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["summary"]["invocations"] == 10 and data["stopped_early"]


@pytest.mark.parametrize(
    ("handler", "options", "first_failure"),
    [
        ("app.boom", [], "ValueError (first at invocation 1): boom"),
        ("app.slow", ["--timeout", "0.5"], "Sandbox.Timedout (first at invocation 1): "),
        (
            "app.not_json",
            [],
            "Runtime.MarshalError (first at invocation 1): Unable to marshal response: "
            "Object of type set is not JSON serializable",
        ),
        (
            "app.nofunc",
            [],
            "Runtime.HandlerNotFound (first at invocation 1): Handler 'nofunc' missing on "
            "module 'app'",
        ),
    ],
    ids=["exception", "timeout", "not-json", "init-failure"],
)
def test_the_first_message_of_each_failure_type_is_printed_under_the_table(
    write_handler, handler, options, first_failure
):
    root = write_handler("app", HANDLERS)
    result = run("soak", handler, "-n", "2", *options, cwd=root)
    assert result.returncode == 1
    table_end = result.stdout.rindex("-----")
    under = result.stdout[table_end:].splitlines()[1:]
    assert under[0] == "first failure of each type:"
    assert under[1].startswith("  " + first_failure), under
    if handler == "app.slow":
        assert "Task timed out after 0.50 seconds" in under[1]


def test_progress_on_a_terminal_is_a_bar_and_quiet_prints_none(write_handler):
    import os
    import pty

    root = write_handler("app", HANDLERS)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [*_cli(), "soak", "app.ok", "-n", "5"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=100,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0
    terminal = b"".join(chunks).decode()
    assert "\r[" in terminal and "5/5" in terminal and "progress:" not in terminal

    quiet = run("soak", "app.ok", "-n", "5", "--quiet", cwd=root)
    assert quiet.returncode == 0 and "invocations" in quiet.stdout
    assert quiet.stderr == ""


def test_help_defines_duration_and_response_and_the_exit_status(tmp_path):
    soak_help = run("soak", "--help", cwd=tmp_path).stdout
    assert "duration  from sending the invoke until the runtime, and every extension" in soak_help
    assert "response  from sending the invoke until the caller had its answer" in soak_help
    assert "exit status: 0 when every invocation succeeded" in soak_help
    demo_help = run("demo", "--help", cwd=tmp_path).stdout
    assert "exit status: 0 when the protected rows (2 and 3) had no failed request" in demo_help
    assert "(default: none)" in demo_help


def test_version_prints_the_package_version(tmp_path):
    from lambda_conn import __version__

    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"lambda-conn {__version__}"


def test_cli_and_package_imports_stay_light():
    code = (
        "import sys, lambda_conn, lambda_conn.cli\n"
        "lambda_conn.cli.build_parser()\n"
        "print(sorted(m for m in ('lambda_conn.local', 'awslambdaric', 'http.server')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
