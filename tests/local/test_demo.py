"""`lambda-conn demo`, the README's main job, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_demo_shows_the_three_outcomes(tmp_path: Path) -> None:
    # 1,100 invocations are enough to pass the 1,024-descriptor limit.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_conn.cli",
            "demo",
            "-n",
            "1100",
            "--json",
            str(tmp_path / "demo.json"),
            "--plot",
            str(tmp_path / "demo.svg"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    reports = json.loads((tmp_path / "demo.json").read_text())
    unprotected, protected, guarded = (reports[title]["records"] for title in reports)

    failures = [r for r in unprotected if r["outcome"] != "ok"]
    assert failures, "the unprotected handler never failed"
    assert "Too many open files" in failures[0]["error_message"]
    assert 900 < failures[0]["index"] < 1024  # runs out near Lambda's 1,024 descriptors

    assert all(r["outcome"] == "ok" for r in protected)
    assert max(r["fd_count"] for r in protected) < 20

    assert all(r["outcome"] == "ok" for r in guarded)
    assert sum(r["exited_after_response"] for r in guarded) >= 2
    assert max(r["fd_count"] for r in guarded) <= 512

    assert "Too many open files" in out.stdout
    assert f"Plot of descriptors and memory per invocation: {tmp_path / 'demo.svg'}" in out.stdout
    assert (tmp_path / "demo.svg").read_text().startswith("<svg")


def test_demo_writes_no_plot_unless_asked_and_quiet_prints_no_progress(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lambda_conn.cli", "demo", "-n", "3", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # no lambda-conn-demo.svg dropped in the cwd
    assert "Plot of" not in out.stdout
    assert out.stderr == ""


def test_demo_refuses_a_dsn_it_cannot_query_without_showing_the_password(tmp_path: Path) -> None:
    from tests.servers._private import free_port

    dsn = f"mysql://app:s3cret-pw@127.0.0.1:{free_port()}/app"  # nothing listens there
    out = subprocess.run(
        [sys.executable, "-m", "lambda_conn.cli", "demo", "-n", "5", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "cannot run SELECT 1" in out.stdout and "mysql://***@127.0.0.1" in out.stdout
    assert "s3cret-pw" not in out.stdout + out.stderr
    assert "invocations in" not in out.stdout  # no soak ran


def test_demo_fails_when_a_protected_handler_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from lambda_conn.local import _demo

    # GIVEN a demo whose second handler (the protected one) fails its requests
    (tmp_path / "cases.py").write_text(
        "def ok(event, context):\n    return 1\n"
        "def boom(event, context):\n    raise RuntimeError('boom')\n"
    )
    monkeypatch.chdir(tmp_path)  # the task root
    monkeypatch.setattr(
        _demo,
        "CASES",
        (
            ("1. unprotected", "cases.ok", {}),
            ("2. protected", "cases.boom", {}),
            ("3. g", "cases.ok", {}),
        ),
    )
    text = io.StringIO()
    # THEN its exit status says so, and the output names it
    assert _demo.run_demo(invocations=2, plot=None, out=text) == 1
    assert "FAILED: 2. protected should never fail a request" in text.getvalue()
