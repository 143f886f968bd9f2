"""One structured JSON line per event, through the ``lambda_conn`` logger.

CloudWatch Logs Insights parses JSON lines, so every report is a single ``json.dumps``.
"""

from __future__ import annotations

import logging
from logging import DEBUG, ERROR, INFO, WARNING
from typing import Any

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "log_event", "logger"]  # levels by name

logger = logging.getLogger("lambda_conn")


def log_event(level: int, event: str, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    import json  # stdlib; usually already imported by the runtime

    record = {"logger": "lambda_conn", "event": event, **fields}
    logger.log(level, json.dumps(record, default=str, sort_keys=False))
