"""Parse and check a handler spec before any process is started.

Lambda takes ``module.function`` (awslambdaric splits on the last dot); Python users
write ``module:function``. Both name the same thing, so both are accepted and turned
into the Lambda form that awslambdaric receives.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from dataclasses import dataclass

__all__ = ["HandlerSpec", "HandlerSpecError", "check_importable", "parse_handler"]


class HandlerSpecError(ValueError):
    """A handler spec that cannot name a function, or names a module that is not there."""


@dataclass(frozen=True)
class HandlerSpec:
    """``module`` (dotted) and ``function``, as awslambdaric will import them."""

    module: str
    function: str

    @property
    def lambda_form(self) -> str:
        """The ``_HANDLER`` value: ``package.module.function``."""
        return f"{self.module}.{self.function}"

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


def parse_handler(spec: str) -> HandlerSpec:
    """Split ``module:function`` or ``module.function``; raise HandlerSpecError if malformed."""
    text = spec.strip()
    if ":" in text and text.partition(":")[0].endswith(".py"):
        stem = text.partition(":")[0][:-3].replace("/", ".")
        raise HandlerSpecError(
            f"bad handler {spec!r}: name the module, not its file "
            f"(expected {stem}:{text.partition(':')[2]})"
        )
    if text.startswith(("/", "./", "../")):
        raise HandlerSpecError(
            f"bad handler {spec!r}: expected a module name, not a path: run from the "
            "handler's directory or pass --handler-dir DIR (for example app.handler)"
        )
    if ":" in text:
        module, _, function = text.partition(":")
    else:
        module, _, function = text.rpartition(".")
    module = module.replace("/", ".")
    parts = module.split(".") if module else []
    if not parts or not all(p.isidentifier() for p in parts) or not function.isidentifier():
        raise HandlerSpecError(
            f"bad handler {spec!r}: expected MODULE:FUNCTION or MODULE.FUNCTION "
            "(for example app:handler or app.handler)"
        )
    return HandlerSpec(module, function)


def _find_top_level(name: str) -> importlib.machinery.ModuleSpec | None:
    """A top-level module through every finder on ``sys.meta_path``, importing nothing.

    Not only PathFinder: an editable install (``pip install -e``) puts its package behind
    a finder of its own, and the runtime, on this interpreter, imports it from there.
    """
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        found: importlib.machinery.ModuleSpec | None = find_spec(name, None)
        if found is not None:
            return found
    return None


def check_importable(spec: HandlerSpec, handler_dir: str | os.PathLike[str]) -> None:
    """Find the handler's module file without importing it (imports have side effects).

    Looks in the task root first, then on this interpreter's path (where the child's
    site-packages are too). Raises HandlerSpecError naming the missing module.
    """
    root = os.fspath(handler_dir)
    parts = spec.module.split(".")
    found = importlib.machinery.PathFinder.find_spec(parts[0], [root])
    if found is None:
        found = _find_top_level(parts[0])
    for depth in range(1, len(parts)):
        locations = found.submodule_search_locations if found is not None else None
        if not locations:
            found = None
            break
        name = ".".join(parts[: depth + 1])
        found = importlib.machinery.PathFinder.find_spec(name, list(locations))
    if found is None:
        raise HandlerSpecError(
            f"handler module {spec.module!r} not found in {root!r} "
            "(the task root, see --handler-dir) or on the Python path"
        )
