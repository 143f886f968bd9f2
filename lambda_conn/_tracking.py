"""Automatic tracking: patch each client's constructors once its module is imported.

A tiny post-import hook of our own (a meta-path finder) rather than wrapt's, so that
``import lambda_conn`` imports neither wrapt nor any client; wrapt is loaded only when the
user imports a client we patch, whether before or after lambda_conn.
"""

from __future__ import annotations

import os
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    from lambda_conn._registry import Integration

# Which module imports trigger which patch comes from the registry (lambda_conn._registry):
# each integration declares the modules it hooks. We hook packages, not submodules: a
# package's own __init__ must have finished before we touch it (SQLAlchemy resolves its
# internal imports only at the end of sqlalchemy/__init__).
_pending: set[str] = set()
_done: set[tuple[str, str]] = set()  # (module, client) patched already
_installed = False
_install_lock = threading.RLock()
_resolving = threading.local()  # names this thread is looking up through the other finders


def install() -> None:
    """Patch the clients already imported; hook the ones imported later. Idempotent."""
    global _installed
    if _installed:
        return
    with _install_lock:  # a second thread must not return before the patches are in
        if _installed:
            return
        from lambda_conn import _registry

        for name in sorted(_registry.hooked_modules()):
            _hook(name)
        sys.meta_path.insert(0, _PostImportFinder())
        _registry._on_register.append(_hook_integration)
        _installed = True
    if os.environ.get("LAMBDA_CONN_PINNING_CHECK"):  # opt-in: nothing is wrapped without it
        from lambda_conn._pinning import enable_from_environment

        enable_from_environment()


def _hook(name: str) -> None:
    if name in sys.modules:
        _apply(name, sys.modules[name])
    else:
        _pending.add(name)


def _hook_integration(integration: Integration) -> None:
    """A client registered after install(): hook its modules now."""
    for name in integration.hooks:
        _hook(name)


def _apply(name: str, module: ModuleType) -> None:
    from lambda_conn import _registry

    _pending.discard(name)
    for integration, patch in _registry.hooks_for(name):
        key = (name, integration.name)
        if key in _done:
            continue
        _done.add(key)
        try:
            patch(module)
        except Exception as exc:  # never break the user's import
            from lambda_conn._log import WARNING, log_event

            fields = {"plugin": integration.origin} if integration.origin != "lambda_conn" else {}
            log_event(
                WARNING,
                "tracking_unavailable",
                module=name,
                client=integration.name,
                **fields,
                error=repr(exc),
            )


class _PostImportFinder:
    """Finds nothing itself: wraps the real loader of the modules we patch."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _pending:
            return None
        busy: set[str] = _resolving.__dict__.setdefault("names", set())
        if fullname in busy:  # another finder that delegates asked us back: step aside
            return None
        busy.add(fullname)
        try:
            spec = self._find_elsewhere(fullname, path, target)
        finally:
            busy.discard(fullname)
        if spec is None:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, fullname)  # type: ignore[assignment]
        return spec

    def _find_elsewhere(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


class _HookedLoader:
    """Delegates to the real loader, then patches the module once it has executed."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        # Hand the module its real loader back, so nothing downstream sees ours.
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        _apply(self._name, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
