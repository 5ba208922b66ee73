"""Draw an evaluation report: confusion matrix, coverage/accuracy-vs-threshold curve and, when
the report has one, the reliability diagram (calibration curve)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import matplotlib.pyplot as plt

from scones.safe_files import write_bytes_atomically


def render_report(report: dict[str, Any], path: Path) -> Path:
    labels = report["labels"]
    matrix = report["confusion_matrix"]["matrix"]
    at = report["at_threshold"]
    curve = report["curve"]
    bins = report.get("reliability")
    if bins:
        fig, axes = plt.subplots(
            1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1.45, 1.1]}
        )
        ax_cm, ax_curve, ax_rel = axes
        _draw_reliability(ax_rel, bins, report.get("expected_calibration_error"))
    else:
        fig, (ax_cm, ax_curve) = plt.subplots(
            1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.45]}
        )

    ax_cm.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            ax_cm.text(j, i, str(count), ha="center", va="center", fontsize=15, color=colour)
    ax_cm.set_xticks(range(len(labels)), labels)
    ax_cm.set_yticks(range(len(labels)), labels, rotation=90, va="center")
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("true")
    ax_cm.set_title(f"Confusion matrix (accuracy {report['accuracy']:.3f}, n={report['images']})")

    thresholds = [point["threshold"] for point in curve]
    coverage = [point["coverage"] for point in curve]
    accepted_accuracy = [
        point["accepted_accuracy"] if point["accepted_accuracy"] is not None else float("nan")
        for point in curve
    ]
    ax_curve.plot(thresholds, accepted_accuracy, label="accuracy of accepted", color="tab:green")
    ax_curve.plot(thresholds, coverage, label="coverage (share accepted)", color="tab:blue")
    ax_curve.axvline(at["threshold"], color="tab:red", linestyle="--", linewidth=1)
    accuracy_text = (
        f"{at['accepted_accuracy']:.3f}" if at["accepted_accuracy"] is not None else "n/a"
    )
    ax_curve.annotate(
        f"threshold {at['threshold']:g}\ncoverage {at['coverage']:.3f}\n"
        f"accepted accuracy {accuracy_text}",
        xy=(at["threshold"], at["coverage"]),
        xytext=(0.52, 0.08),
        textcoords="axes fraction",
        fontsize=10,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:red"},
    )
    ax_curve.set_xlim(min(thresholds), 1.0)
    ax_curve.set_ylim(0.0, 1.02)
    ax_curve.set_ylabel("share of images")
    ax_curve.set_xlabel("confidence threshold (top probability >= threshold is accepted)")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(loc="lower left")
    ax_curve.set_title("Coverage and accepted accuracy vs threshold")

    model = report.get("model", {})
    split = report.get("split", {})
    where = (
        f"held-out validation split (seed {split['seed']})"
        if "seed" in split
        else split.get("method", "labelled images")
    )
    fig.suptitle(
        f"{model.get('name', 'model')} {model.get('version', '')}: {where}, through onnxruntime",
        fontsize=11,
    )
    fig.tight_layout()
    # Drawn in memory, then written whole: a full disk leaves an earlier figure as it was.
    image = io.BytesIO()
    try:
        fig.savefig(image, format="png", dpi=110)
    finally:
        plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, image.getvalue())
    return path


def _draw_reliability(ax: Any, bins: list[dict[str, Any]], ece: float | None) -> None:
    """Accuracy against mean confidence per confidence bin; the diagonal is perfect calibration.

    Bars show each bin's accuracy at its range; the dots are (mean confidence, accuracy),
    sized by how many images the bin holds, and labelled with that count.
    """
    low = bins[0]["low"]
    ax.plot([low, 1.0], [low, 1.0], color="grey", linestyle="--", linewidth=1, label="perfect")
    filled = [b for b in bins if b["images"]]
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in filled],
        [b["accuracy"] for b in filled],
        width=[b["high"] - b["low"] for b in filled],
        color="tab:blue",
        alpha=0.25,
        edgecolor="tab:blue",
        label="accuracy in bin",
    )
    total = sum(b["images"] for b in filled) or 1
    ax.scatter(
        [b["mean_confidence"] for b in filled],
        [b["accuracy"] for b in filled],
        s=[20 + 400 * b["images"] / total for b in filled],
        color="tab:orange",
        zorder=3,
        label="mean confidence, accuracy",
    )
    for b in filled:
        ax.annotate(
            str(b["images"]),
            (b["mean_confidence"], b["accuracy"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    ax.set_xlim(low, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    title = "Reliability diagram"
    if ece is not None:
        title += f" (ECE {ece:.3f})"
    ax.set_title(title)
