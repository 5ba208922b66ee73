"""Confidence summaries, computed in plain Python so the layer needs no numpy."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as ``numpy.percentile``."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


@dataclass(frozen=True)
class ConfidenceSummary:
    """How sure the model was across a window's requests."""

    count: int
    mean: float
    p10: float
    p50: float
    p90: float
    low_confidence_share: float  # share of requests strictly below the threshold

    @classmethod
    def of(cls, confidences: Sequence[float], threshold: float) -> ConfidenceSummary | None:
        """``None`` for an empty window: there is nothing to summarise."""
        if not confidences:
            return None
        low = sum(1 for value in confidences if value < threshold)
        return cls(
            count=len(confidences),
            mean=math.fsum(confidences) / len(confidences),
            p10=percentile(confidences, 10),
            p50=percentile(confidences, 50),
            p90=percentile(confidences, 90),
            low_confidence_share=low / len(confidences),
        )


def label_counts(predicted: Iterable[str], labels: Sequence[str]) -> dict[str, int]:
    """Answers per predicted label, with every label present (zero when unseen)."""
    counts = Counter(predicted)
    return {label: counts.get(label, 0) for label in labels}


def label_mix(counts: dict[str, int]) -> dict[str, float]:
    """Counts as shares that sum to 1; empty when there were no requests."""
    total = sum(counts.values())
    if total == 0:
        return {}
    return {label: count / total for label, count in counts.items()}
