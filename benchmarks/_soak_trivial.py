"""The trivial handler benchmarks/bench_soak.py runs, raw and under ``soak`` (no imports:
what is measured is the runtime loop and the supervisor around it)."""

from __future__ import annotations

from typing import Any


def handler(event: Any, context: Any) -> int:
    return 1
