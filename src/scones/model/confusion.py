"""The confusion matrix: the one count of (true, predicted) pairs that evaluation,
training reports and the run report all show.

Plain Python, no NumPy, so the run report can draw it without loading NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable


def confusion_counts(pairs: Iterable[tuple[int, int]], classes: int) -> list[list[int]]:
    """``m[true][predicted]`` counts of ``(true, predicted)`` class indices."""
    matrix = [[0] * classes for _ in range(classes)]
    for truth, predicted in pairs:
        matrix[truth][predicted] += 1
    return matrix
