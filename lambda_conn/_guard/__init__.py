"""The health guard: recycle a leaking execution environment after the response is delivered.

One concept per module: ``config`` (settings and their accepted forms), ``probes`` (fd count
and resident memory), ``triggers`` (which events the platform may retry), ``guard`` (the
decision after each invocation), ``report`` (log line and EMF metric), ``recycle`` (exit
after awslambdaric has posted the response), ``shutdown`` (no-op extension, SIGTERM,
SnapStart hooks) and ``decorator`` (``@health_guard``). Nothing here is imported by
``import lambda_conn``; ``lambda_conn._health`` loads it only when a guard is configured.
"""
