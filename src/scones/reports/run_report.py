"""The HTML report of a workflow run: what a person checks after ``scones run``.

One self-contained file (charts embedded as PNG data URIs): the status mix, the
confidence histogram per predicted class with the threshold marked, the
confusion matrix against the true labels, and thumbnails of the images that
need review or were rejected, with their reasons.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib
from scones_core.records import Status, classified_status

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

_THUMBNAIL = 96


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def confidence_histogram(
    rows: list[dict[str, Any]], labels: tuple[str, ...], threshold: float
) -> str:
    figure, axis = plt.subplots(figsize=(6, 3.2))
    bins = [i / 40 for i in range(20, 41)]
    for label in labels:
        values = [r["confidence"] for r in rows if r.get("label") == label]
        axis.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values)})")
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold}")
    axis.set_xlabel("confidence of the predicted class")
    axis.set_ylabel("images")
    axis.set_title("Confidence per predicted class")
    axis.legend(loc="upper left", fontsize=8)
    return _png(figure)


def confusion_matrix(
    rows: list[dict[str, Any]], labels: tuple[str, ...]
) -> tuple[str, list[list[int]]]:
    matrix = [[0 for _ in labels] for _ in labels]
    for row in rows:
        truth, predicted = row.get("true_label"), row.get("label")
        if truth in labels and predicted in labels:
            matrix[labels.index(truth)][labels.index(predicted)] += 1
    figure, axis = plt.subplots(figsize=(3.6, 3.2))
    axis.imshow(matrix, cmap="Blues")
    darkest = max(max(counts) for counts in matrix) or 1
    for i, counts in enumerate(matrix):
        for j, count in enumerate(counts):
            colour = "white" if count > darkest / 2 else "black"
            axis.text(j, i, str(count), ha="center", va="center", fontsize=12, color=colour)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix")
    return _png(figure), matrix


def thumbnail(path: Path) -> str | None:
    try:
        with Image.open(path) as opened:
            small = opened.convert("RGB").resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.NEAREST)
            buffer = io.BytesIO()
            small.save(buffer, format="PNG")
    except (OSError, ValueError):
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_run_report(
    path: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    labels: tuple[str, ...],
    threshold: float,
) -> Path:
    """Write the report; ``rows`` are records plus ``true_label`` and ``source`` (local path)."""
    classified = [r for r in rows if isinstance(r.get("confidence"), int | float)]
    histogram = confidence_histogram(classified, labels, threshold)
    labelled = [r for r in classified if r.get("true_label")]
    matrix_png = confusion_matrix(labelled, labels)[0] if labelled else None
    review = [r for r in rows if classified_status(r) != Status.ACCEPTED]
    cards = []
    for row in review:
        image = thumbnail(Path(row["source"])) if row.get("source") else None
        picture = (
            f'<img src="data:image/png;base64,{image}" alt="">'
            if image
            else "<div>no preview</div>"
        )
        detail = (
            f"{row.get('label')} {row['confidence']:.3f}"
            if isinstance(row.get("confidence"), int | float)
            else f"{row.get('error_code', '')}: {row.get('reason', '')}"
        )
        cards.append(
            f'<figure class="{html.escape(str(row.get("status")))}">{picture}'
            f"<figcaption><b>{html.escape(str(row.get('key')))}</b><br>"
            f"{html.escape(str(row.get('status')))} &middot; {html.escape(detail)}"
            f"{'<br>true: ' + html.escape(row['true_label']) if row.get('true_label') else ''}"
            "</figcaption></figure>"
        )
    counts = " ".join(
        f"<span class='{s}'>{s} {n}</span>" for s, n in summary.get("by_status", {}).items()
    )
    accuracy = summary.get("accuracy")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scones Unlimited run report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
span {{ padding: .2rem .5rem; border-radius: .3rem; margin-right: .4rem; }}
.ACCEPTED {{ background: #d9f2dd; }} .NEEDS_REVIEW {{ background: #fff1c2; }}
.REJECTED {{ background: #f4d9f2; }} .FAILED {{ background: #f8d0d0; }}
.charts img {{ margin-right: 1rem; vertical-align: top; }}
figure {{ display: inline-block; width: 160px; margin: .4rem; padding: .4rem;
         border-radius: .4rem; vertical-align: top; }}
figure img {{ image-rendering: pixelated; width: 96px; }}
figcaption {{ font-size: .8rem; word-break: break-all; }}
</style></head><body>
<h1>Run report</h1>
<p>{summary.get("total", len(rows))} images: {counts}</p>
<p>Threshold {threshold}. Accuracy against true labels:
{f"{accuracy:.1%} of {summary.get('labelled')}" if accuracy is not None else "no true labels"}.</p>
<div class="charts">
<img alt="confidence histogram" src="data:image/png;base64,{histogram}">
{f'<img alt="confusion matrix" src="data:image/png;base64,{matrix_png}">' if matrix_png else ""}
</div>
<h2>Needs a person ({len(review)})</h2>
<p>Low-confidence results, rejected inputs and failures, as uploaded.</p>
{"".join(cards) or "<p>None.</p>"}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
