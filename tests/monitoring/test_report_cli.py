"""``scones report``: capture files (folder or S3 prefix) -> PNG, built from the parsed data."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from PIL import Image

from scones.cli.main import main
from scones.reports.capture_plot import bucket_series, plot_data, render_capture_plot
from scones.reports.capture_source import CaptureSourceError, load_capture
from scones.serving.capture import CaptureWriter, LocalCaptureSink, S3CaptureSink
from scones.template_params import parameter_default
from tests.full_disk import fill_disk
from tests.monitoring.conftest import ENDPOINT, LABELS, VARIANT, Prediction

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record_traffic(sink, rows: list[Prediction], *, minutes_apart: int = 3) -> list[datetime]:
    """Send ``rows`` through the model server's real capture writer with a fixed clock."""
    now = [START]
    writer = CaptureWriter(
        sink,
        endpoint_name=ENDPOINT,
        variant_name=VARIANT,
        clock=lambda: now[0],
        max_buffered_records=10,
    )
    times = []
    for index, row in enumerate(rows):
        now[0] = START + timedelta(minutes=minutes_apart * index, seconds=index % 7)
        times.append(now[0])
        assert writer.capture(
            input_body=b"png",
            input_content_type="image/png",
            output_body=json.dumps(list(row.probabilities)),
        )
        if index % 10 == 9:
            writer.flush()
    writer.close()
    return times


@pytest.fixture
def traffic(predictions: dict[str, list[Prediction]]) -> list[Prediction]:
    rows = predictions["bicycle"][:30] + predictions["motorcycle"][:30]
    random.Random(3).shuffle(rows)
    return rows


def test_folder_report_draws_exactly_the_parsed_data(
    tmp_path: Path, traffic: list[Prediction], capsys: pytest.CaptureFixture[str]
) -> None:
    times = record_traffic(LocalCaptureSink(tmp_path / "capture"), traffic)
    # A malformed line in its own file: counted and skipped.
    hour = tmp_path / "capture" / ENDPOINT / VARIANT / "2026" / "11" / "25" / "09"
    (hour / "broken.jsonl").write_text("{not json\n")

    series = load_capture(str(tmp_path / "capture"), LABELS)
    assert series.times == tuple(times)
    assert series.confidences == tuple(max(r.probabilities) for r in traffic)
    assert series.predicted == tuple(
        LABELS[r.probabilities.index(max(r.probabilities))] for r in traffic
    )
    assert series.malformed_lines == 1
    assert series.files >= 6

    threshold = float(parameter_default("ConfidenceThreshold"))
    data = plot_data(series, threshold)
    assert data.confidences == series.confidences
    assert data.below_threshold_share == pytest.approx(
        sum(1 for r in traffic if max(r.probabilities) < threshold) / len(traffic)
    )
    # 60 requests over 3 hours: 15-minute buckets of 5 requests.
    assert data.buckets.width == timedelta(minutes=15)
    assert data.buckets.counts == (5,) * 12
    first = traffic[:5]
    assert data.buckets.mean_confidence[0] == pytest.approx(
        sum(max(r.probabilities) for r in first) / 5
    )
    assert data.buckets.shares["bicycle"][0] == pytest.approx(
        sum(1 for p in series.predicted[:5] if p == "bicycle") / 5
    )

    out = tmp_path / "report.png"
    assert main(["report", "--capture", str(tmp_path / "capture"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(out) as image:
        assert image.size == (1210, 770)
    printed = capsys.readouterr().out
    assert f"60 requests from {series.files} file(s)" in printed
    assert f"below the threshold {threshold:g}" in printed
    assert "1 malformed line(s) skipped" in printed


def test_a_full_disk_keeps_the_earlier_picture_and_names_the_file(
    tmp_path: Path,
    traffic: list[Prediction],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A report drawn over an earlier one on a disk that fills: the earlier PNG stays
    whole (it was left cut off), and the error names the file."""
    record_traffic(LocalCaptureSink(tmp_path / "capture"), traffic)
    out = tmp_path / "reports" / "traffic.png"
    argv = ["report", "--capture", str(tmp_path / "capture"), "--out", str(out)]
    assert main(argv) == 0
    earlier = out.read_bytes()
    capsys.readouterr()

    fill_disk(monkeypatch, out.parent)
    assert main([*argv, "--threshold", "0.5"]) == 1
    assert out.read_bytes() == earlier
    assert [path.name for path in out.parent.iterdir()] == [out.name]  # no partial file
    error = capsys.readouterr().err
    assert "No space left on device" in error and str(out) in error


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on a free loopback port, reached through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield url
    finally:
        server.stop()


def test_s3_prefix_report_through_aws_endpoint_url(
    moto_server: str, tmp_path: Path, traffic: list[Prediction]
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="offline-stack")
    times = record_traffic(S3CaptureSink("offline-stack", "datacapture", s3), traffic[:20])
    s3.put_object(Bucket="offline-stack", Key="datacapture/README.txt", Body=b"not capture")

    prefix = f"s3://offline-stack/datacapture/{ENDPOINT}/"
    series = load_capture(prefix, LABELS)
    assert series.times == tuple(times)
    assert series.confidences == tuple(max(r.probabilities) for r in traffic[:20])

    out = tmp_path / "nested" / "s3.png"
    assert main(["report", "--capture", prefix, "--out", str(out), "--threshold", "0.8"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1210, 770)
    assert main(["report", "--capture", "s3://offline-stack/elsewhere/", "--out", str(out)]) == 2
    assert main(["report", "--capture", "s3://no-such-bucket/x/", "--out", str(out)]) == 2


@pytest.mark.parametrize(
    ("capture", "message"),
    [
        ("missing-folder", "does not exist"),
        ("empty-folder", "no capture files"),
        ("http://example.com/capture", "neither a local path nor an s3:// prefix"),
        ("only-bad", "no usable capture records"),
    ],
)
def test_clear_errors(
    tmp_path: Path, capture: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "only-bad").mkdir()
    (tmp_path / "only-bad" / "x.jsonl").write_text("nope\n{}\n")
    target = capture if "://" in capture else str(tmp_path / capture)
    assert main(["report", "--capture", target, "--out", str(tmp_path / "r.png")]) == 2
    assert message in capsys.readouterr().err


def test_requests_timed_at_the_end_of_the_calendar_are_named_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plot's buckets run past the last request's time: past year 9999, where no axis
    (and no Python date, over a span of centuries) holds them."""
    from tests.monitoring.conftest import capture_line

    line = json.loads(capture_line([0.9, 0.1], START))
    line["eventMetadata"]["inferenceTime"] = "9999-12-31T23:59:59Z"
    lines = [capture_line([0.9, 0.1], START), json.dumps(line)]
    (tmp_path / "far.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["report", "--capture", str(tmp_path), "--out", str(tmp_path / "r.png")]) == 2
    said = capsys.readouterr().err
    assert f"cannot draw requests from {START:%Y-%m-%d} to 9999-12-31" in said, said


def test_threshold_and_output_are_validated(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--capture", str(tmp_path), "--out", "r.png", "--threshold", "2"])
    assert main(["report", "--capture", str(tmp_path), "--out", str(tmp_path / "r.jpg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err


def test_bucket_width_follows_the_span(predictions: dict[str, list[Prediction]]) -> None:
    from scones.reports.capture_source import CaptureSeries

    rows = predictions["bicycle"][:3]
    for span, width in [
        (timedelta(minutes=20), timedelta(minutes=1)),
        (timedelta(minutes=30), timedelta(minutes=5)),
        (timedelta(hours=6), timedelta(minutes=30)),
        (timedelta(days=3), timedelta(hours=6)),
    ]:
        series = CaptureSeries(
            source="memory",
            labels=LABELS,
            times=(START, START + span / 2, START + span),
            confidences=tuple(max(r.probabilities) for r in rows),
            predicted=("bicycle",) * 3,
            files=1,
            malformed_lines=0,
        )
        buckets = bucket_series(series)
        assert buckets.width == width
        assert sum(buckets.counts) == 3


def test_render_rejects_nothing_to_draw(tmp_path: Path) -> None:
    from scones.reports.capture_source import CaptureSeries

    empty = CaptureSeries("memory", LABELS, (), (), (), 1, 0)
    with pytest.raises(ValueError, match="no requests"):
        render_capture_plot(empty, tmp_path / "x.png", 0.9)


def test_load_capture_of_a_non_s3_error_is_wrapped() -> None:
    with pytest.raises(CaptureSourceError, match="names no bucket"):
        load_capture("s3:///prefix", LABELS)


def below(rows: list[Prediction], threshold: float) -> float:
    return sum(1 for r in rows if max(r.probabilities) < threshold) / len(rows)


@pytest.fixture
def labels_read(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The labels each report read the capture with (the real loader still reads it)."""
    from scones.reports import capture_source

    seen: list[tuple[str, ...]] = []
    real = capture_source.load_capture

    def spy(source: str, labels: list[str], **kwargs: object) -> object:
        seen.append(tuple(labels))
        return real(source, labels, **kwargs)

    monkeypatch.setattr(capture_source, "load_capture", spy)
    return seen


@pytest.mark.slow
def test_report_of_the_offline_stack_draws_its_threshold(
    tmp_path: Path,
    traffic: list[Prediction],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`scones up --param ConfidenceThreshold=0.6` classifies at 0.6: the report of its
    capture draws 0.6, not template.yaml's default; --threshold still wins."""
    import os

    from scones.cli import stack_state
    from scones.offline.stack import OfflineStack, StackOptions

    assert parameter_default("ConfidenceThreshold") != "0.6"
    assert below(traffic, 0.6) != below(traffic, float(parameter_default("ConfidenceThreshold")))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(stack_state, "STATE_DIR", tmp_path / ".scones")
    monkeypatch.setattr(stack_state, "STATE_FILE", tmp_path / ".scones" / "stack.json")
    with OfflineStack(StackOptions(overrides={"ConfidenceThreshold": "0.6"})) as stack:
        stack_state.write_state(stack.endpoints, os.getpid(), stack.work_dir)
        bucket, prefix = stack.endpoints.bucket, stack.parameters["DataCapturePrefix"]
        s3 = stack.client("s3")
        record_traffic(S3CaptureSink(bucket, prefix, s3), traffic)
        out = tmp_path / "traffic.png"
        capture = f"s3://{bucket}/{prefix}"
        capsys.readouterr()
        assert main(["report", "--capture", capture, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"{below(traffic, 0.6):.1%} below the threshold 0.6" in printed, printed
        assert main(["report", "--capture", capture, "--out", str(out), "--threshold", "0.8"]) == 0
        assert f"{below(traffic, 0.8):.1%} below the threshold 0.8" in capsys.readouterr().out


ORDERS_TEMPLATE = {
    "Parameters": {
        name: {"Type": "String"}
        for name in ("ConfidenceThreshold", "ModelLabels", "DataCapturePrefix", "EndpointName")
    },
    "Resources": {
        "Images": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "orders-img"}}
    },
    "Outputs": {"ImageBucketName": {"Value": {"Ref": "Images"}}},
}


def test_report_of_a_deployed_stack_reads_its_capture_threshold_and_labels(
    moto_server: str,
    tmp_path: Path,
    traffic: list[Prediction],
    labels_read: list[tuple[str, ...]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    parameters = {
        "ConfidenceThreshold": "0.75",
        "ModelLabels": "motorcycle,bicycle",
        "DataCapturePrefix": "traffic/capture",
        "EndpointName": ENDPOINT,
    }
    assert all(parameter_default(k) != v for k, v in parameters.items() if k != "EndpointName")
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="orders",
        TemplateBody=json.dumps(ORDERS_TEMPLATE),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    s3 = boto3.client("s3", region_name="us-east-1")
    record_traffic(S3CaptureSink("orders-img", "traffic/capture", s3), traffic)
    s3.put_object(Bucket="orders-img", Key="traffic/capture/other-endpoint/x.jsonl", Body=b"{")
    out = tmp_path / "orders.png"
    capsys.readouterr()
    assert main(["report", "--stack", "orders", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    # The stack's endpoint only (the other endpoint's broken line is not read).
    assert f"wrote {out}: {len(traffic)} requests" in captured.out
    assert "malformed" not in captured.out
    assert f"{below(traffic, 0.75):.1%} below the threshold 0.75" in captured.out
    assert labels_read == [("motorcycle", "bicycle")]
    argv = ["report", "--stack", "orders", "--out", str(out), "--labels", "bicycle,motorcycle"]
    assert main([*argv, "--threshold", "0.8"]) == 0
    assert f"{below(traffic, 0.8):.1%} below the threshold 0.8" in capsys.readouterr().out
    assert labels_read[-1] == LABELS

    assert main(["report", "--stack", "no-such-stack", "--out", str(out)]) == 1
    assert "stack no-such-stack was not found" in capsys.readouterr().err
    assert main(["report", "--out", str(out)]) == 2
    assert "--capture is required" in capsys.readouterr().err


def test_a_file_among_the_captures_that_is_not_one_is_named_not_left_out(
    moto_server: str,
    tmp_path: Path,
    traffic: list[Prediction],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A compressed copy of an hour (``.jsonl.gz``) is not read, as the monitor does not
    read it; the report names it, where it used to draw the rest as the whole traffic."""
    folder = tmp_path / "capture"
    record_traffic(LocalCaptureSink(folder), traffic[:10])
    (hour,) = {path.parent for path in folder.rglob("*.jsonl")}
    packed = hour / "35-00-000-copy.jsonl.gz"
    packed.write_bytes(b"\x1f\x8b\x08\x00 a compressed hour")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="captures")
    for path in folder.rglob("*"):
        if path.is_file():
            s3.put_object(
                Bucket="captures", Key=path.relative_to(folder).as_posix(), Body=path.read_bytes()
            )
    s3_copy = f"s3://captures/{packed.relative_to(folder).as_posix()}"

    for source, named in ((str(folder), str(packed)), ("s3://captures/", s3_copy)):
        series = load_capture(source, LABELS)
        assert len(series) == 10
        assert [(w.code, w.source) for w in series.warnings] == [("NOT_A_CAPTURE_FILE", named)]

        out = tmp_path / "report.png"
        assert main(["report", "--capture", source, "--out", str(out), "--threshold", "0.8"]) == 0
        assert f"skipped {named}: not read: SageMaker's capture files end in .jsonl" in (
            capsys.readouterr().err
        )

    # As a command of its own (no logging set up): each skip once, with where it was.
    labels = ",".join(LABELS)
    options = ["--out", str(tmp_path / "cli.png"), "--threshold", "0.8", "--labels", labels]
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "report", "--capture", str(folder), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"skipped {packed}: not read: SageMaker's capture files end in .jsonl (a compressed"
        " or renamed copy must be restored as .jsonl to be counted)"
    ]

    # Nothing but such copies: the error says what is there.
    only = tmp_path / "only-copies"
    only.mkdir()
    (only / "a.jsonl.gz").write_bytes(packed.read_bytes())
    with pytest.raises(CaptureSourceError, match=r"holds 1 other file\(s\), e\.g\. .*a\.jsonl\.gz"):
        load_capture(str(only), LABELS)
    s3.delete_object(Bucket="captures", Key=packed.relative_to(folder).as_posix())
    with pytest.raises(CaptureSourceError, match="no capture files"):
        load_capture("s3://captures/elsewhere/", LABELS)
