"""RDS-ready MySQL and PostgreSQL connections: deadlines, retries, TLS and IAM auth for
Lambda handlers.

Loaded only when one of its names is used (``import lambda_conn`` never imports it), and
botocore only when IAM auth signs its first token. One concept per module:

- ``deadline``: how long a connect may take (the invocation's remaining time, less a
  margin) and the socket timeouts derived from it;
- ``retry``: which errors are worth another attempt, and the jittered backoff between them;
- ``iam``: IAM auth tokens, signed locally and cached until shortly before they expire;
- ``secret``: a wrapper that keeps passwords and tokens out of reprs and messages;
- ``resume``: TLS session resumption, one cached session per endpoint;
- ``connector``: ``RDSConnector``, which puts them together, and the engines it drives:
  ``mysql`` (PyMySQL) and ``postgres`` (psycopg 3 or psycopg2).
"""
