"""Entry points of one group, read straight from the installed distributions' metadata.

Why not ``importlib.metadata``: importing it and scanning 133 distributions took 76 ms on
the development machine (49 ms of it the import: email, zipfile, csv, pathlib), paid at
every cold start by every user, plugins or not. Reading ``entry_points.txt`` of each
``*.dist-info`` / ``*.egg-info`` directory on ``sys.path`` is the same data at a fraction
of that (see benchmarks/bench_core.py). As importlib.metadata does, the first distribution
of a name on ``sys.path`` wins. Zipped eggs and other importers are not read.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class EntryPoint:
    """``name = value`` in ``[group]`` of distribution ``dist``."""

    __slots__ = ("dist", "name", "value")

    def __init__(self, name: str, value: str, dist: str) -> None:
        self.name = name
        self.value = value
        self.dist = dist

    def __repr__(self) -> str:
        return f"EntryPoint({self.name!r}, {self.value!r}, dist={self.dist!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntryPoint):
            return NotImplemented
        return (self.name, self.value, self.dist) == (other.name, other.value, other.dist)

    def __hash__(self) -> int:
        return hash((self.name, self.value, self.dist))


def _normalize(dist: str) -> str:
    return dist.lower().replace("-", "_").replace(".", "_")


def parse(text: str, group: str, dist: str) -> list[EntryPoint]:
    """The entries of ``[group]`` in an ``entry_points.txt`` (an INI file)."""
    found: list[EntryPoint] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[" and line[-1] == "]":
            inside = line[1:-1].strip() == group
            continue
        if inside:
            name, sep, value = line.partition("=")
            if sep and name.strip() and value.strip():
                found.append(EntryPoint(name.strip(), value.strip(), dist))
    return found


def entry_points(group: str, path: Iterable[str] | None = None) -> list[EntryPoint]:
    """Every entry point of ``group`` in the distributions installed on ``path``."""
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in sys.path if path is None else path:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except OSError:  # a zip, a missing directory
            continue
        for name in names:
            if not name.endswith("-info"):
                continue
            stem, _, suffix = name.rpartition(".")
            if suffix not in ("dist-info", "egg-info"):
                continue
            dist = stem.partition("-")[0]
            key = _normalize(dist)
            if key in seen:
                continue
            seen.add(key)
            data = _read(os.path.join(directory, name, "entry_points.txt"))
            if data is not None and group.encode() in data:
                found.extend(parse(data.decode("utf-8", "replace"), group, dist))
    return found


def _read(path: str) -> bytes | None:
    """The file's bytes, or None. os.open: a third of the cost of open() per file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no entry points, or an egg-info file
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
