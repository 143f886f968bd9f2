"""A handler behind RDS Proxy for PostgreSQL: IAM auth over verify-full TLS, one psycopg
connection per environment.

- ``engine="postgresql"``: psycopg 3 (psycopg2 with ``driver="psycopg2"``); the connect is
  bounded by the invocation's remaining time less a margin, TCP, TLS and startup as a
  whole, and retries 53300 (too many clients), 57P03 (starting up) and refused connects
  with jittered backoff.
- ``iam=True``: the function's role signs a token (locally, cached ~14 minutes); no
  password exists in the function's configuration. The token only ever goes to a server
  whose certificate verified (``sslmode=verify-full``).
- ``verify=True``: RDS Proxy's certificate comes from ACM and chains to the Amazon root
  CAs in the runtime's trust store (``sslrootcert=system``, libpq 16+, which psycopg's
  binary wheel bundles). Connecting to an RDS instance directly instead, set ``DB_SSL_CA``
  to the RDS CA bundle (global-bundle.pem) shipped with the code.
- Through the proxy the connector sets psycopg's ``prepare_threshold=None``: a statement
  prepared on the server after five runs would pin the connection for the life of the
  environment. (The host name tells it is a proxy; with a CNAME, pass ``proxy=True``.)
- ``autocommit=True``: an open transaction would pin the connection on the proxy and hold
  locks while the environment is frozen.
- ``LAMBDA_CONN_PINNING_CHECK=1`` in the environment logs each statement class that pins
  (``rds_proxy_pinning``), once per connection.
"""

from __future__ import annotations

import os
from typing import Any

from lambda_conn import RDSConnector, managed_connection

rds = RDSConnector(
    os.environ["DB_HOST"],
    engine="postgresql",
    port=int(os.environ.get("DB_PORT", "5432")),
    user=os.environ["DB_USER"],
    database=os.environ["DB_NAME"],
    iam=True,  # region from AWS_REGION, credentials from the function's role
    ssl_ca=os.environ.get("DB_SSL_CA") or None,
    verify=True,
    autocommit=True,
)
db = rds.reused(max_age=900)


@managed_connection
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    conn = db(context)
    user, version = conn.execute("SELECT current_user, version()").fetchone()
    return {"user": user, "version": version}
