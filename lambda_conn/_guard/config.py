"""Health guard settings: environment variables, keyword overrides, accepted forms.

A keyword argument wins over the environment, which wins over the default (the
Powertools order). Every bad value raises ``ConfigurationError`` naming the setting, the
value and the accepted forms, at decoration time: that is Init, so a misconfigured
function fails its first cold start instead of running unguarded.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lambda_conn._errors import ConfigurationError
from lambda_conn._settings import env_value, in_group, parse_bool

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# Names, keywords and parsers come from the one table of settings (lambda_conn._settings).
_HEALTH = in_group("health")
KEYWORDS = {setting.keyword: setting.name for setting in _HEALTH if setting.keyword}
ENV_NAMES = tuple(KEYWORDS.values())
# Any of these turns the guard on; the others only tune it.
ACTIVATING = tuple(setting.name for setting in _HEALTH if setting.activates)

RETRYING_CHOICES = ("report", "recycle")
# Lambda's memory setting is in MB of 2**20 bytes; MB and MiB both mean that here.
_UNITS = {
    "kb": 1 << 10,
    "kib": 1 << 10,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


class Platform:
    """What the execution environment says about itself (read once, at Init)."""

    __slots__ = (
        "fd_rlimit",
        "function_name",
        "max_concurrency",
        "memory_mb",
        "runtime_api",
        "snap_start",
    )

    def __init__(
        self,
        *,
        fd_rlimit: int,
        runtime_api: str | None = None,
        memory_mb: int | None = None,
        max_concurrency: str | None = None,
        snap_start: bool = False,
        function_name: str | None = None,
    ) -> None:
        self.fd_rlimit = fd_rlimit
        self.runtime_api = runtime_api or None
        self.memory_mb = memory_mb
        self.max_concurrency = max_concurrency or None
        self.snap_start = snap_start
        self.function_name = function_name

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], fd_rlimit: int) -> Platform:
        memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "").strip()
        return cls(
            fd_rlimit=fd_rlimit,
            runtime_api=environ.get("AWS_LAMBDA_RUNTIME_API"),
            memory_mb=int(memory) if _is_whole(memory) and int(memory) > 0 else None,
            max_concurrency=environ.get("AWS_LAMBDA_MAX_CONCURRENCY"),
            snap_start=environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start",
            function_name=environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        )

    @property
    def in_lambda(self) -> bool:
        """True under a Runtime API; outside it the guard only reports."""
        return self.runtime_api is not None

    @property
    def memory_bytes(self) -> int | None:
        return self.memory_mb << 20 if self.memory_mb is not None else None


class Limit:
    """A resolved limit and the text it came from (for log lines and errors).

    ``value`` is None when the limit cannot be resolved here: a memory share outside Lambda,
    where ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` is not set.
    """

    __slots__ = ("text", "value")

    def __init__(self, value: int | None, text: str) -> None:
        self.value = value
        self.text = text

    def __repr__(self) -> str:
        return f"Limit({self.value!r}, {self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limit) and (self.value, self.text) == (other.value, other.text)

    def __hash__(self) -> int:
        return hash((self.value, self.text))


def _is_whole(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` takes superscripts (``int`` refuses them)."""
    return text.isascii() and text.isdigit()


def _is_decimal(text: str) -> bool:
    return _is_whole(text.replace(".", "", 1))


def _share(text: str) -> float | None:
    """``"50%"`` -> 0.5; None if ``text`` is not a percentage."""
    text = text.strip()
    if not text.endswith("%"):
        return None
    number = text[:-1].strip()
    if not _is_decimal(number):
        return -1.0  # a malformed percentage: callers reject anything outside their range
    return float(number) / 100


def parse_fd_limit(setting: str, value: Any, rlimit: int) -> Limit:
    accepted = (
        f"a number of descriptors from 1 to the RLIMIT_NOFILE soft limit ({rlimit}), like 512, "
        "or a share of that limit above 0% and at most 100%, like 50%"
    )
    if isinstance(value, bool):
        raise ConfigurationError(setting, value, accepted)
    if isinstance(value, int):
        count = value
    elif isinstance(value, str):
        share = _share(value)
        if share is not None:
            if not 0 < share <= 1:
                raise ConfigurationError(setting, value, accepted)
            return Limit(max(1, math.floor(rlimit * share)), value.strip())
        if not _is_whole(value.strip()):
            raise ConfigurationError(setting, value, accepted)
        count = int(value)
    else:
        raise ConfigurationError(setting, value, accepted)
    if not 1 <= count <= rlimit:
        raise ConfigurationError(setting, value, accepted)
    return Limit(count, str(value).strip())


def parse_memory_limit(setting: str, value: Any, memory_mb: int | None) -> Limit:
    ceiling = f" ({memory_mb}MB here)" if memory_mb is not None else ""
    accepted = (
        "a size with a unit, like 900MB (KB, MB, GB or KiB, MiB, GiB; all powers of 1024 "
        f"as in Lambda's memory setting) no larger than the function's memory{ceiling}, "
        "or a share of AWS_LAMBDA_FUNCTION_MEMORY_SIZE above 0% and at most 100%, like 80%"
    )
    if not isinstance(value, str):
        raise ConfigurationError(setting, value, accepted)
    text = value.strip()
    share = _share(text)
    if share is not None:
        if not 0 < share <= 1:
            raise ConfigurationError(setting, value, accepted)
        if memory_mb is None:
            return Limit(None, text)
        return Limit(math.floor((memory_mb << 20) * share), text)
    number = text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = _UNITS.get(text[len(number) :].strip().lower())
    number = number.strip()
    if unit is None or not _is_decimal(number):
        raise ConfigurationError(setting, value, accepted)
    size = math.floor(float(number) * unit)
    if size <= 0 or (memory_mb is not None and size > memory_mb << 20):
        raise ConfigurationError(setting, value, accepted)
    return Limit(size, text)


def parse_count(setting: str, value: Any) -> int:
    accepted = "a whole number of invocations >= 1, like 10000"
    if isinstance(value, bool):
        raise ConfigurationError(setting, value, accepted)
    count = int(value) if isinstance(value, str) and _is_whole(value.strip()) else value
    if not isinstance(count, int) or count < 1:
        raise ConfigurationError(setting, value, accepted)
    return count


def parse_seconds(setting: str, value: Any) -> float:
    accepted = "a number of seconds >= 0, like 60 or 60s"
    if isinstance(value, bool):
        raise ConfigurationError(setting, value, accepted)
    seconds: float
    if isinstance(value, str):
        text = value.strip().removesuffix("s").strip()
        if not _is_decimal(text):
            raise ConfigurationError(setting, value, accepted)
        seconds = float(text)
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        raise ConfigurationError(setting, value, accepted)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(setting, value, accepted)
    return seconds


def parse_fraction(setting: str, value: Any, *, low: float, accepted: str) -> float:
    """A share given as ``"10%"`` (environment or keyword) or ``0.1`` (keyword)."""
    if isinstance(value, bool):
        raise ConfigurationError(setting, value, accepted)
    fraction: float | None
    if isinstance(value, str):
        fraction = 0.0 if value.strip() == "0" else _share(value)
    elif isinstance(value, (int, float)):
        fraction = float(value)
    else:
        fraction = None
    if fraction is None or not math.isfinite(fraction) or not low <= fraction <= 1:
        raise ConfigurationError(setting, value, accepted)
    return fraction


def parse_jitter(setting: str, value: Any) -> float:
    return parse_fraction(
        setting, value, low=0.0, accepted="a share from 0% to 100%, like 10% (or 0.1 as keyword)"
    )


def parse_hard_ceiling(setting: str, value: Any) -> float:
    return parse_fraction(
        setting,
        value,
        low=1e-9,
        accepted="a share of the hard maximum above 0% and at most 100%, like 90% "
        "(or 0.9 as keyword)",
    )


def parse_retrying(setting: str, value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in RETRYING_CHOICES:
        raise ConfigurationError(setting, value, '"report" or "recycle"')
    return str(text)


class HealthConfig:
    """Validated guard settings. Limits are resolved against this environment's maxima."""

    __slots__ = (
        "fd_limit",
        "graceful_shutdown",
        "hard_ceiling",
        "jitter",
        "max_invocations",
        "memory_limit",
        "min_lifetime",
        "report_only",
        "retrying_triggers",
    )

    def __init__(
        self,
        *,
        fd_limit: Limit | None = None,
        memory_limit: Limit | None = None,
        max_invocations: int | None = None,
        min_lifetime: float = 60.0,
        jitter: float = 0.1,
        report_only: bool = False,
        retrying_triggers: str = "report",
        hard_ceiling: float = 0.9,
        graceful_shutdown: bool | None = None,
    ) -> None:
        self.fd_limit = fd_limit
        self.memory_limit = memory_limit
        self.max_invocations = max_invocations
        self.min_lifetime = min_lifetime
        self.jitter = jitter
        self.report_only = report_only
        self.retrying_triggers = retrying_triggers
        self.hard_ceiling = hard_ceiling
        self.graceful_shutdown = graceful_shutdown

    @property
    def wants_shutdown(self) -> bool:
        """Graceful shutdown: on with the guard unless turned off, or asked for alone."""
        if self.graceful_shutdown is None:
            return self.enabled
        return self.graceful_shutdown

    @property
    def enabled(self) -> bool:
        """True when there is anything to check after an invocation."""
        return (
            self.fd_limit is not None
            or self.memory_limit is not None
            or self.max_invocations is not None
        )

    def _items(self) -> tuple[tuple[str, Any], ...]:
        return tuple((name, getattr(self, name)) for name in KEYWORDS)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._items())
        return f"HealthConfig({fields})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HealthConfig) and self._items() == other._items()

    def __hash__(self) -> int:
        return hash(self._items())


def load_config(
    environ: Mapping[str, str], overrides: Mapping[str, Any], platform: Platform
) -> HealthConfig:
    """Settings from ``overrides`` (keyword arguments) over ``environ`` over defaults.

    An empty environment variable counts as unset. A keyword limit of None turns that
    limit off whatever the environment says.
    """
    parsers: dict[str, Callable[[str, Any], Any]] = {
        "parse_fd_limit": lambda s, v: parse_fd_limit(s, v, platform.fd_rlimit),
        "parse_memory_limit": lambda s, v: parse_memory_limit(s, v, platform.memory_mb),
        "parse_count": parse_count,
        "parse_seconds": parse_seconds,
        "parse_jitter": parse_jitter,
        "parse_bool": parse_bool,
        "parse_retrying": parse_retrying,
        "parse_hard_ceiling": parse_hard_ceiling,
    }
    unknown = set(overrides) - set(KEYWORDS)
    if unknown:
        raise TypeError(
            f"unknown health guard option(s) {sorted(unknown)}; options are {sorted(KEYWORDS)}"
        )
    values: dict[str, Any] = {}
    for setting in _HEALTH:
        keyword, parse = str(setting.keyword), parsers[setting.parser]
        if keyword in overrides:
            value = overrides[keyword]
            if value is None and setting.activates:  # None turns a limit off
                continue
            values[keyword] = parse(keyword, value)
            continue
        raw = env_value(environ, setting.name)
        if raw is not None:
            values[keyword] = parse(setting.name, raw)
    return HealthConfig(**values)
