"""Fixtures for the health guard's end-to-end tests: handlers under the real awslambdaric.

Each function runs in ``LocalLambda`` (RLIMIT_NOFILE 1,024, a memory limit, frozen between
invocations); the runtime's stdout/stderr go to a file so a test can read the guard's log
lines and EMF metrics.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_conn.local import InvocationRecord, LocalLambda


class Function:
    """A LocalLambda plus the runtime's output, parsed."""

    def __init__(self, fn: LocalLambda, output: Path) -> None:
        self.fn = fn
        self.output = output

    def invoke(self, event: Any = None) -> InvocationRecord:
        return self.fn.invoke(event)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The guard's JSON log lines named ``event`` (awslambdaric prefixes level/time/id)."""
        found = []
        for line in self.output.read_text(errors="replace").splitlines():
            start = line.find('{"logger": "lambda_conn"')
            if start >= 0:
                record = json.loads(line[start:])
                if record["event"] == event:
                    found.append(record)
        return found

    def emf(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.output.read_text(errors="replace").splitlines()
            if line.startswith('{"_aws"')
        ]


@pytest.fixture
def make_function(tmp_path: Path) -> Iterator[Callable[..., Function]]:
    """``make_function(source, env=..., memory_mb=...)``: write ``app.py``, run ``app.handler``."""
    made: list[tuple[LocalLambda, Any]] = []

    def make(source: str, **options: Any) -> Function:
        name = f"app{len(made)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        output = tmp_path / f"{name}.log"
        sink = output.open("wb")
        fn = LocalLambda(f"{name}.handler", handler_dir=tmp_path, output=sink, **options)
        made.append((fn, sink))
        return Function(fn, output)

    yield make
    for fn, sink in made:
        fn.close()
        sink.close()
