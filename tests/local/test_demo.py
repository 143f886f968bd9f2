"""`lambda-conn demo`, the README's main job, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
    assert (tmp_path / "demo.svg").read_text().startswith("<svg")
