"""The run report's two charts, drawn as inline SVG.

A report is written at the end of every ``scones run``; drawing its two charts with
matplotlib cost the command about a second of CPU (most of it the import) for a page
that a few rectangles and labels describe. SVG also stays sharp at any zoom. Each chart
is one image to a screen reader: its title names it, and its description says what it
shows (the counts per class and the threshold, or every cell's count).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from html import escape
from typing import Any

from scones_core.records import CONFIDENCE_ATTRIBUTE, LABEL_ATTRIBUTE

# One opaque colour per predicted class (matplotlib's default cycle); bars never overlap.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
BINS_PER_UNIT = 40  # bins 0.025 wide, from the lowest top probability the labels allow

_FONT = 'font-family="sans-serif" font-size="11"'
CHAR_WIDTH = 7  # about the width of one character of _FONT, to lay text out by


def _colour(index: int) -> str:
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def histogram_edges(class_count: int) -> list[float]:
    """From the lowest top probability ``class_count`` labels allow (0.5 of two, 1/3 of
    three, rounded down to a bin) up to 1."""
    first = math.floor(BINS_PER_UNIT / max(class_count, 2))
    return [i / BINS_PER_UNIT for i in range(first, BINS_PER_UNIT + 1)]


def bin_counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """How many ``values`` fall in each bin: ``[edge, next edge)``, the last one closed
    (a confidence of exactly 1 is counted), as numpy's histogram counts."""
    counts = [0] * (len(edges) - 1)
    for value in values:
        if edges[0] <= value <= edges[-1]:
            counts[min(bisect.bisect_right(edges, value), len(counts)) - 1] += 1
    return counts


def _nice_ticks(top: int) -> list[int]:
    step = max(1, math.ceil(top / 4))
    return list(range(0, top + 1, step))


def confidence_histogram(
    rows: list[dict[str, Any]], labels: tuple[str, ...], threshold: float
) -> str:
    """Bars of each predicted class side by side in every bin: no translucent overlap
    whose mixed colour the legend would not explain."""
    width, left, right, bottom = 600, 48, 16, 42
    edges = histogram_edges(len(labels))
    series = [
        [r[CONFIDENCE_ATTRIBUTE] for r in rows if r.get(LABEL_ATTRIBUTE) == label]
        for label in labels
    ]
    counts = [bin_counts(values, edges) for values in series]
    highest = max((max(c) for c in counts if c), default=0) or 1
    # The axis reaches the threshold wherever it is (0 to 1), so its line is always drawn.
    x0, x1 = min(edges[0], math.floor(threshold * 20) / 20), edges[-1]
    # The legend, above the plot: each class with its count, then the threshold, in as
    # many rows as the labels need.
    entries = [
        (f"{label} ({len(values)})", _colour(i))
        for i, (label, values) in enumerate(zip(labels, series, strict=True))
    ]
    entries.append((f"threshold {threshold:g}", ""))
    legend, at_x, row = [], left, 0
    for text, colour in entries:
        span = 16 + CHAR_WIDTH * len(text) + 14
        if at_x > left and at_x + span > width - right:
            at_x, row = left, row + 1
        legend.append((text, colour, at_x, 28 + 18 * row))
        at_x += span
    top = 28 + 18 * (row + 1) + 12
    height = top + 230 + bottom
    summary = "; ".join(text for text, _ in entries)

    def x(value: float) -> float:
        return left + (value - x0) / (x1 - x0) * (width - left - right)

    def y(count: float) -> float:
        return height - bottom - count / highest * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT} '
        f'aria-labelledby="histogram-title" aria-describedby="histogram-description">',
        '<title id="histogram-title">Confidence per predicted class</title>',
        f'<desc id="histogram-description">Classified uploads per predicted class: '
        f"{escape(summary)}.</desc>",
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">'
        "Confidence per predicted class</text>",
    ]
    # Axes, ticks and their labels.
    parts.append(
        f'<path d="M{left},{top} V{height - bottom} H{width - right}" fill="none" stroke="#333"/>'
    )
    for tick in _nice_ticks(highest):
        parts.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
            f'<path d="M{left - 3},{y(tick):.1f} H{left}" stroke="#333"/>'
        )
    step = 0.05 if x1 - x0 <= 0.5 else 0.1
    tick_value = math.ceil(x0 / step - 1e-9) * step
    while tick_value <= x1 + 1e-9:
        parts.append(
            f'<text x="{x(tick_value):.1f}" y="{height - bottom + 15}" '
            f'text-anchor="middle">{tick_value:.2f}</text>'
        )
        tick_value += step
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
        "confidence of the predicted class</text>"
        f'<text transform="translate(13,{(top + height - bottom) / 2}) rotate(-90)" '
        'text-anchor="middle">uploads</text>'
    )
    # The bars: 90 % of each bin, shared by the classes side by side.
    slot = (x(edges[1]) - x(edges[0])) * 0.9 / max(len(labels), 1)
    for index, (label, label_counts) in enumerate(zip(labels, counts, strict=True)):
        for at, count in enumerate(label_counts):
            if not count:
                continue
            start = x(edges[at]) + (x(edges[at + 1]) - x(edges[at])) * 0.05 + index * slot
            parts.append(
                f'<rect class="bar" data-label="{escape(label)}" data-bin="{edges[at]:g}" '
                f'data-count="{count}" x="{start:.2f}" y="{y(count):.2f}" '
                f'width="{slot:.2f}" height="{y(0) - y(count):.2f}" fill="{_colour(index)}">'
                f"<title>{escape(label)}: {count} in [{edges[at]:g}, {edges[at + 1]:g}"
                f"{']' if at == len(label_counts) - 1 else ')'}</title>"
                "</rect>"
            )
    parts.append(
        f'<path class="threshold" d="M{x(threshold):.2f},{top} V{height - bottom}" '
        'stroke="black" stroke-dasharray="5,4"/>'
    )
    for text, colour, at_x, at_y in legend:
        mark = (
            f'<rect x="{at_x}" y="{at_y}" width="12" height="12" fill="{colour}"/>'
            if colour
            else f'<path d="M{at_x},{at_y + 6} h12" stroke="black" stroke-dasharray="4,2"/>'
        )
        parts.append(f'{mark}<text x="{at_x + 16}" y="{at_y + 10}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _blue(share: float) -> str:
    """matplotlib's "Blues" end points, mixed: light for none, dark for the most."""
    light, dark = (0xF7, 0xFB, 0xFF), (0x08, 0x30, 0x6B)
    mixed = (round(a + (b - a) * share) for a, b in zip(light, dark, strict=True))
    return "#" + "".join(f"{c:02x}" for c in mixed)


def confusion_matrix_svg(matrix: list[list[int]], labels: tuple[str, ...]) -> str:
    """One cell per (true, predicted) pair, darker for more, with its count."""
    cell = 64
    left = 20 + CHAR_WIDTH * max(len(label) for label in labels) + 10
    top = 34
    size = cell * len(labels)
    width, height = left + size + 12, top + size + 44
    darkest = max(max(counts) for counts in matrix) or 1
    cells = "; ".join(
        f"true {labels[i]}, predicted {labels[j]}: {count}"
        for i, counts in enumerate(matrix)
        for j, count in enumerate(counts)
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT} '
        f'aria-labelledby="matrix-title" aria-describedby="matrix-description">',
        '<title id="matrix-title">Confusion matrix</title>',
        f'<desc id="matrix-description">{escape(cells)}.</desc>',
        f'<text x="{left + size / 2}" y="16" text-anchor="middle" font-size="13">'
        "Confusion matrix</text>",
    ]
    for i, counts in enumerate(matrix):
        for j, count in enumerate(counts):
            colour = "white" if count > darkest / 2 else "black"
            cx, cy = left + j * cell, top + i * cell
            parts.append(
                f'<rect class="cell" data-true="{escape(labels[i])}" '
                f'data-predicted="{escape(labels[j])}" data-count="{count}" x="{cx}" y="{cy}" '
                f'width="{cell}" height="{cell}" fill="{_blue(count / darkest)}"/>'
                f'<text x="{cx + cell / 2}" y="{cy + cell / 2 + 5}" text-anchor="middle" '
                f'font-size="14" fill="{colour}">{count}</text>'
            )
    for at, label in enumerate(labels):
        parts.append(
            f'<text x="{left - 6}" y="{top + at * cell + cell / 2 + 4}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<text x="{left + at * cell + cell / 2}" y="{top + size + 15}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    parts.append(
        f'<text x="{left + size / 2}" y="{height - 8}" text-anchor="middle">predicted</text>'
        f'<text transform="translate(12,{top + size / 2}) rotate(-90)" '
        'text-anchor="middle">true</text></svg>'
    )
    return "".join(parts)
