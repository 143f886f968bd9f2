"""Fixtures for the local runtime's tests: handler modules written into ``tmp_path``.

Every LocalLambda made through ``make_lambda`` is closed after the test, so no runtime
process (frozen or not) outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_conn.local import LocalLambda
from tests.servers.processes import marked


@pytest.fixture
def write_handler(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``<name>.py`` (dedented) into the task root and return the task root."""

    def write(name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return tmp_path

    return write


@pytest.fixture
def make_lambda(tmp_path: Path) -> Iterator[Callable[..., LocalLambda]]:
    made: list[LocalLambda] = []

    def make(handler: str, **options: Any) -> LocalLambda:
        options.setdefault("handler_dir", tmp_path)
        fn = LocalLambda(handler, **options)
        made.append(fn)
        return fn

    yield make
    for fn in made:
        fn.close()


@pytest.fixture
def mark() -> Iterator[str]:
    """A value for ``tests.servers.processes.MARK`` in the function's environment;
    whatever still carries it after the test (after its assertions, or when it failed)
    is SIGKILLed."""
    value = uuid.uuid4().hex
    yield value
    for pid, _ in marked(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
