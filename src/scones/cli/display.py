"""Tables and summaries of workflow records, for people and for ``--json``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from scones_core.monitoring.timestamps import parse_timestamp
from scones_core.records import (
    CONFIDENCE_ATTRIBUTE,
    EVENT_TIME_ATTRIBUTE,
    INFERENCE_MS_ATTRIBUTE,
    KEY_ATTRIBUTE,
    LABEL_ATTRIBUTE,
    MODEL_VERSION_ATTRIBUTE,
    RECORDED_AT_ATTRIBUTE,
    REVIEW_LABEL_ATTRIBUTE,
    SERIALIZE_MS_ATTRIBUTE,
    STARTED_AT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    TERMINAL_STATUSES,
    Status,
    classified_status,
    outcome_reason,
)

from scones.cli.errors import CommandFailed
from scones.offline.executions import STOP_WAIT_SECONDS
from scones.shown_text import shown

STATUS_STYLES: dict[str, str] = {
    Status.ACCEPTED: "green",
    Status.NEEDS_REVIEW: "yellow",
    Status.REJECTED: "magenta",
    Status.FAILED: "red",
    Status.REVIEWED: "cyan",
}


def parse_time(value: Any) -> datetime | None:
    """A record's timestamp, or ``None`` when it has none (rejected before a stage ran)."""
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def scones_command() -> str:
    """How to call this tool from the working directory, for hints that must work when
    pasted: ``scones`` only when it is on PATH (the project's venv usually is not)."""
    if shutil.which("scones"):
        return "scones"
    installed = Path(sys.executable).parent / "scones"
    if installed.is_file():
        try:
            return str(installed.relative_to(Path.cwd()))
        except ValueError:
            return str(installed)
    return f"{sys.executable} -m scones.cli.main"


def make_console(stderr: bool = False) -> Console:
    """A console that stays readable when output is piped (no terminal width to read),
    on standard error or standard output (``sys.stdout`` when it prints: the command's
    ``GuardedStdout``)."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=140)
    return console


def stack_progress(console: Console, disable: bool) -> Progress:
    """The bars of a command that sends files to a stack: "uploading", then
    "classifying" as their records come (each a task the command adds)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=True,
    )


# What a shell reports for a writer whose reader closed the pipe (``yes | head``: killed by
# SIGPIPE, 128 + 13). Python ignores SIGPIPE, so a command returns it itself.
CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE


class GuardedStdout:
    """Standard output for a command whose work outlives what it prints (``scones run``
    writes its report files after the results, ``scones down`` saves the records, ``scones
    up`` stops its stack): a write that fails (a pipe that ``head`` closed, a full disk, a
    terminal gone) keeps its error for the end instead of ending the command there, and
    what comes after it is dropped. ``scones.cli.main`` puts it in place of ``sys.stdout``
    for every command, so ``print``, Rich consoles and argparse's ``--help`` all write
    through it; Rich's own handling of a closed pipe (exit 1 on the spot, silently) and
    argparse's (the error swallowed, exit 0) never see the error."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        self._guarded(lambda: self.stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._guarded(self.stream.flush)

    def isatty(self) -> bool:
        return self.error is None and self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        # The rest of a text stream (encoding, errors, fileno, buffer) is the stream's own.
        return getattr(self.stream, name)

    def _guarded(self, action: Callable[[], object]) -> None:
        if self.error is not None:
            return
        try:
            action()
        except OSError as exc:
            self.error = exc
            _to_devnull(self.stream)

    def status(self, code: int) -> int:
        """The command's exit status ``code`` when every write went through. After a closed
        pipe, quietly the status a shell gives a writer SIGPIPE killed; after another
        failure, an error naming standard output. A command that failed or was interrupted
        (``code`` not 0) keeps its own status either way: it says more than the output's."""
        self.flush()  # what ``print`` left in the stream's buffer fails here, not at exit
        if self.error is None:
            return code
        if not isinstance(self.error, BrokenPipeError):
            message = f"cannot write to standard output: {self.error}"
            if code == 0:
                raise CommandFailed(message)
            with contextlib.suppress(OSError):  # a terminal gone takes standard error too
                print(f"scones: error: {message}", file=sys.stderr)
        return code or CLOSED_PIPE_STATUS


def stdout_failed() -> bool:
    """Whether something printed so far could not be written to standard output: a
    command that serves only what it printed (a page's URL and token) has nothing to do."""
    sys.stdout.flush()
    return isinstance(sys.stdout, GuardedStdout) and sys.stdout.error is not None


def _to_devnull(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what Python still holds in its
    buffer is flushed there at exit, instead of failing again ("Exception ignored ...")."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


# Said as a stack starts to stop: it first lets running executions end (OfflineStack.stop).
STOPPING = (
    "stopping the offline stack (running executions may take up to "
    f"{STOP_WAIT_SECONDS:g} s to end; then its records are saved)..."
)


def print_saved(console: Console, stack: Any) -> None:
    """Where a stopped stack saved its records (or why it could not), what became of a
    model server that died, and what had no record: every folder that could not take
    them, with its cause, then where they went."""
    if stack.save_error is not None:
        console.print(f"[red]the records could not be saved:[/] {escape(stack.save_error)}")
    if stack.saved_records is not None:
        instead = " instead" if stack.save_error is not None else ""
        console.print(f"records saved{instead} to [bold]{escape(str(stack.saved_records))}[/]")
    if stack.model_server_report:
        console.print(f"[yellow]{escape(stack.model_server_report)}[/]")
    if stack.unfinished:
        console.print(f"[yellow]{escape(stack.unfinished)}[/]")  # it names uploads' keys


NAMED_NOT_UPLOADED = 5


def print_not_uploaded(console: Console, paths: list[Path], total: int) -> None:
    """The files an interrupted upload did not send: no record and no stop can name them,
    so they are named here, by count and the first of them, in the order they were listed.
    The first was being sent: it may have reached the bucket (the stop then names it too)."""
    if not paths:
        return
    named = ", ".join(shown(str(p)) for p in paths[:NAMED_NOT_UPLOADED])
    more = len(paths) - NAMED_NOT_UPLOADED
    console.print(
        f"[yellow]{len(paths)} of {total} file(s) were not uploaded (interrupted; the "
        "first was being sent and may have reached the stack, whose records then name "
        "it):[/] " + escape(named) + (f" and {more} more" if more > 0 else ""),
        highlight=False,
        soft_wrap=True,
    )


def plain(value: object) -> Text:
    """``value`` as literal text for a Rich table: no markup (a key may hold ``[/]``) and
    every unprintable character shown as its escape (``scones.shown_text``)."""
    return Text(shown(str(value)))


# The most records a run lists on the terminal. Past that, thousands of lines scroll the
# summary's context away: the run lists the uploads that need a person, and every record
# is in its report and records files.
TERMINAL_ROWS = 100


def rows_to_list(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The records a run lists on the terminal and the table's title: all of them, or for
    a run of more than TERMINAL_ROWS, the first TERMINAL_ROWS of those the workflow did
    not accept (by ``classified_status``: a person's review since changes nothing)."""
    if len(rows) <= TERMINAL_ROWS:
        return rows, "Results"
    review = [row for row in rows if classified_status(row) != Status.ACCEPTED]
    listed = review[:TERMINAL_ROWS]
    which = (
        f"the first {len(listed)} of the {len(review)}"
        if len(review) > len(listed)
        else f"the {len(listed)}"
    )
    return listed, f"Results: {which} of {len(rows)} uploads the workflow did not accept"


def records_table(
    rows: list[dict[str, Any]],
    title: str = "Results",
    strip_prefix: str = "",
    *,
    detailed: bool = False,
) -> Table:
    """One line per record. ``detailed`` adds the time each record was written and the
    version of the model that classified it (the record's own ``model_version``)."""
    table = Table(title=title, show_lines=False)
    if detailed:
        table.add_column("recorded at (UTC)", no_wrap=True)
    table.add_column("key", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("label")
    table.add_column("confidence", justify="right")
    table.add_column("true label")
    table.add_column("reason", overflow="fold", max_width=60)
    if detailed:
        table.add_column("model", no_wrap=True)
    for row in rows:
        status = str(row.get(STATUS_ATTRIBUTE, ""))
        confidence = row.get(CONFIDENCE_ATTRIBUTE)
        key = str(row.get(KEY_ATTRIBUTE, ""))
        # Every value from a record is shown as plain text: keys, reasons, labels and the
        # reviewer's name come from uploaders and people, not from this program.
        cells: list[Text | str] = [
            plain(key.removeprefix(strip_prefix)),
            Text(status, style=STATUS_STYLES.get(status, "white")),
            plain(row.get(LABEL_ATTRIBUTE) or "-"),
            f"{confidence:.3f}" if isinstance(confidence, int | float) else "-",
            # A person's answer is the image's true label, once reviewed.
            plain(row.get("true_label") or row.get(REVIEW_LABEL_ATTRIBUTE) or "-"),
            plain(outcome_reason(row)),
        ]
        if detailed:
            recorded = parse_time(row.get(RECORDED_AT_ATTRIBUTE))
            when = recorded.strftime("%Y-%m-%d %H:%M:%S") if recorded else "-"
            # Only a classified record went through the model.
            model = plain(row.get(MODEL_VERSION_ATTRIBUTE) or "-")
            cells = [when, *cells, model]
        table.add_row(*cells)
    return table


@dataclass
class Summary:
    total: int
    by_status: dict[str, int]
    accuracy: float | None
    accuracy_accepted: float | None
    labelled: int
    images_per_second: float | None
    stages_ms: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_status": self.by_status,
            "accuracy": self.accuracy,
            "accuracy_of_accepted": self.accuracy_accepted,
            "labelled": self.labelled,
            "images_per_second": self.images_per_second,
            "stages_ms": self.stages_ms,
        }


def summarise(rows: list[dict[str, Any]], wall_seconds: float | None = None) -> Summary:
    counts = Counter(str(r.get(STATUS_ATTRIBUTE)) for r in rows)
    by_status = {status.value: counts.get(status, 0) for status in TERMINAL_STATUSES}
    labelled = [r for r in rows if r.get("true_label") and r.get(LABEL_ATTRIBUTE)]
    correct = [r for r in labelled if r[LABEL_ATTRIBUTE] == r["true_label"]]
    # What the workflow accepted, also when a person has reviewed it since.
    accepted = [r for r in labelled if classified_status(r) == Status.ACCEPTED]
    accepted_correct = [r for r in accepted if r[LABEL_ATTRIBUTE] == r["true_label"]]
    stages: dict[str, list[float]] = {
        "queue and start": [],
        "serialize": [],
        "inference": [],
        "workflow": [],
        "end to end": [],
    }
    for row in rows:
        event, started, recorded = (
            parse_time(row.get(k))
            for k in (EVENT_TIME_ATTRIBUTE, STARTED_AT_ATTRIBUTE, RECORDED_AT_ATTRIBUTE)
        )
        if event and started:
            stages["queue and start"].append((started - event).total_seconds() * 1000)
        if started and recorded:
            stages["workflow"].append((recorded - started).total_seconds() * 1000)
        if event and recorded:
            stages["end to end"].append((recorded - event).total_seconds() * 1000)
        for name, key in (
            ("serialize", SERIALIZE_MS_ATTRIBUTE),
            ("inference", INFERENCE_MS_ATTRIBUTE),
        ):
            if isinstance(row.get(key), int | float):
                stages[name].append(float(row[key]))
    return Summary(
        total=len(rows),
        by_status=by_status,
        accuracy=len(correct) / len(labelled) if labelled else None,
        accuracy_accepted=len(accepted_correct) / len(accepted) if accepted else None,
        labelled=len(labelled),
        images_per_second=len(rows) / wall_seconds if wall_seconds else None,
        stages_ms={
            name: {
                "mean": round(statistics.fmean(values), 1),
                "p95": round(_percentile(values, 95), 1),
            }
            for name, values in stages.items()
            if values
        },
    )


def exit_status(console: Console | None, summary: Summary) -> int:
    """1 when any upload ended FAILED (a fault of the stack, never of the input: bad
    input is REJECTED), so scripts and CI notice; 0 otherwise."""
    failed = summary.by_status.get(Status.FAILED.value, 0)
    if failed and console is not None:
        console.print(
            f"[red]{failed} of {summary.total} upload(s) FAILED[/]: a fault, not bad input; "
            "each record says why (`scones redrive` replays them once it is fixed)."
        )
    return 1 if failed else 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_summary(console: Console, summary: Summary) -> None:
    parts = [f"[{STATUS_STYLES[s]}]{s}[/] {n}" for s, n in summary.by_status.items()]
    # Not every upload is an image: count uploads.
    console.print(f"[bold]{summary.total} uploads:[/] " + "  ".join(parts))
    if summary.accuracy is not None:
        line = f"accuracy against true labels: {summary.accuracy:.1%} of {summary.labelled}"
        if summary.accuracy_accepted is not None:
            line += f"; of the ACCEPTED ones: {summary.accuracy_accepted:.1%}"
        console.print(line)
    if summary.images_per_second is not None:
        console.print(f"throughput: {summary.images_per_second:.1f} uploads/s")
    if summary.stages_ms:
        stage_table = Table(title="time per stage (ms)")
        stage_table.add_column("stage")
        stage_table.add_column("mean", justify="right")
        stage_table.add_column("p95", justify="right")
        for name, numbers in summary.stages_ms.items():
            stage_table.add_row(name, f"{numbers['mean']:.1f}", f"{numbers['p95']:.1f}")
        console.print(stage_table)


def monitor_line(monitor: dict[str, Any]) -> str:
    """One readable line for the monitor's response: no ``None``, no nested dumps."""
    parts: list[str] = []
    for name, value in monitor.items():
        if name == "retraining":
            parts.append(f"retraining={_retraining(value)}")
        elif name == "alerts":
            parts.append(f"alerts={','.join(map(str, value)) if value else 'none'}")
        elif name == "warnings":
            if value:
                parts.append(f"warnings={len(value)}")
        elif _plain(value) and (name != "warnings_omitted" or value):
            parts.append(f"{name}={value}")
    return ", ".join(parts)


def _retraining(value: Any) -> str:
    if not value:
        return "not started"
    if isinstance(value, dict):
        status = str(value.get("status") or "unknown")
        target = (
            value.get("execution_arn") or value.get("training_job_name") or value.get("run_name")
        )
        return f"{status} ({target})" if target else status
    return str(value)


def _plain(value: Any) -> bool:
    return value is not None and not isinstance(value, dict | list)
