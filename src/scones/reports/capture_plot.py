"""Captured traffic as a picture: confidence over time, and the label mix over time.

The top panel plots each request's confidence (its top probability), coloured
by the predicted label, against the review threshold, with the mean per time
bucket as a line; the bottom panel stacks each label's share of the requests
in the same buckets. ``plot_data`` returns the
exact series drawn, so a test can check the picture against the parsed data.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from scones.reports.capture_source import CaptureSeries
from scones.safe_files import write_bytes_atomically

# Bucket widths for the label mix, smallest first; the first that gives at most
# MAX_BUCKETS buckets over the series' span is used.
BUCKET_WIDTHS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=7),
)
MAX_BUCKETS = 24
LABEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


@dataclass(frozen=True)
class TimeBuckets:
    """Requests grouped in consecutive, equal time buckets."""

    width: timedelta
    starts: tuple[datetime, ...]
    counts: tuple[int, ...]
    mean_confidence: tuple[float | None, ...]  # None for a bucket with no requests
    shares: dict[str, tuple[float, ...]]  # each label's share of the bucket's requests


@dataclass(frozen=True)
class PlotData:
    times: tuple[datetime, ...]
    confidences: tuple[float, ...]
    predicted: tuple[str, ...]
    threshold: float
    below_threshold_share: float
    buckets: TimeBuckets


def choose_bucket_width(start: datetime, end: datetime) -> timedelta:
    span = end - start
    for width in BUCKET_WIDTHS:
        if span / width < MAX_BUCKETS:
            return width
    return BUCKET_WIDTHS[-1]


def bucket_series(series: CaptureSeries, width: timedelta | None = None) -> TimeBuckets:
    """Counts, mean confidence and label shares per bucket, aligned to the width."""
    if not series.times:
        raise ValueError("no requests to bucket")
    first, last = series.times[0], series.times[-1]
    width = width or choose_bucket_width(first, last)
    origin = _align(first, width)
    bucket_count = int((last - origin) / width) + 1
    per_bucket: list[Counter[str]] = [Counter() for _ in range(bucket_count)]
    confidence_sums = [0.0] * bucket_count
    for moment, label, confidence in zip(
        series.times, series.predicted, series.confidences, strict=True
    ):
        index = int((moment - origin) / width)
        per_bucket[index][label] += 1
        confidence_sums[index] += confidence
    counts = tuple(sum(bucket.values()) for bucket in per_bucket)
    means = tuple(
        total / count if count else None
        for total, count in zip(confidence_sums, counts, strict=True)
    )
    shares = {
        label: tuple(
            bucket[label] / total if total else 0.0
            for bucket, total in zip(per_bucket, counts, strict=True)
        )
        for label in series.labels
    }
    starts = tuple(origin + index * width for index in range(bucket_count))
    return TimeBuckets(
        width=width, starts=starts, counts=counts, mean_confidence=means, shares=shares
    )


def _align(moment: datetime, width: timedelta) -> datetime:
    seconds = int(width.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, moment.tzinfo)


def plot_data(series: CaptureSeries, threshold: float) -> PlotData:
    below = sum(1 for value in series.confidences if value < threshold)
    return PlotData(
        times=series.times,
        confidences=series.confidences,
        predicted=series.predicted,
        threshold=threshold,
        below_threshold_share=below / len(series) if len(series) else 0.0,
        buckets=bucket_series(series),
    )


def render_capture_plot(series: CaptureSeries, out: Path, threshold: float) -> PlotData:
    """Write the PNG to ``out`` and return the data it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    data = plot_data(series, threshold)
    colours = {
        label: LABEL_COLOURS[index % len(LABEL_COLOURS)]
        for index, label in enumerate(series.labels)
    }
    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(11, 7),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 2]},
        constrained_layout=True,
    )
    try:
        for label in series.labels:
            points = [
                (moment, confidence)
                for moment, confidence, predicted in zip(
                    data.times, data.confidences, data.predicted, strict=True
                )
                if predicted == label
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                top.scatter(xs, ys, s=14, alpha=0.7, color=colours[label], label=label)
        buckets = data.buckets
        centres = [start + buckets.width / 2 for start in buckets.starts]
        means = [float("nan") if mean is None else mean for mean in buckets.mean_confidence]
        top.plot(
            centres,
            means,
            color="black",
            linewidth=1.4,
            marker="o",
            markersize=3,
            label=f"mean per {_describe(buckets.width)}",
        )
        top.axhline(
            threshold,
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"threshold {threshold:g} ({data.below_threshold_share:.0%} below)",
        )
        top.set_ylim(min(0.45, min(data.confidences) - 0.02), 1.01)
        top.set_ylabel("confidence (top probability)")
        top.set_title(
            f"Captured traffic: {len(series)} requests from {series.files} file(s)"
            + (
                f", {series.malformed_lines} malformed line(s) skipped"
                if series.malformed_lines
                else ""
            )
            + f"\n{series.source}",
            fontsize=10,
        )
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        top.grid(True, alpha=0.3)

        width_days = buckets.width / timedelta(days=1)
        bottoms = [0.0] * len(buckets.starts)
        for label in series.labels:
            shares = buckets.shares[label]
            bottom.bar(
                buckets.starts,
                shares,
                width=width_days * 0.9,
                bottom=bottoms,
                align="edge",
                color=colours[label],
                label=label,
            )
            bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
        bottom.set_ylim(0, 1)
        bottom.set_ylabel(f"label mix per {_describe(buckets.width)}")
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        bottom.grid(True, axis="y", alpha=0.3)
        locator = mdates.AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        bottom.set_xlabel("inference time (UTC)")
        image = io.BytesIO()
        figure.savefig(image, format="png", dpi=110)
    finally:
        plt.close(figure)
    # Drawn in memory, then written whole: a full disk leaves an earlier picture as it was.
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(out, image.getvalue())
    return data


def _describe(width: timedelta) -> str:
    minutes = int(width.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} day(s)"
