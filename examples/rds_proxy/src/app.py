"""A handler behind RDS Proxy: IAM auth over verified TLS, one connection per environment.

- ``iam=True``: the function's role signs a token (locally, cached ~14 minutes); no
  password exists in the function's configuration.
- ``verify=True``: RDS Proxy's certificate comes from ACM and chains to the Amazon root
  CAs in the runtime's trust store. Connecting to an RDS instance directly instead, set
  ``DB_SSL_CA`` to the RDS CA bundle (global-bundle.pem) shipped with the code.
- ``db(context)``: the kept connection, checked once per invocation; a reconnect (after
  the proxy's idle timeout, a failover) retries 1040 and network errors with jittered
  backoff, and never outlasts the invocation's remaining time less a margin.
- ``autocommit=True``: an open transaction would pin the connection on the proxy and hold
  locks while the environment is frozen.
"""

from __future__ import annotations

import os
from typing import Any

from lambda_conn import RDSConnector, managed_connection

rds = RDSConnector(
    os.environ["DB_HOST"],
    port=int(os.environ.get("DB_PORT", "3306")),
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
    with conn.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER(), @@version")
        user, version = cursor.fetchone()
    return {"user": user, "version": version}
