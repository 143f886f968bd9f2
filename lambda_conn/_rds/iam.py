"""IAM database auth tokens: signed locally with botocore, cached, never shown.

An RDS IAM token is a SigV4-presigned URL (``host:port/?Action=connect&DBUser=...``), valid
for 15 minutes and checked only when a connection logs in. Signing is local (no network),
but it needs botocore (~130 ms to import) and the role's credentials, so both are loaded on
the first token, never at ``import lambda_conn``. A token is reused until shortly before it
expires: a Lambda environment connecting on every invocation signs about once per
14 minutes instead of every time.

We sign with botocore's ``SigV4QueryAuth`` exactly as ``rds_client.generate_db_auth_token``
does (the tests check the two agree), without building an RDS client, which would load the
RDS service model (~90 ms of cold start, measured in benchmarks/run.py).

botocore logs the canonical request and the signature at DEBUG: together they rebuild the
token. Those lines are dropped while we sign (and only then).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from lambda_conn._errors import ConfigurationError, LambdaConnError
from lambda_conn._log import log_event
from lambda_conn._rds.deadline import seconds

#: Seconds an RDS IAM token is valid (fixed by AWS).
TOKEN_LIFETIME = 900.0
#: Default: sign a new token when the cached one has less than this left.
DEFAULT_REFRESH_MARGIN = 60.0

_REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")  # Lambda sets AWS_REGION


def resolve_region(region: str | None) -> str:
    """``region``, else the environment's (Lambda sets ``AWS_REGION``)."""
    if region is None:
        from lambda_conn._settings import env_value

        for name in _REGION_VARIABLES:
            region = env_value(os.environ, name)
            if region:
                break
    if not isinstance(region, str) or not region:
        raise ConfigurationError(
            "region", region, "an AWS region such as 'us-east-1' (or AWS_REGION set)"
        )
    return region


class _SigningSilencer(logging.Filter):
    """Drops botocore.auth records emitted by our own signing, on this thread only."""

    def __init__(self) -> None:
        super().__init__()
        self.active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_silencer = _SigningSilencer()
_silencer_lock = threading.Lock()
_silencer_installed = False


def _install_silencer() -> None:
    global _silencer_installed
    with _silencer_lock:
        if not _silencer_installed:
            logging.getLogger("botocore.auth").addFilter(_silencer)
            _silencer_installed = True


class IAMTokenProvider:
    """Signs and caches RDS IAM tokens per (host, port, user).

    ``credentials``: an object with ``get_frozen_credentials()`` (botocore or boto3
    credentials); default: botocore's chain (in Lambda, the function role). ``clock`` is
    wall time, as the token's own validity is: a restored SnapStart snapshot or a clock
    that moved back makes the cached token count as expired.
    """

    __slots__ = ("_cache", "_clock", "_credentials", "_lock", "refresh_margin", "region")

    def __init__(
        self,
        region: str | None = None,
        *,
        credentials: Any = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = resolve_region(region)
        margin = seconds("refresh_margin", refresh_margin)
        if margin >= TOKEN_LIFETIME:
            raise ConfigurationError(
                "refresh_margin",
                refresh_margin,
                f"seconds < the token lifetime ({TOKEN_LIFETIME:g})",
            )
        self.refresh_margin = margin
        if credentials is not None and not callable(
            getattr(credentials, "get_frozen_credentials", None)
        ):
            raise ConfigurationError(
                "credentials",
                credentials,  # shown as its type only: it may hold the secret key
                "botocore/boto3 credentials (with get_frozen_credentials()) or None",
            )
        self._credentials = credentials
        self._clock = clock
        self._cache: dict[tuple[str, int, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"IAMTokenProvider(region={self.region!r}, cached_tokens={len(self._cache)})"

    def token(self, host: str, port: int, user: str) -> str:
        """A token for ``user`` at ``host:port``: the cached one while it has time left."""
        key = (host, port, user)
        with self._lock:
            now = self._clock()
            cached = self._cache.get(key)
            if cached is not None:
                token, signed_at = cached
                if 0 <= now - signed_at < TOKEN_LIFETIME - self.refresh_margin:
                    return token
            token = self._sign(host, port, user)
            self._cache[key] = (token, now)
        log_event(
            logging.DEBUG,
            "rds_iam_token_signed",
            host=host,
            port=port,
            user=user,
            region=self.region,
        )
        return token

    def cached(self, host: str, port: int, user: str) -> bool:
        """True when the next ``token()`` for this key would come from the cache."""
        cached = self._cache.get((host, port, user))
        if cached is None:
            return False
        age = self._clock() - cached[1]
        return 0 <= age < TOKEN_LIFETIME - self.refresh_margin

    def invalidate(self, host: str, port: int, user: str) -> None:
        """Forget the cached token (the server refused it): the next one is signed afresh."""
        with self._lock:
            self._cache.pop((host, port, user), None)

    def _resolve_credentials(self) -> Any:
        if self._credentials is None:
            import botocore.session  # type: ignore[import-untyped, unused-ignore]

            credentials = botocore.session.Session().get_credentials()
            if credentials is None:
                raise LambdaConnError(
                    "IAM auth found no AWS credentials (in Lambda they come from the "
                    "function's role; elsewhere set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                    "or a profile)"
                )
            self._credentials = credentials
        return self._credentials

    def _sign(self, host: str, port: int, user: str) -> str:
        try:
            from botocore.auth import SigV4QueryAuth  # type: ignore[import-untyped, unused-ignore]
            from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ImportError(
                "IAM auth (iam=True) needs botocore: pip install 'lambda-conn[rds]' "
                "(the Lambda Python runtime already includes it)"
            ) from None
        credentials = self._resolve_credentials().get_frozen_credentials()
        request = AWSRequest(
            method="GET",
            url=f"https://{host}:{port}/",
            params={"Action": "connect", "DBUser": user},
        )
        signer = SigV4QueryAuth(credentials, "rds-db", self.region, expires=int(TOKEN_LIFETIME))
        _install_silencer()
        _silencer.active.on = True
        try:
            signer.add_auth(request)
        finally:
            _silencer.active.on = False
        url: str = request.prepare().url
        return url[len("https://") :]
