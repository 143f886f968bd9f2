"""Descriptors and memory per invocation as an SVG written by hand (no dependency),
or a PNG when matplotlib happens to be installed.

A leak shows as a staircase; a recycle as a drop back to the baseline.

A fleet soak is plotted against time instead (:func:`render_fleet_svg`,
:func:`write_fleet_plot`): the server's connections (from the ServerSampler) against its
``max_connections``, the environments busy against the concurrency, and the failures per
time slice, "too many connections" apart. Fan-out shows as the first panel reaching its
limit while the third fills with red.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from lambda_conn.local._constants import FD_LIMIT
from lambda_conn.local._records import InvocationRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lambda_conn.local._server_sampler import ServerSeries

__all__ = [
    "FleetTimeline",
    "fleet_timeline",
    "render_fleet_svg",
    "render_svg",
    "stack_svgs",
    "write_fleet_plot",
    "write_plot",
]

_W, _PANEL_H, _LEFT, _RIGHT, _TOP, _GAP = 900, 240, 70, 20, 40, 60
_MAX_POINTS = 1500  # columns kept after min/max decimation
_MAX_MARKS = 2000  # cold-start / failure marks drawn individually
_BINS = 120  # time slices of the fleet plot's failure panel

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
    return _decimate([(float(r.index), v) for r in records if (v := get(r)) is not None])


def _decimate(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``points`` (in x order) as they are, or above _MAX_POINTS each bucket's min and max."""
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


def _frame(
    label: str,
    top: float,
    y_max: float,
    x_ticks: Sequence[tuple[float, str]],
    limit: tuple[float, str] | None,
) -> tuple[list[str], Callable[[float], float]]:
    """A panel's label, frame, grid, y ticks, the given x ticks (pixel x, text) and a
    dashed limit line; returns the parts and the panel's value -> pixel y."""
    plot_w = _W - _LEFT - _RIGHT

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
    parts += [
        f'<text x="{px:.1f}" y="{top + _PANEL_H + 16}" class="tick" '
        f'text-anchor="middle">{escape(text)}</text>'
        for px, text in x_ticks
    ]
    if limit is not None:
        value, text = limit
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'class="limit"/>'
        )
        parts.append(
            f'<text x="{_W - _RIGHT - 4}" y="{y(value) - 4:.1f}" class="tick" '
            f'text-anchor="end">{escape(text)}</text>'
        )
    return parts, y


def _polyline(points: Sequence[tuple[float, float]], color: str) -> list[str]:
    if not points:
        return []
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return [f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>']


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

    # invocations count from 1, as in the table
    ticks = [(x(n * k / 4), f"{n * k / 4 + 1:.0f}") for k in range(5)]
    parts, y = _frame(
        label, top, y_max, ticks, None if limit is None else (limit, f"Lambda limit {limit:g}")
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
    parts += _polyline([(x(i), y(v)) for i, v in points], color)
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


def stack_svgs(svgs: Sequence[str]) -> str:
    """Several plots (each from this module, so each sets its size) in one SVG, one
    under the other."""
    import re

    parts: list[str] = []
    y = width = 0
    for svg in svgs:
        size = re.search(r'width="([\d.]+)" height="([\d.]+)"', svg)
        assert size is not None, "every plot here sets its size"
        w, h = (int(float(v)) for v in size.groups())
        parts.append(svg.replace("<svg ", f'<svg y="{y}" ', 1))
        y, width = y + h, max(width, w)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'viewBox="0 0 {width} {y}">\n' + "".join(parts) + "</svg>\n"
    )


def rss_mb(record: InvocationRecord) -> float | None:
    return None if record.rss_bytes is None else record.rss_bytes / 2**20


def _pyplot(path: str) -> Any:
    try:  # import_module keeps mypy from needing matplotlib's stubs
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise ValueError(
            f"cannot write {path!r}: PNG needs matplotlib (pip install matplotlib); "
            "use a .svg path, which needs nothing"
        ) from None


def _write_png(records: Sequence[InvocationRecord], path: str, title: str) -> None:
    plt = _pyplot(path)
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


# --------------------------------------------------------------------------- fleets


def _busy_s(record: InvocationRecord) -> float:
    """Seconds from sending the invocation to its end: a cold start's Init, then its
    duration (until its runtime and extensions asked for the next event)."""
    return (record.duration_ms + (record.init_duration_ms or 0.0)) / 1000


def _busy(
    records: Sequence[InvocationRecord], started_s: Sequence[float]
) -> list[tuple[float, float]]:
    """Environments busy over time, as steps: each invocation from when it was sent
    until it ended (:func:`_busy_s`)."""
    events = sorted(
        [(t, 1) for t in started_s]
        + [(t + _busy_s(r), -1) for r, t in zip(records, started_s, strict=True)],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    points: list[tuple[float, float]] = [(0.0, 0.0)]
    busy = 0
    for t, step in events:
        points.append((t, float(busy)))
        busy += step
        points.append((t, float(busy)))
    return points


@dataclass(frozen=True)
class FleetTimeline:
    """The fleet plot's data, in seconds after the soak started (see :func:`fleet_timeline`)."""

    begin_s: float
    end_s: float
    slice_s: float
    connections: list[tuple[float, float]]
    busy: list[tuple[float, float]]
    failures: list[int]
    too_many: list[int]


def fleet_timeline(
    records: Sequence[InvocationRecord],
    started_s: Sequence[float],
    *,
    series: ServerSeries | None = None,
    started_at: float | None = None,
    too_many: Callable[[InvocationRecord], bool] | None = None,
    bins: int = _BINS,
) -> FleetTimeline:
    """What the fleet plot draws, in seconds after the soak started (``started_at``, the
    ``time.monotonic()`` the records' ``started_s`` count from): ``connections`` (the
    sampler's (t, n), its clock moved onto the soak's), ``busy`` (steps of environments
    busy), ``failures`` and ``too_many`` (per time slice of ``slice_s`` seconds, by when
    the invocation ended)."""
    if len(records) != len(started_s):
        raise ValueError(
            f"started_s has {len(started_s)} times for {len(records)} records: one each"
        )
    offset = 0.0
    if series is not None and started_at is not None:
        offset = series.started_at - started_at
    connections = (
        [(t + offset, float(c)) for t, c in zip(series.times, series.counts, strict=True)]
        if series is not None
        else []
    )
    busy = _busy(records, started_s)
    end = max([busy[-1][0], *(t for t, _ in connections[-1:])], default=0.0)
    begin = min([0.0, *(t for t, _ in connections[:1])])
    width = max(end - begin, 1e-3) / bins
    failures = [0] * bins
    refused = [0] * bins
    for record, t in zip(records, started_s, strict=True):
        if not record.ok:  # when it failed: a cold start's fails after its Init
            k = min(bins - 1, int((t + _busy_s(record) - begin) / width))
            if too_many is not None and too_many(record):
                refused[k] += 1
            else:
                failures[k] += 1
    return FleetTimeline(begin, end, width, connections, busy, failures, refused)


def render_fleet_svg(
    records: Sequence[InvocationRecord],
    started_s: Sequence[float],
    *,
    series: ServerSeries | None = None,
    started_at: float | None = None,
    concurrency: int | None = None,
    too_many: Callable[[InvocationRecord], bool] | None = None,
    title: str = "lambda-conn soak",
) -> str:
    """Three panels against time: the server's client connections against its
    ``max_connections`` (when ``series`` is given: soak --dsn), environments busy against
    ``concurrency``, failed invocations per time slice (``too_many`` ones in red)."""
    line = fleet_timeline(
        records, started_s, series=series, started_at=started_at, too_many=too_many
    )
    begin, end, width = line.begin_s, line.end_s, line.slice_s
    connections, busy, failures, refused = line.connections, line.busy, line.failures, line.too_many
    plot_w = _W - _LEFT - _RIGHT
    span = max(end - begin, 1e-3)

    def x(t: float) -> float:
        return _LEFT + plot_w * (t - begin) / span

    ticks = [(x(begin + span * k / 4), f"{begin + span * k / 4:.3g} s") for k in range(5)]
    height = _TOP + 3 * _PANEL_H + 2 * _GAP + 50
    failed = sum(failures) + sum(refused)
    heading = f"{title} - {len(records)} invocations, {failed} failed"
    if too_many is not None:
        heading += f" ({sum(refused)} too many connections)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-family="sans-serif">',
        "<style>.label{font-size:13px;font-weight:bold}.tick{font-size:11px;fill:#444}"
        ".frame{fill:none;stroke:#888}.grid{stroke:#e4e4e4}.limit{stroke:#d62728;"
        "stroke-dasharray:6,3}.refused{fill:#d62728}.failed{fill:#ff7f0e}"
        ".note{font-size:12px;fill:#666}</style>",
        f'<rect width="{_W}" height="{height}" fill="white"/>',
        f'<text x="{_LEFT}" y="20" font-size="15">{escape(heading)}</text>',
    ]
    # 1. the server's connections
    top = _TOP + 10
    if series is not None:
        peak = max((c for _, c in connections), default=0.0)
        y_max = _nice_max(max(peak, series.max_connections) * 1.05)
        frame, y = _frame(
            f"server connections ({series.server}; peak {series.peak}, sampled every "
            f"{series.interval_s:g} s, the sampler's own excluded)",
            top,
            y_max,
            ticks,
            (series.max_connections, f"max_connections {series.max_connections}"),
        )
        parts += frame
        parts += _polyline([(x(t), y(v)) for t, v in _decimate(connections)], "#9467bd")
    else:
        frame, _ = _frame("server connections", top, 1.0, ticks, None)
        parts += frame
        parts.append(
            f'<text x="{_LEFT + plot_w / 2}" y="{top + _PANEL_H / 2}" class="note" '
            'text-anchor="middle">not sampled: give --dsn to see the server\'s view</text>'
        )
    # 2. environments busy
    top += _PANEL_H + _GAP
    peak_busy = max((v for _, v in busy), default=0.0)
    frame, y = _frame(
        "environments busy (invocations in flight, a cold start's Init included)",
        top,
        _nice_max(max(peak_busy, concurrency or 0) * 1.05),
        ticks,
        None if concurrency is None else (concurrency, f"concurrency {concurrency}"),
    )
    parts += frame
    parts += _polyline([(x(t), y(v)) for t, v in _decimate(busy)], "#1f77b4")
    # 3. failures per time slice
    top += _PANEL_H + _GAP
    most = max((a + b for a, b in zip(failures, refused, strict=True)), default=0)
    frame, y = _frame(
        f"failed invocations per {width:.3g} s"
        + (" (red: too many connections)" if too_many is not None else ""),
        top,
        _nice_max(float(most)),
        ticks,
        None,
    )
    parts += frame
    bar = plot_w / len(failures)
    for k, (other, full) in enumerate(zip(failures, refused, strict=True)):
        left = _LEFT + k * bar
        if full:
            parts.append(
                f'<rect x="{left:.1f}" y="{y(full):.1f}" width="{bar:.1f}" '
                f'height="{y(0) - y(full):.1f}" class="refused"/>'
            )
        if other:
            parts.append(
                f'<rect x="{left:.1f}" y="{y(full + other):.1f}" width="{bar:.1f}" '
                f'height="{y(full) - y(full + other):.1f}" class="failed"/>'
            )
    parts.append(
        f'<text x="{_W / 2}" y="{height - 8}" class="tick" text-anchor="middle">'
        "seconds since the soak started</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _write_fleet_png(
    line: FleetTimeline,
    path: str,
    title: str,
    *,
    series: ServerSeries | None,
    concurrency: int | None,
) -> None:
    plt = _pyplot(path)
    fig, (first, second, third) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    connections, busy = line.connections, line.busy
    if series is not None:
        first.plot([t for t, _ in connections], [c for _, c in connections], color="#9467bd")
        first.axhline(series.max_connections, color="#d62728", linestyle="--")
    first.set_ylabel("server connections")
    second.step([t for t, _ in busy], [v for _, v in busy], where="post", color="#1f77b4")
    if concurrency is not None:
        second.axhline(concurrency, color="#d62728", linestyle="--")
    second.set_ylabel("environments busy")
    begin, width, failures, refused = line.begin_s, line.slice_s, line.failures, line.too_many
    lefts = [begin + k * width for k in range(len(failures))]
    third.bar(lefts, refused, width=width, align="edge", color="#d62728")
    third.bar(lefts, failures, width=width, align="edge", bottom=refused, color="#ff7f0e")
    third.set_ylabel("failed per slice")
    third.set_xlabel("seconds since the soak started")
    first.set_title(title)
    fig.savefig(path)
    plt.close(fig)


def write_fleet_plot(
    records: Sequence[InvocationRecord],
    started_s: Sequence[float],
    path: str | os.PathLike[str],
    *,
    series: ServerSeries | None = None,
    started_at: float | None = None,
    concurrency: int | None = None,
    too_many: Callable[[InvocationRecord], bool] | None = None,
    title: str = "lambda-conn soak",
) -> str:
    """Write the fleet plot as ``.svg`` (always available) or ``.png`` (matplotlib)."""
    target = os.fspath(path)
    suffix = os.path.splitext(target)[1].lower()
    if suffix == ".png":
        line = fleet_timeline(
            records, started_s, series=series, started_at=started_at, too_many=too_many
        )
        _write_fleet_png(line, target, title, series=series, concurrency=concurrency)
    elif suffix == ".svg":
        svg = render_fleet_svg(
            records,
            started_s,
            series=series,
            started_at=started_at,
            concurrency=concurrency,
            too_many=too_many,
            title=title,
        )
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(svg)
    else:
        raise ValueError(f"cannot write {target!r}: plot file must end in .svg or .png")
    return target
