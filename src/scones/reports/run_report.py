"""The HTML report of a workflow run: what a person checks after ``scones run``.

One self-contained file (charts drawn as inline SVG, a few lines of plain
JavaScript to sort the table): when the run happened and with which model (version
and ONNX SHA-256), the status mix, the time per stage, the confidence histogram per
predicted class (bars side by side, the threshold marked), the confusion matrix
against the true labels, thumbnails of the uploads that need a person (low
confidence, rejected, failed) with their reasons, and every record in a sortable
table. Uploads are counted as "uploads": not every upload is an image.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image
from scones_core.errors import ImageRejected
from scones_core.image_rules import decode_image
from scones_core.preprocess import to_display_image
from scones_core.records import (
    CONFIDENCE_ATTRIBUTE,
    INFERENCE_MS_ATTRIBUTE,
    KEY_ATTRIBUTE,
    LABEL_ATTRIBUTE,
    MODEL_VERSION_ATTRIBUTE,
    RECORDED_AT_ATTRIBUTE,
    SERIALIZE_MS_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    Status,
    classified_status,
    outcome_reason,
)
from scones_core.settings import ImageLimits

from scones.model.confusion import confusion_counts
from scones.reports.svg_charts import confidence_histogram, confusion_matrix_svg
from scones.safe_files import write_text_atomically
from scones.shown_text import shown
from scones.template_params import function_environment

THUMBNAIL_BOX = 96  # the longest side of a thumbnail, in CSS pixels
# The uploads shown as cards, each with its thumbnail (about 16 KB of the page): a run where
# thousands need a person (a strict threshold, a model unsure of new photos) made a page
# of 50 MB that a browser took 10 s to open. The rest are in the table of every record.
MAX_CARDS = 200
# Where a long key may wrap: after a path or word separator, never inside a word.
_BREAK_AFTER = re.compile(r"([/_-])(?=.)")


def confusion_matrix(
    rows: list[dict[str, Any]], labels: tuple[str, ...]
) -> tuple[str, list[list[int]]]:
    """The confusion matrix of the uploads with a true label (SVG), and its counts."""
    index = {label: i for i, label in enumerate(labels)}
    pairs = (
        (index[row["true_label"]], index[row[LABEL_ATTRIBUTE]])
        for row in rows
        if row.get("true_label") in index and row.get(LABEL_ATTRIBUTE) in index
    )
    matrix = confusion_counts(pairs, len(labels))
    return confusion_matrix_svg(matrix, labels), matrix


def thumbnail(
    path: Path, box: int = THUMBNAIL_BOX, limits: ImageLimits | None = None
) -> tuple[str, int, int] | None:
    """A PNG that fits ``box`` x ``box`` with the upload's aspect ratio; ``(base64, width,
    height)``, or ``None`` for a file the image rules refuse (the workflow's own rules,
    ``limits``, by default the template's, so a hostile file in the folder is never
    decoded beyond them).

    Orientation, colour and transparency as the model saw them
    (``preprocess.to_display_image``); an image smaller than the box, such as a 32x32
    CIFAR picture, is then enlarged with Lanczos to fill it.
    """
    limits = limits or _default_limits()
    try:
        # A folder, device or pipe, or a file over MaxImageBytes, is never read.
        if not path.is_file() or path.stat().st_size > limits.max_bytes:
            return None
        with path.open("rb") as file:
            data = file.read(limits.max_bytes + 1)  # a file growing since is not read whole
        if len(data) > limits.max_bytes:
            return None
        decoded = decode_image(data, limits, draft_to=(box, box))
        with decoded.image:
            small = to_display_image(decoded.image, box)
    except (OSError, ImageRejected):
        return None
    if max(small.size) < box:
        scale = box / max(small.size)
        size = (max(1, round(small.width * scale)), max(1, round(small.height * scale)))
        small = small.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), small.width, small.height


@cache
def _default_limits() -> ImageLimits:
    """The template's image rules, as the Serialize step applies them by default."""
    return ImageLimits.from_env(function_environment("SerializeImageFunction"))


def image_limits(parameters: Mapping[str, str] | None) -> ImageLimits:
    """The image rules the Serialize step applies with these template parameters."""
    if not parameters:
        return _default_limits()
    return ImageLimits.from_env(
        function_environment("SerializeImageFunction", overrides=parameters)
    )


def breakable(text: str) -> str:
    """HTML-escaped ``text`` (its unprintable characters as escapes, ``shown_text``) that
    may wrap only after ``/ _ -`` (``<wbr>``), never mid-word."""
    return _BREAK_AFTER.sub(r"\1<wbr>", html.escape(shown(text), quote=False))


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else ""


def _detail(row: dict[str, Any]) -> str:
    """The record's reason, as shown (a reason may quote the key)."""
    return shown(outcome_reason(row))


def _card(row: dict[str, Any], limits: ImageLimits) -> str:
    thumb = thumbnail(Path(row["source"]), limits=limits) if row.get("source") else None
    if thumb:
        data, width, height = thumb
        picture = (
            f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="">'
        )
    else:
        picture = '<div class="nopreview">no preview</div>'
    outcome = (
        f"{row.get(LABEL_ATTRIBUTE)} {row[CONFIDENCE_ATTRIBUTE]:.3f}"
        if isinstance(row.get(CONFIDENCE_ATTRIBUTE), int | float)
        else ""
    )
    lines = [
        f"<b>{breakable(str(row.get(KEY_ATTRIBUTE)))}</b>",
        " &middot; ".join(
            html.escape(part) for part in (str(row.get(STATUS_ATTRIBUTE)), outcome) if part
        ),
        html.escape(_detail(row)),
        f"true: {html.escape(row['true_label'])}" if row.get("true_label") else "",
    ]
    caption = "<br>".join(line for line in lines if line)
    status = html.escape(str(row.get(STATUS_ATTRIBUTE)))
    return f'<figure class="{status}">{picture}<figcaption>{caption}</figcaption></figure>'


def _text_column(name: str) -> Callable[[dict[str, Any]], tuple[str, str]]:
    """A column showing the attribute ``name`` as text (escaped), sorted as text."""
    return lambda r: (html.escape(str(r.get(name) or "")), str(r.get(name) or ""))


def _number_column(name: str, digits: int) -> Callable[[dict[str, Any]], tuple[str, str]]:
    """A column showing the number ``name`` to ``digits`` places, sorted on three more."""
    return lambda r: (_number(r.get(name), digits), _number(r.get(name), digits + 3))


_COLUMNS = (
    # header, row -> (shown text, sort key), numeric
    (
        "key",
        lambda r: (breakable(str(r.get(KEY_ATTRIBUTE, ""))), str(r.get(KEY_ATTRIBUTE, ""))),
        False,
    ),
    ("status", _text_column(STATUS_ATTRIBUTE), False),
    ("label", _text_column(LABEL_ATTRIBUTE), False),
    ("confidence", _number_column(CONFIDENCE_ATTRIBUTE, 3), True),
    ("true label", _text_column("true_label"), False),
    ("serialize ms", _number_column(SERIALIZE_MS_ATTRIBUTE, 1), True),
    ("inference ms", _number_column(INFERENCE_MS_ATTRIBUTE, 1), True),
    ("recorded at", _text_column(RECORDED_AT_ATTRIBUTE), False),
    ("model", _text_column(MODEL_VERSION_ATTRIBUTE), False),
    ("reason", lambda r: (html.escape(_detail(r)), _detail(r)), False),
)

# Click a header to sort by it; click again to reverse. Numbers sort as numbers, blanks last.
_SORT_SCRIPT = """
document.querySelectorAll("table.records th").forEach((th, column) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const numeric = th.dataset.numeric === "1";
    const up = th.getAttribute("aria-sort") !== "ascending";
    th.closest("tr").querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const key = row => row.cells[column].dataset.sort;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === "" || y === "") return (x === "") - (y === "");
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return up ? order : -order;
    });
    rows.forEach(row => body.appendChild(row));
  });
});
"""


def records_table_html(rows: list[dict[str, Any]]) -> str:
    head = "".join(
        f'<th data-numeric="{int(numeric)}" title="sort">{html.escape(name)}</th>'
        for name, _, numeric in _COLUMNS
    )
    body = []
    for row in rows:
        cells = []
        for _, cell, _ in _COLUMNS:
            text, sort_key = cell(row)
            cells.append(f'<td data-sort="{html.escape(shown(sort_key), quote=True)}">{text}</td>')
        status = html.escape(str(row.get(STATUS_ATTRIBUTE, "")))
        body.append(f'<tr class="{status}">{"".join(cells)}</tr>')
    return (
        f'<table class="records"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _stages_html(summary: dict[str, Any], details: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{html.escape(name)}</td><td>{numbers['mean']:.1f}</td>"
        f"<td>{numbers['p95']:.1f}</td></tr>"
        for name, numbers in summary.get("stages_ms", {}).items()
    ]
    timings = details.get("stack_timings_s") or {}
    stack = ""
    if timings:
        stack = "<p>Offline stack: " + ", ".join(
            f"{html.escape(name.removesuffix('_s'))} {seconds:.2f} s"
            for name, seconds in timings.items()
        )
        stack += ".</p>"
    if not rows:
        return stack
    return (
        '<table class="stages"><thead><tr><th>stage</th><th>mean ms</th><th>p95 ms</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{stack}"
    )


def _model_html(details: dict[str, Any]) -> str:
    model = details.get("model") or {}
    if not model:
        return ""
    parts = [html.escape(str(model.get("name") or model.get("dir", "")))]
    if model.get("version"):
        parts.append(f"version <code>{html.escape(str(model['version']))}</code>")
    if model.get("onnx_sha256"):
        parts.append(f"ONNX SHA-256 <code>{html.escape(str(model['onnx_sha256']))}</code>")
    return "Model " + ", ".join(parts) + "."


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 75rem; }
span.count { padding: .2rem .5rem; border-radius: .3rem; margin-right: .4rem; }
.ACCEPTED { background: #d9f2dd; } .NEEDS_REVIEW { background: #fff1c2; }
.REJECTED { background: #f4d9f2; } .FAILED { background: #f8d0d0; }
.charts svg { margin-right: 1rem; vertical-align: top; max-width: 100%; height: auto; }
figure { display: inline-block; width: 160px; margin: .4rem; padding: .4rem;
         border-radius: .4rem; vertical-align: top; }
figure img { display: block; margin: 0 auto .3rem; }
.nopreview { height: 96px; line-height: 96px; text-align: center; color: #666; }
figcaption { font-size: .8rem; overflow-wrap: normal; word-break: normal; hyphens: none; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { padding: .2rem .6rem; text-align: left; border-bottom: 1px solid #ddd;
         vertical-align: top; }
table.records th { cursor: pointer; user-select: none; background: #f3f3f3; }
table.records th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.records th[aria-sort="descending"]::after { content: " \\25BC"; }
table.records td { white-space: nowrap; }
table.records td:nth-child(1), table.records td:last-child { white-space: normal; }
table.records td:nth-child(1) { max-width: 22rem; }
table.records td:last-child { max-width: 28rem; }
"""


def write_run_report(
    path: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    labels: tuple[str, ...],
    threshold: float,
    *,
    details: dict[str, Any] | None = None,
    parameters: Mapping[str, str] | None = None,
) -> Path:
    """Write the report; ``rows`` are records plus ``true_label`` and ``source`` (local path).

    ``details`` may hold ``started_at`` (ISO 8601), ``model`` (``name``, ``version``,
    ``onnx_sha256``) and ``stack_timings_s`` (the offline stack's start-up phases).
    ``parameters`` are the run's template parameters: the thumbnails apply the image rules
    the run's Serialize step applied (the template's defaults without them).
    """
    details = details or {}
    classified = [r for r in rows if isinstance(r.get(CONFIDENCE_ATTRIBUTE), int | float)]
    histogram = confidence_histogram(classified, labels, threshold)
    labelled = [r for r in classified if r.get("true_label")]
    matrix_svg = confusion_matrix(labelled, labels)[0] if labelled else None
    review = [r for r in rows if classified_status(r) != Status.ACCEPTED]
    limits = image_limits(parameters)
    cards = "".join(_card(row, limits) for row in review[:MAX_CARDS])
    if len(review) > MAX_CARDS:
        cards += (
            f"<p>The first {MAX_CARDS} of {len(review)} are shown; every one is in the table "
            "of every record below (sort it by status).</p>"
        )
    counts = " ".join(
        f"<span class='count {s}'>{s} {n}</span>" for s, n in summary.get("by_status", {}).items()
    )
    accuracy = summary.get("accuracy")
    accuracy_text = (
        f"{accuracy:.1%} of {summary.get('labelled')} uploads with a true label"
        if accuracy is not None
        else "no true labels"
    )
    if summary.get("accuracy_of_accepted") is not None:
        accuracy_text += f"; of the ACCEPTED ones: {summary['accuracy_of_accepted']:.1%}"
    throughput = summary.get("images_per_second")
    when = html.escape(str(details.get("started_at") or ""))
    ordered = sorted(rows, key=lambda r: str(r.get(KEY_ATTRIBUTE, "")))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Scones Unlimited run report {when}</title>
<style>{_STYLE}</style></head><body>
<h1>Run report</h1>
<p>{f"Run started <time datetime='{when}'>{when}</time>. " if when else ""}{_model_html(details)}
Threshold {threshold:g}.</p>
<p>{summary.get("total", len(rows))} uploads: {counts}</p>
<p>Accuracy against true labels: {accuracy_text}.
{f"Throughput {throughput:.1f} uploads/s." if throughput else ""}</p>
<h2>Time per stage</h2>
{_stages_html(summary, details) or "<p>No timings.</p>"}
<div class="charts">
{histogram}
{matrix_svg or ""}
</div>
<h2>Needs a person ({len(review)})</h2>
<p>Low-confidence results, rejected uploads and failures, as uploaded.</p>
{cards or "<p>None.</p>"}
<h2>Every record ({len(rows)})</h2>
<p>Click a column header to sort.</p>
{records_table_html(ordered)}
<script>{_SORT_SCRIPT}</script>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, page)
    return path
