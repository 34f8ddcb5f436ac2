"""Server-rendered SVG charts: no script, no library, nothing fetched.

Presentation attributes (fill=, font-size=) rather than style=: the viewer's
Content-Security-Policy allows no inline styles, and attributes are not styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape

from ..render import fmt_money


def bar_chart(bars: Sequence[tuple[str, Decimal]], *, width: int = 760, height: int = 220,
              label: str = "cost by day") -> str:
    """A bar per (label, amount), in the given order, as an inline <svg> element."""
    top, bottom, left, right = 16, 40, 8, 8
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((amount for _, amount in bars), default=Decimal(0))
    parts = [f'<svg class="chart" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'aria-label="{escape(label)}">']
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
                 f'y2="{top + plot_h}" stroke="#888" stroke-width="1"/>')
    if not bars or peak <= 0:
        parts.append(f'<text x="{width // 2}" y="{top + plot_h // 2}" text-anchor="middle" '
                     f'font-size="13" fill="#666">no priced calls yet</text></svg>')
        return "".join(parts)
    slot = plot_w / len(bars)
    bar_w = min(max(slot * 0.7, 1.0), 48.0)
    every = max(1, len(bars) // 12)  # at most about a dozen axis labels
    for i, (name, amount) in enumerate(bars):
        h = float(amount / peak) * plot_h if amount > 0 else 0.0
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h - h
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}" fill="#3b6fb6"><title>{escape(name)}: '
                     f'{escape(fmt_money(amount))}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" '
                         f'text-anchor="middle" font-size="11" fill="#444">'
                         f'{escape(name[5:] if len(name) == 10 else name)}</text>')
    parts.append(f'<text x="{left + 2}" y="{top - 4}" font-size="11" fill="#444">'
                 f'max {escape(fmt_money(peak))}</text></svg>')
    return "".join(parts)
