"""The retraining report: JSON (everything) plus Markdown and HTML (what a person reads)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from scones_core.retraining.outcome import FAILED, PROMOTED, REJECTED, ROLLED_BACK

from scones.safe_files import write_text_atomically

_CODE = re.compile(r"`([^`]*)`")


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """A readable summary: each step's decision, the gate's numbers, the canary's alarms."""
    lines = [
        f"# Retraining {report['run_name']}: {report['outcome']}",
        "",
        f"Started {report['started_at']}, {report['seconds']:.0f} s. "
        f"Threshold {report['parameters']['ConfidenceThreshold']}, gate minimum accepted "
        f"accuracy {report['parameters']['GateMinAcceptedAccuracy']}, canary "
        f"{report['parameters']['CanaryCapacityPercent']} %.",
        "",
        "| step | decision | seconds |",
        "|---|---|---:|",
    ]
    for step in report["steps"]:
        decision = str(step["decision"]).replace("|", "\\|")
        lines.append(f"| {step['step']} | {decision} | {step['seconds']:.1f} |")
    evaluate = next((s for s in report["steps"] if s["step"] == "evaluate"), None)
    if evaluate:
        lines += [
            "",
            "## Gate set: candidate vs production",
            "",
            "| model | version | accuracy | coverage | accepted accuracy |",
            "|---|---|---:|---:|---:|",
        ]
        for role in ("candidate", "production"):
            s = evaluate[role]
            lines.append(
                f"| {role} | {s['version']} | {_fmt(s['accuracy'])} | {_fmt(s['coverage'])} "
                f"| {_fmt(s['accepted_accuracy'])} |"
            )
    deploy = next((s for s in report["steps"] if s["step"] == "deploy"), None)
    if deploy:
        lines += [
            "",
            f"## Canary: {deploy['canary_variant']} beside {deploy['production_variant']} "
            f"({deploy['canary_share']:.0%} of traffic)",
            "",
            "| alarm | metric | canary value | threshold | state | from |",
            "|---|---|---:|---:|---|---|",
        ]
        for alarm in deploy["alarms"]:
            lines.append(
                f"| {alarm['name']} | {alarm['metric']} | {_fmt(alarm['value'])} | "
                f"{alarm['comparison']} {alarm['threshold']:g} | {alarm['state']} | "
                f"{alarm['source']} |"
            )
        lines += ["", "Records while baking, by the variant that answered:", ""]
        for variant, counts in deploy["records_by_variant"].items():
            lines.append(f"- `{variant}`: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        after = deploy.get("after_promotion")
        if after:
            lines += ["", "After promotion:", ""]
            for variant, counts in after["records_by_variant"].items():
                lines.append(f"- `{variant}`: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            if after.get("model_versions"):
                versions = ", ".join(f"`{v}`" for v in after["model_versions"])
                lines.append(f"- model version(s) answering: {versions}")
            lines += [f"- capture: `{uri}`" for uri in after["capture_files"][:3]]
    record = report["record"]
    lines += [
        "",
        f"## Record (`{record['pk']}`) and alert",
        "",
        f"- outcome: **{record['outcome']}**",
        f"- reason: {record['reason']}",
    ]
    if report.get("alert"):
        lines.append(f"- alert: {report['alert']['subject']}")
    return "\n".join(lines) + "\n"


def html_page(report: dict[str, Any]) -> str:
    """The Markdown's content as a small standalone HTML page (tables only, no scripts)."""
    body: list[str] = []
    table: list[str] = []

    def close_table() -> None:
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table.clear()

    for line in markdown(report).splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= {"-", ":"}:
                continue
            cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
            tag = "th" if not table else "td"
            table.append(
                "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"
            )
            continue
        close_table()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:]).replace('`', '')}</h2>")
        elif line.startswith("- "):
            text = _CODE.sub(r"<code>\1</code>", html.escape(line[2:]).replace("**", ""))
            body.append(f"<li>{text}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    close_table()
    colour = {
        PROMOTED: "#1b7f3b",
        REJECTED: "#b26b00",
        ROLLED_BACK: "#b3261e",
        FAILED: "#b3261e",
    }.get(report["outcome"], "#333")
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
        f"h1{{color:{colour}}}table{{border-collapse:collapse;margin:1em 0}}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:90%}"
        "th{background:#f3f3f3}"
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(report['run_name'])}</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_retrain_report(report: dict[str, Any], out_dir: Path, stamp: str) -> dict[str, Path]:
    """``retrain-<stamp>.json``, ``.md`` and ``.html`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"retrain-{stamp}.json",
        "markdown": out_dir / f"retrain-{stamp}.md",
        "html": out_dir / f"retrain-{stamp}.html",
    }
    # Each file whole or not at all: a full disk never leaves half a report.
    write_text_atomically(paths["json"], json.dumps(report, indent=2) + "\n")
    write_text_atomically(paths["markdown"], markdown(report))
    write_text_atomically(paths["html"], html_page(report))
    return paths
