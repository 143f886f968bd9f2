"""A function's configuration, validated once, and the environment Lambda would give it.

Validation errors name the argument, the value and what is accepted, because a soak that
fails after a minute on a typo wastes more than a minute.
"""

from __future__ import annotations

import math
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from lambda_conn.local._constants import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    DEFAULT_VERSION,
    INIT_TIMEOUT_S,
    MAX_MEMORY_MB,
    MAX_TIMEOUT_S,
    MIN_MEMORY_MB,
)
from lambda_conn.local._handler_spec import HandlerSpec, parse_handler
from lambda_conn.local._state import FunctionMetadata

__all__ = ["FunctionConfig", "check_env"]

# Set by the local runtime itself; a user value would silently lie about the sandbox.
_OWNED_KEYS = frozenset(
    {"AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}
)
# awslambdaric would fork workers and expect a socket the local runtime does not provide.
_UNSUPPORTED_KEYS = frozenset({"AWS_LAMBDA_MAX_CONCURRENCY", "AWS_LAMBDA_INITIALIZATION_TYPE"})


def _check_memory(memory_mb: object) -> int:
    if (
        isinstance(memory_mb, bool)
        or not isinstance(memory_mb, int)
        or not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB
    ):
        raise ValueError(
            f"memory_mb={memory_mb!r} is not accepted: expected an integer number of MB "
            f"from {MIN_MEMORY_MB} to {MAX_MEMORY_MB}"
        )
    return memory_mb


def _check_seconds(name: str, value: object, upper: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= upper
    ):
        raise ValueError(
            f"{name}={value!r} is not accepted: expected seconds, more than 0 and at most {upper:g}"
        )
    return float(value)


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` as a dict, or ValueError naming the first key the local runtime refuses."""
    result = dict(env or {})
    for key, value in result.items():
        if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
            raise ValueError(
                f"env entry {key!r}={value!r} is not accepted: expected str keys and values"
            )
        if key in _OWNED_KEYS:
            raise ValueError(
                f"env key {key!r} is not accepted: the local runtime sets it itself (memory: "
                "memory_mb= or --memory; task root: handler_dir= or --handler-dir); "
                f"expected any other name, not one of {', '.join(sorted(_OWNED_KEYS))}"
            )
        if key in _UNSUPPORTED_KEYS:
            raise ValueError(
                f"env key {key!r} is not accepted: the local runtime does not emulate "
                "multi-concurrent mode or SnapStart"
            )
    return result


@dataclass(frozen=True)
class FunctionConfig:
    """Everything needed to start execution environments for one function."""

    spec: HandlerSpec
    task_root: str
    memory_mb: int
    timeout_s: float
    env: Mapping[str, str]
    function_name: str
    init_timeout_s: float = INIT_TIMEOUT_S
    region: str = DEFAULT_REGION
    python: str = field(default=sys.executable)

    @classmethod
    def create(
        cls,
        handler: str,
        *,
        handler_dir: str | os.PathLike[str] | None,
        memory_mb: int,
        timeout_s: float,
        env: Mapping[str, str] | None,
        function_name: str | None,
        init_timeout_s: float,
    ) -> FunctionConfig:
        spec = parse_handler(handler)
        root = os.path.abspath(os.fspath(handler_dir) if handler_dir is not None else os.getcwd())
        if not os.path.isdir(root):
            raise ValueError(f"handler_dir={root!r} is not accepted: expected a directory")
        return cls(
            spec=spec,
            task_root=root,
            memory_mb=_check_memory(memory_mb),
            timeout_s=_check_seconds("timeout_s", timeout_s, MAX_TIMEOUT_S),
            env=check_env(env),
            function_name=function_name or spec.module.replace(".", "-"),
            init_timeout_s=_check_seconds("init_timeout_s", init_timeout_s, MAX_TIMEOUT_S),
        )

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{DEFAULT_ACCOUNT}:function:{self.function_name}"

    def metadata(self) -> FunctionMetadata:
        return FunctionMetadata(self.function_name, DEFAULT_VERSION, self.spec.lambda_form)

    def environ(self, runtime_api: str) -> dict[str, str]:
        """A clean environment like Lambda's (nothing inherited but PATH), plus user env."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        environ = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": DEFAULT_VERSION,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[{DEFAULT_VERSION}]{uuid.uuid4().hex}",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        }
        if "LD_LIBRARY_PATH" in os.environ:
            environ["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
        environ.update(self.env)
        extra_path = self.env.get("PYTHONPATH")
        environ.update(
            {
                "_HANDLER": self.spec.lambda_form,
                "LAMBDA_TASK_ROOT": self.task_root,
                "PYTHONPATH": self.task_root + (os.pathsep + extra_path if extra_path else ""),
                "AWS_LAMBDA_RUNTIME_API": runtime_api,
            }
        )
        return environ
