"""Descriptors and memory per invocation as an SVG written by hand (no dependency),
or a PNG when matplotlib happens to be installed.

A leak shows as a staircase; a recycle as a drop back to the baseline.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

from lambda_conn.local._constants import FD_LIMIT
from lambda_conn.local._records import InvocationRecord

__all__ = ["render_svg", "write_plot"]

_W, _PANEL_H, _LEFT, _RIGHT, _TOP, _GAP = 900, 240, 70, 20, 40, 60
_MAX_POINTS = 1500  # columns kept after min/max decimation
_MAX_MARKS = 2000  # cold-start / failure marks drawn individually

Getter = Callable[[InvocationRecord], float | None]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _series(records: Sequence[InvocationRecord], get: Getter) -> list[tuple[float, float]]:
    """(index, value) pairs; above _MAX_POINTS, each bucket keeps its min and max."""
    points = [(float(r.index), v) for r in records if (v := get(r)) is not None]
    if len(points) <= _MAX_POINTS:
        return points
    size = len(points) / (_MAX_POINTS / 2)
    out: list[tuple[float, float]] = []
    for b in range(_MAX_POINTS // 2):
        chunk = points[int(b * size) : int((b + 1) * size)]
        if chunk:
            low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
            out += sorted({low, high})
    return out


def _panel(
    records: Sequence[InvocationRecord],
    get: Getter,
    label: str,
    top: float,
    color: str,
    *,
    limit: float | None = None,
    y_max: float | None = None,
) -> list[str]:
    n = max(1, len(records) - 1)
    plot_w = _W - _LEFT - _RIGHT
    points = _series(records, get)
    if y_max is None:
        y_max = max((v for _, v in points), default=0.0)
    y_max = _nice_max(max(y_max, limit or 0.0))

    def x(i: float) -> float:
        return _LEFT + plot_w * i / n

    def y(v: float) -> float:
        return top + _PANEL_H * (1 - v / y_max)

    parts = [
        f'<text x="{_LEFT}" y="{top - 8}" class="label">{escape(label)}</text>',
        f'<rect x="{_LEFT}" y="{top}" width="{plot_w}" height="{_PANEL_H}" class="frame"/>',
    ]
    for k in range(5):
        v = y_max * k / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:g}</text>'
        )
    for k in range(5):
        i = n * k / 4
        parts.append(  # invocations count from 1, as in the table
            f'<text x="{x(i):.1f}" y="{top + _PANEL_H + 16}" class="tick" '
            f'text-anchor="middle">{i + 1:.0f}</text>'
        )
    if limit is not None:
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            'class="limit"/>'
        )
        parts.append(
            f'<text x="{_W - _RIGHT - 4}" y="{y(limit) - 4:.1f}" class="tick" '
            f'text-anchor="end">Lambda limit {limit:g}</text>'
        )
    colds = [r.index for r in records if r.cold_start]
    if len(colds) <= _MAX_MARKS:
        parts += [
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + _PANEL_H}" class="cold"/>'
            for i in colds
        ]
    fails = [r.index for r in records if not r.ok]
    if len(fails) <= _MAX_MARKS:
        parts += [
            f'<circle cx="{x(i):.1f}" cy="{top + _PANEL_H - 3}" r="3" class="fail"/>' for i in fails
        ]
    if points:
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>'
        )
    return parts


def render_svg(
    records: Sequence[InvocationRecord],
    *,
    title: str = "lambda-conn soak",
    memory_mb: int | None = None,
    y_max: tuple[float | None, float | None] = (None, None),
) -> str:
    """Two panels (open descriptors, RSS in MB) against the invocation index, each with
    Lambda's limit drawn (1,024 descriptors; ``memory_mb`` when given). ``y_max`` fixes
    the panels' scales, so that several soaks side by side compare at a glance."""
    height = _TOP + 2 * _PANEL_H + _GAP + 50
    colds = sum(r.cold_start for r in records)
    fails = sum(not r.ok for r in records)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-family="sans-serif">',
        "<style>.label{font-size:13px;font-weight:bold}.tick{font-size:11px;fill:#444}"
        ".frame{fill:none;stroke:#888}.grid{stroke:#e4e4e4}.cold{stroke:#999;stroke-dasharray:3,3}"
        ".fail{fill:#d62728}.limit{stroke:#d62728;stroke-dasharray:6,3}</style>",
        f'<rect width="{_W}" height="{height}" fill="white"/>',
        f'<text x="{_LEFT}" y="20" font-size="15">{escape(title)} - {len(records)} invocations, '
        f"{colds} cold starts (dashed), {fails} failed (red)</text>",
    ]
    parts += _panel(
        records,
        lambda r: r.fd_count,
        "open file descriptors",
        _TOP + 10,
        "#1f77b4",
        limit=FD_LIMIT,
        y_max=y_max[0],
    )
    parts += _panel(
        records,
        rss_mb,
        "resident memory (MB)",
        _TOP + 10 + _PANEL_H + _GAP,
        "#2ca02c",
        limit=memory_mb,
        y_max=y_max[1],
    )
    parts.append(
        f'<text x="{_W / 2}" y="{height - 8}" class="tick" text-anchor="middle">invocation</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def rss_mb(record: InvocationRecord) -> float | None:
    return None if record.rss_bytes is None else record.rss_bytes / 2**20


def _write_png(records: Sequence[InvocationRecord], path: str, title: str) -> None:
    try:  # import_module keeps mypy from needing matplotlib's stubs
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise ValueError(
            f"cannot write {path!r}: PNG needs matplotlib (pip install matplotlib); "
            "use a .svg path, which needs nothing"
        ) from None
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    idx = [r.index for r in records]
    top.plot(idx, [r.fd_count for r in records], color="#1f77b4")
    top.set_ylabel("open descriptors")
    bottom.plot(
        idx,
        [rss_mb(r) for r in records],
        color="#2ca02c",
    )
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("invocation")
    top.set_title(title)
    fig.savefig(path)
    plt.close(fig)


def write_plot(
    records: Sequence[InvocationRecord],
    path: str | os.PathLike[str],
    *,
    title: str = "lambda-conn soak",
    memory_mb: int | None = None,
) -> str:
    """Write ``.svg`` (always available) or ``.png`` (matplotlib); returns the path."""
    target = os.fspath(path)
    suffix = os.path.splitext(target)[1].lower()
    if suffix == ".png":
        _write_png(records, target, title)
    elif suffix == ".svg":
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(render_svg(records, title=title, memory_mb=memory_mb))
    else:
        raise ValueError(f"cannot write {target!r}: plot file must end in .svg or .png")
    return target
