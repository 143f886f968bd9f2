"""The client registry: one :class:`Integration` per client, the rest derived from it.

Each module in ``lambda_conn/_integrations/`` that defines ``INTEGRATION`` is a built-in
client; a third-party package adds one through the ``lambda_conn.clients`` entry point group
or :func:`register_client`. What ``clients=`` accepts, which module imports trigger which
patch (``lambda_conn._tracking``) and how a reused connection is probed (each ``Kind``'s
``alive``) all come from here, so adding a client is one file.

Nothing here imports a client: built-in integration modules import theirs inside their
patch functions, and a plugin module is imported only once the module it hooks is.
"""

from __future__ import annotations

import os
import threading

from lambda_conn._errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import ModuleType
    from typing import Any

    from lambda_conn._entry_points import EntryPoint
    from lambda_conn._kinds import Kind

GROUP = "lambda_conn.clients"


class Statements:
    """How the pinning check (``lambda_conn._pinning``) sees one client's statements.

    ``engine`` picks the rules that classify them ("mysql" or "postgresql"). ``hooks``
    maps each module to a patch run once that module is imported *and* the check is on
    (never otherwise: off, nothing is wrapped); it receives the module and a
    :class:`lambda_conn._pinning.Check` and wraps the client's statement entry points so
    that each statement passes through the check before it is sent.
    """

    __slots__ = ("engine", "hooks")

    def __init__(
        self, engine: str, *, hooks: Mapping[str, Callable[[ModuleType, Any], None]]
    ) -> None:
        if engine not in ("mysql", "postgresql"):
            raise ConfigurationError("engine", engine, '"mysql" or "postgresql"')
        if not hooks or not all(isinstance(m, str) and m and callable(p) for m, p in hooks.items()):
            raise ConfigurationError(
                "hooks", hooks, "a mapping of module names to patch(module, check)"
            )
        self.engine = engine
        self.hooks = dict(hooks)

    def __repr__(self) -> str:
        return f"Statements({self.engine!r}, hooks={sorted(self.hooks)!r})"


class Integration:
    """How lambda_conn tracks one client.

    ``name`` is what ``@managed_connection(clients=[...])`` calls it; ``hooks`` maps each
    module to hook to the patch run once that module has been imported (as wrapt's
    ``register_post_import_hook``): the patch wraps the constructors of the client's
    connection classes with :meth:`track`, which also registers their :class:`Kind`.
    ``statements`` (database clients) says how the pinning check observes its statements.
    """

    __slots__ = ("hooks", "name", "origin", "statements")

    def __init__(
        self,
        name: str,
        *,
        hooks: Mapping[str, Callable[[ModuleType], None]],
        statements: Statements | None = None,
        origin: str = "lambda_conn",
    ) -> None:
        if not isinstance(name, str) or not name or name == "all":
            raise ConfigurationError("name", name, 'a non-empty client name other than "all"')
        if not hooks or not all(isinstance(m, str) and m for m in hooks):
            raise ConfigurationError("hooks", hooks, "a mapping of module names to patches")
        for module, patch in hooks.items():
            if not callable(patch):
                raise ConfigurationError(f"hooks[{module!r}]", patch, "a callable(module)")
        if statements is not None and not isinstance(statements, Statements):
            raise ConfigurationError("statements", statements, "a lambda_conn Statements or None")
        self.name = name
        self.hooks = dict(hooks)
        self.statements = statements
        self.origin = origin  # the distribution that provides it (plugins)

    def __repr__(self) -> str:
        return f"Integration({self.name!r}, hooks={sorted(self.hooks)!r})"

    def track(self, cls: type, kind: Kind, *, own: Callable[[Any], Any] | None = None) -> None:
        """Track each ``cls`` instance built inside a scope that tracks this client, and
        close it by ``kind``'s rules. Call it from a patch."""
        import wrapt

        from lambda_conn._integrations._track import tracker
        from lambda_conn._kinds import register_kind

        wrapt.wrap_function_wrapper(cls, "__init__", tracker(self.name, kind, own=own))
        register_kind(cls, kind)


_lock = threading.RLock()
_by_name: dict[str, Integration] = {}
_builtins_loaded = False
_plugins: dict[str, list[EntryPoint]] | None = None  # hooked module -> not yet loaded
_on_register: list[Callable[[Integration], None]] = []  # _tracking's, once installed


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _lock:
        if _builtins_loaded:
            return
        import sys

        from lambda_conn import _integrations

        for module_name in _builtin_module_names(_integrations.__path__):
            qualified = f"lambda_conn._integrations.{module_name}"
            __import__(qualified)  # not importlib.import_module: importlib imports warnings
            module = sys.modules[qualified]
            integration = getattr(module, "INTEGRATION", None)
            if isinstance(integration, Integration):
                _by_name.setdefault(integration.name, integration)
        _builtins_loaded = True


def _builtin_module_names(paths: Iterable[str]) -> list[str]:
    names: set[str] = set()
    for path in paths:
        try:
            listing = os.listdir(path)
        except OSError:  # not a directory (a zip): ask the importer
            import pkgutil

            names.update(info.name for info in pkgutil.iter_modules([path]))
            continue
        for file in listing:
            stem, dot, suffix = file.partition(".")
            if dot and suffix in ("py", "pyc") and not stem.startswith("__"):
                names.add(stem)
    return sorted(names)


def plugin_entry_points() -> dict[str, list[EntryPoint]]:
    """Installed plugins not loaded yet, by the module whose import loads them."""
    global _plugins
    if _plugins is None:
        with _lock:
            if _plugins is None:
                from lambda_conn._entry_points import entry_points

                found: dict[str, list[EntryPoint]] = {}
                for ep in entry_points(GROUP):
                    found.setdefault(ep.name, []).append(ep)
                _plugins = found
    return _plugins


def integrations() -> list[Integration]:
    """Every integration known so far (built-in, registered, plugins already loaded)."""
    _load_builtins()
    return list(_by_name.values())


def hooked_modules() -> set[str]:
    """The modules whose import patches something, plugins included."""
    modules = {module for integration in integrations() for module in integration.hooks}
    modules.update(plugin_entry_points())
    return modules


def hooks_for(module: str) -> list[tuple[Integration, Callable[[ModuleType], None]]]:
    """The patches to run now that ``module`` is imported; loads the plugins it names."""
    for ep in plugin_entry_points().pop(module, ()):
        load_plugin(ep)
    return [(i, i.hooks[module]) for i in integrations() if module in i.hooks]


def load_plugin(ep: EntryPoint) -> Integration | None:
    """Import a plugin's integration; log ``tracking_unavailable`` if it cannot be used."""
    try:
        import sys

        module_name, _, attr = ep.value.partition(":")
        __import__(module_name.strip())
        obj: Any = sys.modules[module_name.strip()]
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
        if not isinstance(obj, Integration):
            raise TypeError(f"{ep.value} is a {type(obj).__name__}, not a lambda_conn.Integration")
        if ep.name not in obj.hooks:
            raise ValueError(f"{ep.value} does not hook module {ep.name!r}")
        if obj.origin == "lambda_conn":
            obj.origin = ep.dist
        if _by_name.get(obj.name) is not obj:
            register_client(obj)
        return obj
    except Exception as exc:  # a broken plugin never breaks the user's import
        from lambda_conn._log import WARNING, log_event

        log_event(
            WARNING,
            "tracking_unavailable",
            plugin=ep.dist,
            entry_point=ep.value,
            module=ep.name,
            error=repr(exc),
        )
        return None


def load_all_plugins() -> None:
    """Load every installed plugin (to name them all in an error, or in ``CLIENTS``)."""
    pending = plugin_entry_points()
    for module in list(pending):
        for ep in pending.pop(module, ()):
            load_plugin(ep)


def register_client(integration: Integration) -> Integration:
    """Add a client integration at run time (the alternative to an entry point).

    Its hooks apply at once to modules already imported, else when they are. Returns it.
    """
    if not isinstance(integration, Integration):
        raise ConfigurationError("integration", integration, "a lambda_conn.Integration")
    _load_builtins()
    with _lock:
        existing = _by_name.get(integration.name)
        if existing is integration:
            return integration
        if existing is not None:
            raise ConfigurationError(
                "name", integration.name, f"a client name not taken already (by {existing!r})"
            )
        if integration.origin == "lambda_conn":  # not a built-in: say where it comes from
            integration.origin = _defined_in(integration)
        _by_name[integration.name] = integration
        callbacks = list(_on_register)
    for callback in callbacks:
        callback(integration)
    return integration


def _defined_in(integration: Integration) -> str:
    """The module that defines a registered integration's patches (what logs name)."""
    for patch in integration.hooks.values():
        module = getattr(patch, "__module__", None)
        if isinstance(module, str) and module and not module.startswith("lambda_conn."):
            return module
    return f"register_client({integration.name!r})"


def client_names(*, with_plugins: bool = False) -> tuple[str, ...]:
    """What ``clients=`` accepts, in registration order (built-ins first)."""
    if with_plugins:
        load_all_plugins()
    return tuple(integration.name for integration in integrations())


def parse_clients(clients: str | Iterable[str]) -> frozenset[str] | None:
    """``clients=`` as a set of names (None for "all"); unknown names fail early."""
    if isinstance(clients, str):
        if clients == "all":
            return None
        names: list[Any] = [clients]
    else:
        try:
            names = list(clients)
        except TypeError:
            raise ConfigurationError("clients", clients, _accepted()) from None
    known = client_names()
    unknown = [name for name in names if name not in known]
    if unknown:  # perhaps a plugin's: load them (only on this path, never by default)
        known = client_names(with_plugins=True)
        for name in unknown:
            if name not in known:
                raise ConfigurationError("clients", name, _accepted())
    return frozenset(names)


def _accepted() -> str:
    return f'"all" or any of {", ".join(client_names(with_plugins=True))}'


def __getattr__(name: str) -> object:
    if name == "CLIENTS":  # every call: plugins registered later show up
        return client_names(with_plugins=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
