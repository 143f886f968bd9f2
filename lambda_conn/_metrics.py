"""lambda_conn's CloudWatch metrics: through Powertools when the function uses it, else one
Embedded Metric Format (EMF) line on stdout, which CloudWatch turns into a metric with no
API call and no dependency.

"Uses Powertools" means ``aws_lambda_powertools.metrics`` is already imported (any
``from aws_lambda_powertools import ...`` imports it); this module never imports
Powertools itself, so a function without it pays nothing. Through Powertools, the metric
is a ``single_metric`` blob: it honours ``POWERTOOLS_METRICS_DISABLED`` and
``POWERTOOLS_DEV`` like the function's own metrics, and it is emitted at once, so it does
not matter whether ``@managed_connection`` sits inside or outside ``@metrics.log_metrics``.

Either way the metric keeps one identity: namespace ``lambda_conn`` and only the
dimensions given here. It is not added to the function's ``Metrics`` set, which would put
it under the function's namespace and dimensions; and Powertools' ``service`` dimension
(from ``POWERTOOLS_SERVICE_NAME``) becomes a property instead, so one alarm on
``lambda_conn`` metrics works with and without Powertools.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

NAMESPACE = "lambda_conn"

_failed_once = False


def powertools_in_use() -> bool:
    """Whether the function has imported Powertools' metrics (never imports it)."""
    return "aws_lambda_powertools.metrics" in sys.modules


def emf_record(
    name: str,
    value: float,
    *,
    unit: str = "Count",
    dimensions: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
    namespace: str = NAMESPACE,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """One metric as an EMF document: dimension values and properties at the top level
    (properties are searchable in the log and add no metric cardinality)."""
    dims = dict(dimensions or {})
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dims)],
                    "Metrics": [{"Name": name, "Unit": unit}],
                }
            ],
        },
        **dict(properties or {}),
        **dims,
        name: value,
    }
    return record


def write_emf(record: Mapping[str, Any]) -> None:
    """Print one EMF line; a closed or broken stdout must not fail the request."""
    import json

    try:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def put_metric(
    name: str,
    value: float,
    *,
    unit: str = "Count",
    dimensions: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
    namespace: str = NAMESPACE,
    timestamp_ms: int | None = None,
) -> str:
    """Emit one metric; never raises. Returns the route taken, for tests and logs:
    "powertools", "disabled" (Powertools metrics switched off) or "emf"."""
    if powertools_in_use():
        try:
            return _through_powertools(
                name, value, unit, dimensions or {}, properties or {}, namespace, timestamp_ms
            )
        except Exception as exc:  # a Powertools change must not cost the metric
            _report_failure(exc)
    write_emf(
        emf_record(
            name,
            value,
            unit=unit,
            dimensions=dimensions,
            properties=properties,
            namespace=namespace,
            timestamp_ms=timestamp_ms,
        )
    )
    return "emf"


def _through_powertools(
    name: str,
    value: float,
    unit: str,
    dimensions: Mapping[str, str],
    properties: Mapping[str, Any],
    namespace: str,
    timestamp_ms: int | None,
) -> str:
    import importlib

    # Already imported by the function (see powertools_in_use); looked up, not typed, so
    # that type checking lambda_conn does not need Powertools installed.
    single_metric = sys.modules["aws_lambda_powertools.metrics"].single_metric
    try:
        functions = importlib.import_module("aws_lambda_powertools.metrics.functions")
    except ImportError:  # older Powertools: no switch, always on
        functions = None
    is_disabled = getattr(functions, "is_metrics_disabled", None)
    if is_disabled is not None and is_disabled():
        return "disabled"
    with single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric:
        service = getattr(metric, "service", None)
        if service:
            metric.service = None  # a dimension we did not ask for: keep it as a property
            metric.add_metadata(key="service", value=service)
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=dim)
        for key, prop in properties.items():
            metric.add_metadata(key=key, value=prop)
        if timestamp_ms is not None and hasattr(metric, "set_timestamp"):
            metric.set_timestamp(timestamp_ms)
    return "powertools"


def _report_failure(exc: Exception) -> None:
    global _failed_once
    if _failed_once:  # once: a broken integration must not flood the log
        return
    _failed_once = True
    from lambda_conn._log import WARNING, log_event

    log_event(WARNING, "powertools_metric_failed", error=type(exc).__name__, message=str(exc)[:300])
