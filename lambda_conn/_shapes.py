"""What shape a handler has (plain, coroutine, generator), read from its code flags.

``inspect`` and ``asyncio`` would answer the same, at a cold-start cost; the flags are what
they read. A generator's body runs only while it is iterated, after a decorator's scope
has closed, so generator shapes are refused where the decorator is written.
"""

from __future__ import annotations

import functools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# inspect.CO_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR
CO_GENERATOR = 0x20
CO_COROUTINE = 0x80
CO_ITERABLE_COROUTINE = 0x100  # @types.coroutine: a generator that can be awaited
CO_ASYNC_GENERATOR = 0x200


def code_flags(fn: Any) -> int:
    """``co_flags`` of what calling ``fn`` runs (partials, bound methods and callable
    objects included); 0 when there is no Python code to read (a builtin)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)  # bound methods, classmethods
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: look at its __call__
        for klass in type(fn).__mro__:
            call = klass.__dict__.get("__call__")
            if call is not None:
                code = getattr(getattr(call, "__func__", call), "__code__", None)
                break
    flags = getattr(code, "co_flags", 0)
    return flags if isinstance(flags, int) else 0


def is_coroutine_function(fn: Any) -> bool:
    return bool(code_flags(fn) & (CO_COROUTINE | CO_ITERABLE_COROUTINE))


def refuse_generators(fn: Any, decorator: str) -> None:
    """TypeError for a generator or async generator function, saying what works instead."""
    flags = code_flags(fn)
    if flags & CO_ASYNC_GENERATOR:
        what, loop = "an async generator function", "async for"
    elif flags & CO_GENERATOR and not flags & CO_ITERABLE_COROUTINE:
        what, loop = "a generator function", "for"
    else:
        return
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    raise TypeError(
        f"{decorator} cannot cover {name}: it is {what}, whose body runs only while it is "
        f"iterated, after the scope has closed. Decorate the function that consumes it (the "
        f"`{loop}` loop, or the handler that returns a list built from it), or open a scope "
        f"inside the generator: `with managed_connection():` around its body"
    )
