"""A handler that waits 2 ms, as one on a database round trip does (benchmarks/bench_fleet.py
``--waiting``: how the fleet grows when the supervisor is not the limit)."""

from __future__ import annotations

import time
from typing import Any


def handler(event: Any, context: Any) -> int:
    time.sleep(0.002)
    return 1
