"""Every environment variable lambda_conn reads, in one table.

The code takes each name, keyword and parser from here (``_guard/config.py``,
``_fd_audit.py``, ``_rds/iam.py``), and the configuration tables of README.md and
docs/configuration.md are rendered from it (``scripts/settings-docs`` rewrites them;
``tests/test_settings.py`` fails when they disagree). Imported at decoration time, never by
``import lambda_conn``: it imports nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
BOOL_FORMS = "`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (any case)"


class Setting:
    """One environment variable: what it is called, parsed by, defaults to and accepts.

    ``parser`` names a function of ``_guard.config`` (health settings) or of this module;
    ``group`` is the table it is documented in; ``keyword`` the ``@health_guard`` (or
    ``@managed_connection``) keyword that overrides it; ``activates``: setting it turns the
    health guard on.
    """

    __slots__ = (
        "accepted",
        "activates",
        "default",
        "group",
        "keyword",
        "name",
        "parser",
        "safe_to_show",
    )

    def __init__(
        self,
        name: str,
        *,
        group: str,
        parser: str,
        default: str,
        accepted: str,
        keyword: str | None = None,
        activates: bool = False,
    ) -> None:
        self.name = name
        self.group = group
        self.parser = parser
        self.default = default
        self.accepted = accepted
        self.keyword = keyword
        self.activates = activates
        # A refused value is shown back only if the setting can never hold a secret: one
        # read by a parser of a fixed vocabulary (a boolean, a list of trigger names).
        self.safe_to_show = parser in _VOCABULARY_PARSERS

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"


_VOCABULARY_PARSERS = ("parse_bool", "parse_retrying")
# Keyword options whose values are names from a fixed vocabulary (client names, enums,
# booleans): never a secret, so a refused one is shown (a typo reads as one). Hosts, DSNs,
# users, passwords, paths and free text are not here: theirs stay redacted.
KEYWORDS_SAFE_TO_SHOW = frozenset(
    {
        "audit_descriptors",
        "check_hostname",
        "clients",
        "driver",
        "engine",
        "iam",
        "on_leak",
        "pinning_check",
        "resume_tls",
        "sslmode",
        "tls",
        "verify",
    }
)


def safe_to_show(setting: str) -> bool:
    """Whether a refused value of ``setting`` (an option or a variable) may be shown."""
    known = BY_NAME.get(setting)
    return known.safe_to_show if known is not None else setting in KEYWORDS_SAFE_TO_SHOW


SETTINGS = (
    Setting(
        "LAMBDA_CONN_AUDIT_DESCRIPTORS",
        group="audit",
        keyword="audit_descriptors",
        parser="parse_bool",
        default="off",
        accepted=f"{BOOL_FORMS}: also report every descriptor the invocation opened and left "
        "open, tracked or not (about 50 us per invocation)",
    ),
    Setting(
        "LAMBDA_CONN_PINNING_CHECK",
        group="audit",
        parser="parse_bool",
        default="off",
        accepted=f"{BOOL_FORMS}: log each statement class that pins an RDS Proxy connection "
        "(`rds_proxy_pinning`), once per tracked or reused connection of PyMySQL, mysqlclient, "
        "mysql-connector, psycopg or psycopg2 "
        "(read when the first handler is decorated; `RDSConnector(pinning_check=True)` for "
        "one connector)",
    ),
    Setting(
        "FD_HEALTH_LIMIT",
        group="health",
        keyword="fd_limit",
        parser="parse_fd_limit",
        default="off",
        activates=True,
        accepted="open descriptors, a whole number from 1 to the RLIMIT_NOFILE soft limit "
        "(`512`; 1,024 on Lambda), or a share of that limit above 0% and at most 100% (`50%`)",
    ),
    Setting(
        "MEMORY_HEALTH_LIMIT",
        group="health",
        keyword="memory_limit",
        parser="parse_memory_limit",
        default="off",
        activates=True,
        accepted="a size with a unit, `KB`/`MB`/`GB` or `KiB`/`MiB`/`GiB` (all powers of 1024, "
        "as in Lambda's memory setting; decimals allowed), no larger than the function's "
        "memory (`900MB`), or a share of `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` above 0% and at "
        "most 100% (`80%`). Compared with current resident memory, never the peak. A share "
        "outside Lambda (no memory size known) is not checked",
    ),
    Setting(
        "HEALTH_MAX_INVOCATIONS",
        group="health",
        keyword="max_invocations",
        parser="parse_count",
        default="off",
        activates=True,
        accepted="a whole number of invocations >= 1 (`10000`), jittered like the other limits",
    ),
    Setting(
        "HEALTH_MIN_LIFETIME",
        group="health",
        keyword="min_lifetime",
        parser="parse_seconds",
        default="`60`",
        accepted="seconds >= 0 (`60`, `60s`, `90.5`): a limit does not recycle an environment "
        "younger than this, unless its sustained growth at its request rate would reach the "
        "hard ceiling first (then it recycles at the limit); the hard ceiling and a "
        "projection onto the hard maximum ignore it",
    ),
    Setting(
        "HEALTH_JITTER",
        group="health",
        keyword="jitter",
        parser="parse_jitter",
        default="`10%`",
        accepted="a share from 0% to 100% (`10%`; keyword also `0.1`): each environment moves "
        "its limits towards its baseline by a random share of this, so a fleet does not "
        "recycle at once",
    ),
    Setting(
        "HEALTH_REPORT_ONLY",
        group="health",
        keyword="report_only",
        parser="parse_bool",
        default="`false`",
        accepted=f"{BOOL_FORMS}: log and emit the metric, never recycle",
    ),
    Setting(
        "HEALTH_RETRYING_TRIGGERS",
        group="health",
        keyword="retrying_triggers",
        parser="parse_retrying",
        default="`report`",
        accepted="`report` or `recycle`: what to do when the invocation came from a trigger "
        "the platform may retry (SQS, Kinesis, DynamoDB streams, Kafka, MQ, DocumentDB "
        "batches; S3, SNS, EventBridge, SES, CloudWatch Logs events)",
    ),
    Setting(
        "HEALTH_HARD_CEILING",
        group="health",
        keyword="hard_ceiling",
        parser="parse_hard_ceiling",
        default="`90%`",
        accepted="a share of the hard maximum (RLIMIT_NOFILE, the function's memory) above 0% "
        "and at most 100% (`90%`; keyword also `0.9`): above it the guard recycles whatever "
        "the minimum lifetime or the trigger. Independently of it, the guard recycles when "
        "the next invocation or two at the measured growth would reach the maximum itself "
        "(`reason: projected`)",
    ),
    Setting(
        "HEALTH_GRACEFUL_SHUTDOWN",
        group="health",
        keyword="graceful_shutdown",
        parser="parse_bool",
        default="on with the guard, else off",
        accepted=f"{BOOL_FORMS}: register a no-op internal extension so Lambda sends SIGTERM, "
        "and close on it the running invocation's connections (a timeout's) and the "
        "`reused_connection`s",
    ),
    Setting(
        "LAMBDA_CONN_RESERVED_CONCURRENCY",
        group="budget",
        keyword="reserved_concurrency",
        parser="parse_whole_number",
        default="unset: no budget",
        accepted="the function's reserved concurrency, a whole number >= 1 (`50`): the most "
        "execution environments Lambda runs at once, each holding its own connections",
    ),
    Setting(
        "LAMBDA_CONN_MAX_CONNECTIONS",
        group="budget",
        keyword="max_connections",
        parser="parse_whole_number",
        default="unset: not compared",
        accepted="the database's `max_connections`, a whole number >= 1 (`100`): the budget "
        "is logged at WARNING when it is larger",
    ),
    Setting(
        "LAMBDA_CONN_CONNECTIONS_PER_ENVIRONMENT",
        group="budget",
        keyword="connections_per_environment",
        parser="parse_whole_number",
        default="the `reused_connection`s declared by then, at least 1",
        accepted="a whole number >= 1 (`2`): what one environment holds (its reused "
        "connections and the size of its module-level pools)",
    ),
    # Set by Lambda itself: read, never to be set by hand.
    Setting(
        "AWS_LAMBDA_RUNTIME_API",
        group="lambda",
        parser="text",
        default="unset: outside Lambda",
        accepted="host:port of the Runtime API; absent, the health guard only reports",
    ),
    Setting(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        group="lambda",
        parser="whole_number",
        default="unset",
        accepted="the function's memory in MB: resolves `MEMORY_HEALTH_LIMIT` shares and the "
        "memory ceiling",
    ),
    Setting(
        "AWS_LAMBDA_MAX_CONCURRENCY",
        group="lambda",
        parser="text",
        default="unset",
        accepted="set: multi-concurrent mode, where the health guard only reports",
    ),
    Setting(
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        group="lambda",
        parser="text",
        default="`on-demand`",
        accepted="`snap-start` installs the SnapStart hooks",
    ),
    Setting(
        "AWS_LAMBDA_FUNCTION_NAME",
        group="lambda",
        parser="text",
        default="unset",
        accepted="the metric's `FunctionName` dimension; set, the connection budget is "
        "logged at Init",
    ),
    Setting(
        "AWS_REGION",
        group="lambda",
        parser="text",
        default="unset",
        accepted="the region of `IAMTokenProvider` / `RDSConnector(iam=True)` when none is "
        "given (then `AWS_DEFAULT_REGION`)",
    ),
    Setting(
        "AWS_DEFAULT_REGION",
        group="lambda",
        parser="text",
        default="unset",
        accepted="the region when neither the keyword nor `AWS_REGION` gives one",
    ),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
GROUPS = {
    "audit": ("Variable", "Default", "Accepted forms"),
    "health": ("Variable", "Keyword", "Default", "Accepted forms"),
    "budget": ("Variable", "Keyword", "Default", "Accepted forms"),
    "lambda": ("Variable (set by Lambda)", "Default", "What lambda_conn reads it for"),
}


def in_group(group: str) -> tuple[Setting, ...]:
    return tuple(setting for setting in SETTINGS if setting.group == group)


def env_value(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's text, or None when unset or empty (an empty value counts as unset)."""
    raw = environ.get(BY_NAME[name].name, "")
    return raw if raw.strip() else None


def parse_bool(setting: str, value: Any) -> bool:
    """The one boolean form for every setting: ``True``/``False``, or a word from
    :data:`BOOL_FORMS`. An empty string is not a boolean (as a variable it means unset)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    from lambda_conn._errors import ConfigurationError

    raise ConfigurationError(setting, value, "true or false (also 1/0, yes/no, on/off)")


def parse_whole_number(setting: str, value: Any) -> int:
    """A whole number >= 1, as an int or its digits (``"50"``); never a bool."""
    text = value.strip() if isinstance(value, str) else None
    number = int(text) if text is not None and text.isdigit() and text.isascii() else value
    if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
        return number
    from lambda_conn._errors import ConfigurationError

    raise ConfigurationError(setting, value, "a whole number >= 1")


def markdown_table(group: str) -> str:
    """The table of ``group`` as README.md and docs/configuration.md show it."""
    header = GROUPS[group]
    rows = []
    for s in in_group(group):
        cells = [f"`{s.name}`"]
        if "Keyword" in header:
            cells.append(f"`{s.keyword}`" if s.keyword else "")
        cells += [s.default, s.accepted]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *rows])
