"""What the guard says when a limit is crossed: one JSON log line and one EMF metric.

The log line goes through the ``lambda_conn`` logger (CloudWatch Logs Insights parses it);
the metric is an Embedded Metric Format line on stdout, which CloudWatch turns into a
metric with no API call. A recycle makes Lambda record ``Runtime.ExitError`` against the
request just answered, so the line names that request: an error that shows in metrics but
not in logs is the worst kind to chase.
"""

from __future__ import annotations

from typing import Any

from lambda_conn._log import WARNING, log_event

# Imported with the guard, not at the first report: at the descriptor limit, importing
# a module (which opens its file) fails with EMFILE.
from lambda_conn._metrics import put_metric

NAMESPACE = "lambda_conn"
METRIC = "HealthLimitExceeded"


def emit(action: str, fields: dict[str, Any], function_name: str | None, emf: bool) -> None:
    """Log ``fields`` as ``health_recycle`` or ``health_limit_exceeded``; add the metric."""
    event = "health_recycle" if action == "recycle" else "health_limit_exceeded"
    log_event(WARNING, event, action=action, **fields)
    if emf:
        write_emf(action, fields, function_name)


def metric_parts(
    action: str, fields: dict[str, Any], function_name: str | None
) -> tuple[dict[str, str], dict[str, Any]]:
    """The guard metric's dimensions (low cardinality) and properties (searchable only)."""
    dimensions = (
        {"FunctionName": function_name, "Action": action} if function_name else {"Action": action}
    )
    properties = {
        "Reason": fields.get("reason"),
        "RequestId": fields.get("request_id"),
        "Measured": fields.get("measured"),
        "Limit": fields.get("limit"),
        "Trigger": fields.get("trigger"),
    }
    return dimensions, properties


def write_emf(action: str, fields: dict[str, Any], function_name: str | None) -> None:
    """Through Powertools' metrics when the user has them in use, else a plain EMF line
    (``_metrics.emf_record``, the one EMF builder); never raises."""
    dimensions, properties = metric_parts(action, fields, function_name)
    put_metric(METRIC, 1, namespace=NAMESPACE, dimensions=dimensions, properties=properties)
