"""The HTML report of ``scones run``: readable captions, honest thumbnails and charts,
every record in a sortable table, the run's date, model and timings."""

from __future__ import annotations

import base64
import errno
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from PIL import Image

from scones.cli.display import exit_status, summarise
from scones.reports.run_report import breakable, thumbnail, write_run_report
from scones.reports.svg_charts import CHAR_WIDTH
from scones.template_params import PROJECT_ROOT, parameter_default
from tests.chromium import chromium_binary

SAMPLES = PROJECT_ROOT / "samples"
DETAILS = {
    "started_at": "2026-12-01T13:15:00Z",
    "model": {"name": "bicycle-motorcycle", "version": "4ee99463716d", "onnx_sha256": "ab" * 32},
    "stack_timings_s": {"deploy_s": 0.6, "start_s": 1.9},
}


SVG = "{http://www.w3.org/2000/svg}"


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, path in enumerate(sorted((SAMPLES / "bicycle").glob("*.png"))[:6]):
        confidence = 0.5 + index / 10
        rows.append(
            {
                "key": f"incoming/bicycle/{path.name}",
                "status": "ACCEPTED" if confidence >= 0.93 else "NEEDS_REVIEW",
                "label": "bicycle" if index % 3 else "motorcycle",
                "confidence": confidence,
                "threshold": 0.93,
                "true_label": "bicycle",
                "source": str(path),
                "serialize_ms": 3.0 + index,
                "inference_ms": 20.0 - index,
                "event_time": "2026-12-01T13:15:11.300Z",
                "started_at": "2026-12-01T13:15:11.400Z",
                "recorded_at": f"2026-12-01T13:15:1{index}.544Z",
                "endpoint_name": "scones-bicycle-motorcycle",
                "model_version": "4ee99463716d" if index % 2 else "c0ffee123456",
            }
        )
    for path in sorted((SAMPLES / "not-images").iterdir()):
        rows.append(
            {
                "key": f"incoming/not-images/{path.name}",
                "status": "REJECTED",
                "error_code": "NotAnImage",
                "reason": "The upload is not an image this product classifies.",
                "source": str(path),
                "recorded_at": "2026-12-01T13:15:11.544Z",
            }
        )
    return rows


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = _rows()
    summary = summarise(rows, 2.0).to_json()
    path = write_run_report(
        tmp_path / "run.html", rows, summary, ("bicycle", "motorcycle"), 0.93, details=DETAILS
    )
    return path, rows


def test_the_report_lists_every_record_with_the_run_and_model(
    report: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, rows = report
    page = path.read_text()
    table = page.split('<table class="records">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr class=") == len(rows)
    assert 'class="ACCEPTED"' in table  # accepted records are listed too
    assert "2026-12-01T13:15:00Z" in page
    assert "4ee99463716d" in page and "ab" * 32 in page
    assert "Time per stage" in page and "inference" in page and "deploy 0.60 s" in page
    # Not every upload is an image.
    assert f"{len(rows)} uploads" in page and "images:" not in page
    assert "<script>" in page and "aria-sort" in page
    # Each record's own model version (two models: a canary's records say which judged them).
    assert ">model</th>" in table
    assert table.count(">c0ffee123456</td>") == sum(
        r.get("model_version") == "c0ffee123456" for r in rows
    )


def test_a_report_the_disk_cannot_hold_leaves_no_part_of_a_page(tmp_path: Path) -> None:
    """A full disk midway through the page (here a file size limit: EFBIG, as ENOSPC)
    leaves neither a truncated report nor its partial file."""
    rows = _rows()
    script = textwrap.dedent(
        """
        import json, resource, signal, sys
        from pathlib import Path
        from scones.reports.run_report import write_run_report
        rows, summary, details = json.load(sys.stdin)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            write_run_report(Path(sys.argv[1]), rows, summary, ("bicycle", "motorcycle"), 0.93,
                             details=details)
        except OSError as exc:
            print(exc.errno)
        """
    )
    written = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run.html")],
        input=json.dumps([rows, summarise(rows, 2.0).to_json(), DETAILS]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert written.stdout.strip() == str(errno.EFBIG), written.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_key_that_turns_its_text_around_is_shown_as_written(tmp_path: Path) -> None:
    turned = "incoming/invoice\u202egnp.exe"
    rows = [
        {"key": turned, "status": "REJECTED", "error_code": "NotAnImage", "reason": f"{turned}?"},
        {"key": "incoming/ok\u200b.png", "status": "ACCEPTED", "label": "bicycle"},
    ]
    summary = summarise(rows, 1.0).to_json()
    page = write_run_report(
        tmp_path / "run.html", rows, summary, ("bicycle", "motorcycle"), 0.93, details=DETAILS
    ).read_text()
    # What a reader sees: the escapes, in the cards, the table and the reasons.
    assert "\u202e" not in page and "\u200b" not in page
    assert page.count("invoice\\u202egnp.exe") >= 3 and "ok\\u200b.png" in page


def test_captions_wrap_between_words_only() -> None:
    assert breakable("incoming/bicycle/bike_s_000.png") == (
        "incoming/<wbr>bicycle/<wbr>bike_<wbr>s_<wbr>000.png"
    )
    assert breakable("<b>&") == "&lt;b&gt;&amp;"


def test_report_styles_never_break_words_or_pixelate(
    report: tuple[Path, list[dict[str, Any]]],
) -> None:
    page = report[0].read_text()
    assert "break-all" not in page and "anywhere" not in page
    assert "pixelated" not in page


def test_thumbnails_keep_the_aspect_ratio_and_are_resampled(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    image = Image.new("RGB", (64, 32), "white")
    for x in range(64):
        image.putpixel((x, 16), (0, 0, 0) if x % 2 else (255, 255, 255))
    image.save(wide)
    made = thumbnail(wide)
    assert made is not None
    data, width, height = made
    assert (width, height) == (96, 48)
    with Image.open(io.BytesIO(base64.b64decode(data))) as small:
        assert small.size == (96, 48)
        # A resampling filter blends neighbours; nearest-neighbour copies only the two inputs.
        colours = {c for _, c in small.getcolors(96 * 48) or []}
        assert len(colours) > 2
    # What the image rules refuse gets no thumbnail (a text file named .png, a cut-off file).
    assert thumbnail(SAMPLES / "not-images" / "delivery-note.png") is None
    assert thumbnail(SAMPLES / "not-images" / "truncated-photo.png") is None
    assert thumbnail(tmp_path / "missing.png") is None
    assert thumbnail(tmp_path) is None  # a folder
    huge = tmp_path / "huge.png"
    with huge.open("wb") as sparse:  # over MaxImageBytes: refused from its size, unread
        sparse.truncate(int(parameter_default("MaxImageBytes")) + 1)
    assert thumbnail(huge) is None


def test_thumbnails_apply_the_image_rules_of_the_run(tmp_path: Path) -> None:
    # A photo with a clip appended (a motion photo): over the default MaxImageBytes, within
    # the MaxImageBytes the run was given, so the run classified it and it has a thumbnail.
    default_max = int(parameter_default("MaxImageBytes"))
    photo = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(photo, format="JPEG")
    motion = tmp_path / "motion.jpg"
    motion.write_bytes(photo.getvalue() + bytes(default_max))
    row = {
        "key": "incoming/motion.jpg",
        "status": "NEEDS_REVIEW",
        "label": "bicycle",
        "confidence": 0.6,
        "threshold": 0.93,
        "source": str(motion),
    }
    summary = summarise([row], 1.0).to_json()
    labels = ("bicycle", "motorcycle")

    def card(parameters: dict[str, str] | None) -> str:
        path = write_run_report(
            tmp_path / "run.html", [row], summary, labels, 0.93, parameters=parameters
        )
        return path.read_text().split("<figure", 1)[1].split("</figure>", 1)[0]

    assert "nopreview" in card(None)
    raised = card({"MaxImageBytes": str(2 * default_max)})
    assert "data:image/png;base64," in raised and "nopreview" not in raised


def _svg(markup: str) -> ElementTree.Element:
    """A chart as an XML document (an inline SVG must be well-formed to be drawn)."""
    return ElementTree.fromstring(markup)


def _bars(markup: str) -> list[dict[str, Any]]:
    return [
        {
            "label": rect.get("data-label"),
            "bin": float(rect.get("data-bin", "nan")),
            "count": int(rect.get("data-count", "0")),
            "x": float(rect.get("x", "nan")),
            "width": float(rect.get("width", "nan")),
            "height": float(rect.get("height", "nan")),
        }
        for rect in _svg(markup).iter(f"{SVG}rect")
        if rect.get("class") == "bar"
    ]


def test_the_histogram_has_no_overlapping_translucent_bars() -> None:
    from scones.reports import run_report

    rows = [r for r in _rows() if "label" in r]
    rows += [{"label": "bicycle", "confidence": 0.51}, {"label": "motorcycle", "confidence": 0.51}]
    markup = run_report.confidence_histogram(rows, ("bicycle", "motorcycle"), 0.93)
    assert "opacity" not in markup
    bars = _bars(markup)
    # Every classified upload is in one bar of its class, and the bars' heights follow
    # their counts.
    for label in ("bicycle", "motorcycle"):
        expected = sum(1 for r in rows if r["label"] == label)
        assert expected
        assert sum(b["count"] for b in bars if b["label"] == label) == expected
    unit = bars[0]["height"] / bars[0]["count"]
    assert all(b["height"] == pytest.approx(b["count"] * unit, abs=0.02) for b in bars)
    # Two classes in one bin stand side by side, never over each other.
    shared = [b for b in bars if b["bin"] == 0.5]
    assert {b["label"] for b in shared} == {"bicycle", "motorcycle"}
    first, second = sorted(shared, key=lambda b: b["x"])
    assert first["x"] + first["width"] <= second["x"] + 1e-6
    [threshold] = [p for p in _svg(markup).iter(f"{SVG}path") if p.get("class") == "threshold"]
    assert threshold.get("stroke-dasharray")


def test_every_legend_entry_and_the_threshold_stay_inside_the_histogram() -> None:
    """Six long labels wrap onto more legend rows instead of running off the chart, and a
    threshold below the lowest bin still gets its line (the axis reaches it)."""
    from scones.reports import run_report

    labels = tuple(f"class number {i}" for i in range(6))
    rows = [{"label": label, "confidence": 0.2 + 0.1 * i} for i, label in enumerate(labels)]
    markup = run_report.confidence_histogram(rows, labels, 0.05)
    svg = _svg(markup)
    width = float(svg.get("width", "0"))
    legend = [
        t
        for t in svg.iter(f"{SVG}text")
        if "(1)" in (t.text or "") or "threshold" in (t.text or "")
    ]
    assert len(legend) == 7
    assert all(float(t.get("x", "0")) + CHAR_WIDTH * len(t.text or "") <= width for t in legend)
    assert len({t.get("y") for t in legend}) > 1  # wrapped onto a second row
    [line] = [p for p in svg.iter(f"{SVG}path") if p.get("class") == "threshold"]
    assert float(line.get("d", "M-1").split(",")[0][1:]) >= 0
    description = svg.find(f"{SVG}desc")
    assert description is not None and "class number 5 (1)" in (description.text or "")
    assert "threshold 0.05" in (description.text or "")


def test_the_confusion_matrix_counts_each_true_and_predicted_pair() -> None:
    from scones.reports import run_report

    rows = _rows()  # every true label bicycle; predicted motorcycle at 0 and 3
    markup, matrix = run_report.confusion_matrix(rows, ("bicycle", "motorcycle"))
    assert matrix == [[4, 2], [0, 0]]
    cells = {
        (c.get("data-true"), c.get("data-predicted")): int(c.get("data-count", "-1"))
        for c in _svg(markup).iter(f"{SVG}rect")
    }
    assert cells == {
        ("bicycle", "bicycle"): 4,
        ("bicycle", "motorcycle"): 2,
        ("motorcycle", "bicycle"): 0,
        ("motorcycle", "motorcycle"): 0,
    }
    assert _svg(markup).find(f"{SVG}title").text == "Confusion matrix"
    description = _svg(markup).find(f"{SVG}desc")
    assert description is not None
    assert "true bicycle, predicted motorcycle: 2" in (description.text or "")


# For each caption key, the characters on either side of every soft line break.
LINE_BREAKS_JS = """
() => {
  const found = [];
  for (const b of document.querySelectorAll("figcaption b")) {
    const walker = document.createTreeWalker(b, NodeFilter.SHOW_TEXT);
    let previous = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let i = 0; i < node.length; i++) {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const top = range.getBoundingClientRect().top;
        const ch = node.data[i];
        if (previous && top > previous.top + 2) found.push([previous.ch, ch]);
        previous = {top, ch};
      }
    }
  }
  return found;
}
"""


def test_the_page_sorts_in_a_browser(report: tuple[Path, list[dict[str, Any]]]) -> None:
    """In a real browser; without Chromium this test fails, it does not skip."""
    from playwright.sync_api import sync_playwright

    path, _ = report
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_binary(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(path.as_uri())

            def column(index: int) -> list[str]:
                return list(
                    page.eval_on_selector_all(
                        "table.records tbody tr",
                        f"rows => rows.map(r => r.cells[{index}].dataset.sort)",
                    )
                )

            page.click("table.records th:nth-child(4)")  # confidence
            ascending = [float(v) for v in column(3) if v]
            assert ascending == sorted(ascending) and column(3)[-1] == ""  # blanks last
            page.click("table.records th:nth-child(4)")
            descending = [float(v) for v in column(3) if v]
            assert descending == sorted(descending, reverse=True)
            # Captions wrap at word boundaries: where a caption's line ends (the next
            # character sits lower), the last character is a separator, never a letter.
            breaks = page.evaluate(LINE_BREAKS_JS)
            assert breaks, "expected some wrapped captions"
            for before, after in breaks:
                assert before in "/_- ", (before, after)
        finally:
            browser.close()


def test_a_run_with_a_failed_upload_exits_1_and_says_it_is_a_fault() -> None:
    """Bad input is REJECTED and the run still succeeds; FAILED is the stack's fault."""
    from rich.console import Console

    rejected = [{"status": "REJECTED"}, {"status": "ACCEPTED"}]
    assert exit_status(Console(record=True), summarise(rejected)) == 0
    console = Console(record=True, width=200)
    assert exit_status(console, summarise([*rejected, {"status": "FAILED"}])) == 1
    assert "1 of 3 upload(s) FAILED: a fault, not bad input" in console.export_text()
    assert exit_status(None, summarise([{"status": "FAILED"}])) == 1


def test_the_records_table_shows_hostile_keys_as_text_and_never_as_terminal_codes() -> None:
    """Keys, reasons and names come from uploaders: a key holding Rich markup (``[/]``
    used to end the whole command with a MarkupError) or terminal escape sequences is
    printed as literal, escaped text."""
    from rich.console import Console

    from scones.cli.display import records_table

    rows = [
        {
            "key": "incoming/a[/]b[bold]x\x1b[31mRED\x1b]0;title\x07\u202egnp.png",
            "status": "REJECTED",
            "error_code": "NotAnImage",
            "reason": "the key incoming/\x1b[2J says [red]nothing[/red]",
        },
        {"key": "incoming/ok.png", "status": "ACCEPTED", "label": "bicycle", "confidence": 0.99},
    ]
    console = Console(width=400, force_terminal=True, color_system="standard")
    with console.capture() as captured:
        console.print(records_table(rows, strip_prefix="incoming/"))
    out = captured.get()
    assert "a[/]b[bold]x\\x1b[31mRED\\x1b]0;title\\x07\\u202egnp.png" in out
    assert "the key incoming/\\x1b[2J says [red]nothing[/red]" in out
    # The only escape sequences are the table's own colours (SGR: ESC [ ... m).
    assert "\x07" not in out and "\u202e" not in out and "\x1b]" not in out
    assert "\x1b[2J" not in out and "\x1b[31mRED" not in out


def test_a_reviewed_records_true_label_is_the_persons_answer() -> None:
    from rich.console import Console

    from scones.cli.display import records_table

    reviewed = {
        "key": "incoming/r.png",
        "status": "REVIEWED",
        "label": "motorcycle",
        "confidence": 0.61,
        "review_label": "bicycle",
        "reviewer": "ana",
        "classified_status": "NEEDS_REVIEW",
    }
    console = Console(width=300, color_system=None)
    with console.capture() as captured:
        console.print(records_table([reviewed], strip_prefix="incoming/"))
    [row] = [line for line in captured.get().splitlines() if "r.png" in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:5] == ["r.png", "REVIEWED", "motorcycle", "0.610", "bicycle"]


def test_the_histogram_of_three_classes_keeps_answers_below_one_half() -> None:
    """Three classes allow a top probability of 1/3: the bins start there, so no upload
    counted in the legend is missing from the bars."""
    from scones.reports import run_report

    rows = [
        {"label": "van", "confidence": 0.346},
        {"label": "truck", "confidence": 0.483},
        {"label": "car", "confidence": 1.0},
    ]
    markup = run_report.confidence_histogram(rows, ("van", "truck", "car"), 0.45)
    counted = {b["label"]: (b["bin"], b["count"]) for b in _bars(markup)}
    assert counted == {"van": (0.325, 1), "truck": (0.475, 1), "car": (0.975, 1)}
    legend = "".join(_svg(markup).itertext())
    assert "van (1)" in legend and "truck (1)" in legend and "car (1)" in legend


def test_the_terminal_and_the_report_give_each_record_the_same_reason(tmp_path: Path) -> None:
    """Both listings take a record's reason from ``records.outcome_reason``: a copy in
    each had drifted ("below threshold" against "below the threshold", and the report
    said nothing of a person's review)."""
    from rich.console import Console

    from scones.cli.display import records_table

    base = {"label": "motorcycle", "confidence": 0.61, "threshold": 0.93}
    rows: list[dict[str, Any]] = [
        {**base, "key": "incoming/low.png", "status": "NEEDS_REVIEW"},
        {
            **base,
            "key": "incoming/seen.png",
            "status": "REVIEWED",
            "review_label": "bicycle",
            "reviewer": "ana",
            "classified_status": "NEEDS_REVIEW",
        },
        {
            "key": "incoming/bad.png",
            "status": "REJECTED",
            "error_code": "NotAnImage",
            "reason": "not an image",
        },
        {"key": "incoming/lost.png", "status": "FAILED", "reason": "the endpoint timed out"},
    ]
    expected = {
        "low.png": "confidence below threshold 0.93",
        "seen.png": "reviewed as bicycle by ana (was NEEDS_REVIEW)",
        "bad.png": "NotAnImage: not an image",
        "lost.png": "the endpoint timed out",
    }
    console = Console(width=400, color_system=None)
    with console.capture() as captured:
        console.print(records_table(rows, strip_prefix="incoming/"))
    for name, reason in expected.items():
        [line] = [line for line in captured.get().splitlines() if name in line]
        assert line.split("│")[6].strip() == reason

    summary = summarise(rows, 1.0).to_json()
    page = write_run_report(
        tmp_path / "run.html", rows, summary, ("bicycle", "motorcycle"), 0.93
    ).read_text()
    table = page.split('<table class="records">', 1)[1].split("</table>", 1)[0]
    for name, reason in expected.items():
        [row] = [row for row in table.split("<tr class=")[1:] if name in row]
        assert f">{reason}<" in row, row


def test_a_run_where_thousands_need_a_person_shows_a_bounded_number_of_cards(
    tmp_path: Path,
) -> None:
    """Each card holds a thumbnail of about 16 KB: 3,000 uploads below the threshold made a
    53 MB page. The cards stop at MAX_CARDS and say where the others are; the table still
    lists every record."""
    from scones.reports.run_report import MAX_CARDS

    image = sorted((SAMPLES / "bicycle").glob("*.png"))[0]
    rows: list[dict[str, Any]] = [
        {
            "key": f"incoming/{i:04d}.png",
            "status": "NEEDS_REVIEW",
            "label": "bicycle",
            "confidence": 0.6,
            "threshold": 0.93,
            "source": str(image),
        }
        for i in range(MAX_CARDS + 50)
    ]
    summary = summarise(rows, 1.0).to_json()
    page = write_run_report(
        tmp_path / "run.html", rows, summary, ("bicycle", "motorcycle"), 0.93
    ).read_text()
    assert page.count("<figure ") == MAX_CARDS
    assert page.count("data:image/png;base64,") == MAX_CARDS
    assert f"The first {MAX_CARDS} of {len(rows)} are shown" in page
    assert f"Needs a person ({len(rows)})" in page
    table = page.split('<table class="records">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr class=") == len(rows)


def test_a_run_of_thousands_lists_on_the_terminal_only_what_needs_a_person() -> None:
    """3,000 uploads printed 3,800 lines before the summary. Past TERMINAL_ROWS records the
    terminal lists the first TERMINAL_ROWS the workflow did not accept (a REVIEWED record
    by the status it was classified with) and says the rest are in the files."""
    from scones.cli.display import TERMINAL_ROWS, rows_to_list

    def rows(accepted: int, review: int) -> list[dict[str, Any]]:
        made = [{"key": f"a{i}", "status": "ACCEPTED"} for i in range(accepted)]
        made += [{"key": f"r{i}", "status": "NEEDS_REVIEW"} for i in range(review)]
        made += [{"key": "seen", "status": "REVIEWED", "classified_status": "ACCEPTED"}]
        return made

    few = rows(TERMINAL_ROWS - 3, 2)
    assert rows_to_list(few) == (few, "Results")
    many = rows(3000, 7)
    listed, title = rows_to_list(many)
    assert [r["key"] for r in listed] == [f"r{i}" for i in range(7)]
    assert title == f"Results: the 7 of {len(many)} uploads the workflow did not accept"
    flood = rows(3000, TERMINAL_ROWS + 5)
    listed, title = rows_to_list(flood)
    assert len(listed) == TERMINAL_ROWS
    assert title == (
        f"Results: the first {TERMINAL_ROWS} of the {TERMINAL_ROWS + 5} of {len(flood)} "
        "uploads the workflow did not accept"
    )
    assert rows_to_list(rows(3000, 0))[0] == []
