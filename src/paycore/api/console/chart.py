"""A balance-over-time chart as inline SVG, drawn on the server (no script, no CDN).

Pure: numbers in, markup out. The markup holds numbers only (no text from a client), so
it is safe to mark as HTML; the axis labels are rendered by the template, escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["HEIGHT", "WIDTH", "balance_svg"]

WIDTH: Final = 640
HEIGHT: Final = 160
_PAD: Final = 8


def balance_svg(points: Sequence[tuple[int, int]]) -> str:
    """A step line of ``(timestamp, balance)`` points, oldest first, with the zero line;
    an empty string when there is nothing to draw."""
    if not points:
        return ""
    times = [t for t, _ in points]
    values = [v for _, v in points]
    t0, t1 = min(times), max(times)
    low, high = min(0, *values), max(0, *values)
    span_t = (t1 - t0) or 1
    span_v = (high - low) or 1
    inner_w, inner_h = WIDTH - 2 * _PAD, HEIGHT - 2 * _PAD

    def x(t: int) -> float:
        return _PAD + (t - t0) * inner_w / span_t if t1 != t0 else _PAD + inner_w

    def y(v: int) -> float:
        return _PAD + (high - v) * inner_h / span_v

    path = [f"M{_PAD:.1f},{y(values[0]):.1f}"]
    previous = values[0]
    for t, v in points:
        path.append(f"H{x(t):.1f}V{y(v):.1f}" if v != previous else f"H{x(t):.1f}")
        previous = v
    path.append(f"H{WIDTH - _PAD:.1f}")
    zero = y(0)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        'role="img" aria-label="balance over time" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{_PAD}" y1="{zero:.1f}" x2="{WIDTH - _PAD}" y2="{zero:.1f}" '
        'stroke="#999" stroke-dasharray="4 4"/>'
        f'<path d="{"".join(path)}" fill="none" stroke="#1f6feb" stroke-width="2"/>'
        "</svg>"
    )
